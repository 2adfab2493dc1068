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
from nfnet.train import metrics, parallel

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
    metrics.quiet_library_logs()
    parallel.maybe_initialize_distributed(FLAGS.distributed)
    run_with_clear_errors(train, FLAGS.config, FLAGS.workdir)

  define_program_flags()
  app.run(main)
