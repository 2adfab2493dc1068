"""The programs' command line: flags, distributed start-up, clear errors.

    python -m pretrain.main --config CONFIG[:ARGS] --workdir DIR [--config.x=y ...]
    python -m finetune.main ...   (the same flags)
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from absl import app, flags, logging
from ml_collections import config_flags

from data.errors import DataError
from nfnet.errors import UserError
from nfnet.train import parallel

FLAGS = flags.FLAGS


def define_program_flags() -> None:
  """--config (locked: typos fail), --workdir, --distributed; called by the
  programs' `__main__` so that importing them defines no flags."""
  config_flags.DEFINE_config_file(
      "config", None, "Config file, optionally with ':args'.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Where checkpoints and TensorBoard "
                      "events go; re-use it to resume.")
  flags.DEFINE_bool("distributed", None, "Call jax.distributed.initialize() "
                    "(default: when JAX_COORDINATOR_ADDRESS is set).")
  flags.mark_flags_as_required(["config", "workdir"])


# Errors a user can cause: print one clear line, no traceback soup. data/
# cannot know nfnet's UserError, so its own DataError is listed beside it.
USER_ERRORS = (UserError, DataError, FileNotFoundError)


def run_with_clear_errors(fn: Callable, *args,
                          extra_errors: tuple[type[BaseException], ...] = ()
                          ) -> Any:
  """fn(*args); a user error becomes one `error: ...` line and exit status 1
  (its traceback stays available at debug level)."""
  try:
    return fn(*args)
  except USER_ERRORS + extra_errors as e:
    logging.debug("Traceback of the error below:", exc_info=True)
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


def run_program(train: Callable[[Any, str], dict]) -> None:
  """The `__main__` of a training program: `train(FLAGS.config, FLAGS.workdir)`."""

  def main(argv):
    del argv
    # metrics brings in clu's TensorBoard writer (and TensorFlow, 3 s): only
    # for a program that runs, not for the recipes' plans and dry runs.
    from nfnet.train import metrics  # pylint: disable=import-outside-toplevel
    metrics.quiet_library_logs()
    parallel.maybe_initialize_distributed(FLAGS.distributed)
    run_with_clear_errors(lambda: train(_loaded_config(), FLAGS.workdir))

  define_program_flags()
  app.run(main, flags_parser=_parse_flags)


# A run's length and warm-up are each given one way; a command-line value
# replaces the config file's, whichever way that gave it.
DURATION_GROUPS = (("total_steps", "total_epochs", "total_examples"),
                   ("warmup_steps", "warmup_epochs"))


def _loaded_config():
  """FLAGS.config: a config file that failed to load (a mistyped path) only
  raises, an OSError, when the config is first read. `--config.total_steps`
  unsets the file's `total_epochs` (and likewise for each duration)."""
  config = FLAGS.config
  try:
    config.to_dict  # pylint: disable=pointless-statement
  except OSError as e:
    raise UserError(str(e).strip()) from None
  prefer_durations(config, config_flags.get_override_values(FLAGS["config"]))
  return config


def prefer_durations(config, overridden: dict) -> None:
  """Unsets the config's other ways of giving a duration that `overridden`
  (the command line's `--config.*` values) gives."""
  for group in DURATION_GROUPS:
    given = [key for key in group if key in overridden]
    for key in group:
      if given and key not in given:
        config[key] = None


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; a bad flag, a mistyped `--config.*` key, or a user
  error raised while the config file is read (`small.py:clases=6`) ends with
  one `error: ...` line."""
  try:
    return FLAGS(argv)
  except (flags.Error, AttributeError, KeyError) as e:
    print(f"error: {flag_error_text(e)}\nPass --helpfull to see the flags.",
          file=sys.stderr, flush=True)
    sys.exit(1)


def flag_error_text(error: BaseException) -> str:
  """What went wrong in parsing a config flag, without the wrapping:
  config_flags re-raises a config file's own error inside a traceback text,
  and a locked config's unknown key arrives as a KeyError's repr."""
  chain = []
  while error is not None:
    chain.append(error)
    error = error.__context__
  user_errors = [cause for cause in chain if isinstance(cause, USER_ERRORS)]
  if user_errors:
    return str(user_errors[-1])  # the config's own, innermost
  key_errors = [cause for cause in chain if isinstance(cause, KeyError)]
  if key_errors and key_errors[0].args:  # the outermost says "did you mean"
    key, _, hint = str(key_errors[0].args[0]).partition("\n")
    return f"the config has no key {key} (configs are locked). {hint}".strip()
  lines = [line.strip() for line in str(chain[0]).splitlines() if line.strip()]
  return lines[-1] if lines else type(chain[0]).__name__
