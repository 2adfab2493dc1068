"""A recipe stage resolved from the real configs, without data or arrays; and
the row of the results table it reached.

Each stage is given exactly the arguments its program (`pretrain.main` or
`finetune.main`) gets (`--config` with its `:args`, `--config.x=y`
overrides, `--workdir`, `--distributed`) and parses them with the programs'
own flag definitions (a locked `config_flags` config file), so a typo fails
here exactly as it would in the real run. `resolve` turns the config into one
JSON-able plan: the run length in steps (epochs through the config's nominal
`data.train_examples`, as `nfnet.train.setup.resolve_durations` does in the
real run), the peak learning rate (`nfnet.train.setup.peak_learning_rate`),
the regularisers, the augmentation (MixUp/CutMix, RandAugment layers and
magnitude, label smoothing), `init_from` and the exact program command.
Nothing is read but the config files: no data, no weights, no arrays.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Any, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from nfnet import variants
from nfnet.errors import UserError
from nfnet.train import cli, results, setup
from nfnet.weights import run_checkpoint

PROGRAMS = ("pretrain", "finetune")
# The environment the programs read besides their flags (multi-host setup, the
# TFDS data directory): shown in each stage's plan when set.
PROGRAM_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
               "TFDS_DATA_DIR")


class PlanError(UserError):
  """A stage that cannot be resolved; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of a recipe: a program, its locked config and its argv."""

  name: str
  program: str
  paper: str
  workdir: str
  config: ml_collections.ConfigDict
  program_argv: tuple[str, ...]
  # A workdir that must hold a finished run first ("" when none).
  needs: str = ""

  @property
  def command(self) -> str:
    return shlex.join(("python3", "-m", f"{self.program}.main",
                       *self.program_argv))


def parse_stage(name: str, program: str, program_argv: Sequence[str], *,
                paper: str = "", needs: str = "") -> Stage:
  """Parses one stage's program arguments with the programs' own flag
  definitions (a locked `config_flags` config file, so typos fail exactly as
  they would in the real run)."""
  if program not in PROGRAMS:
    raise PlanError(f"stage {name}: program must be one of {PROGRAMS}, got "
                    f"{program!r}.")
  argv = [f"{program}.main", *program_argv]
  values = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "Workdir.", flag_values=values)
  flags.DEFINE_bool("distributed", None, "Multi-host.", flag_values=values)
  config_flags.DEFINE_config_file("config", None, "Config file.",
                                  flag_values=values, lock_config=True,
                                  sys_argv=argv)
  where = f"stage {name}"
  try:
    leftover = values(argv)
  except (flags.Error, AttributeError, ValueError) as e:
    raise PlanError(f"{where}: {cli.flag_error_text(e)}") from None
  if len(leftover) > 1:
    raise PlanError(f"{where}: unexpected arguments {leftover[1:]}.")
  for flag in ("workdir", "config"):
    if values[flag].value is None:
      raise PlanError(f"{where}: --{flag} is required.")
  # 'path/to/config.py:variant=F4+' -> the file (config_flags splits the same way).
  config_file = config_flags.get_config_filename(values["config"]).split(":", 1)[0]
  if not os.path.isfile(config_file):
    raise PlanError(f"{where}: config file {config_file} does not exist.")
  config = values.config
  if not isinstance(config, ml_collections.ConfigDict):
    try:  # An unloadable config holds its error until it is used.
      config.to_dict()
    except Exception as e:  # pylint: disable=broad-except
      raise PlanError(f"{where}: {cli.flag_error_text(e)}") from None
    raise PlanError(f"{where}: {config_file} did not give a config.")
  # As the program will: a duration on the command line replaces the file's.
  cli.prefer_durations(config, config_flags.get_override_values(values["config"]))
  return Stage(name=name, program=program, paper=paper,
               workdir=values.workdir, config=config,
               program_argv=tuple(program_argv), needs=needs)


def dropout_rate(config: ml_collections.ConfigDict) -> float:
  """The head's dropout: the config's, else the variant's default (as the model does)."""
  if config.model.drop_rate is not None:
    return config.model.drop_rate
  return variants.get_variant(config.model.variant).drop_rate


def randaugment_magnitude(config: ml_collections.ConfigDict) -> int | None:
  """The magnitude RandAugment runs at (the variant's when the config leaves
  it unset, as the input pipeline does); None when RandAugment is off."""
  if not config.augment.randaugment_layers:
    return None
  if config.augment.randaugment_magnitude is not None:
    return config.augment.randaugment_magnitude
  return variants.get_variant(config.model.variant).randaugment_magnitude


def resolve(stage: Stage) -> dict[str, Any]:
  """The stage's run as the program will run it (without opening the data)."""
  config = stage.config
  train_examples = config.data.train_examples
  try:
    # Every value the program would refuse, refused now: a later stage's
    # typo must not wait for an earlier stage to finish.
    setup.check_run_config(config)
  except UserError as e:
    raise PlanError(f"stage {stage.name}: {e}") from None
  try:
    durations = setup.resolve_durations(config, train_examples or 0)
  except UserError as e:
    hint = ""
    if not train_examples and (config.total_epochs is not None
                               or config.warmup_epochs is not None):
      hint = (" The plan needs the training set's nominal size to turn epochs "
              "into steps: set --config.data.train_examples=N.")
    raise PlanError(f"stage {stage.name}: {e}{hint}") from None
  epochs = (round(durations.total_steps / durations.steps_per_epoch, 2)
            if train_examples else None)
  return {
      "stage": stage.name,
      "program": stage.program,
      "variant": config.model.variant,
      "resolution": config.resolution,
      "eval_resolution": config.eval_resolution or config.resolution,
      "batch_size": config.batch_size,
      "micro_batches": config.micro_batches,
      "total_steps": durations.total_steps,
      "warmup_steps": durations.warmup_steps,
      "epochs": epochs,
      "train_examples": train_examples,
      "learning_rate": setup.peak_learning_rate(config),
      "momentum": config.momentum,
      "agc_clipping": config.agc_clipping,
      "weight_decay": config.weight_decay,
      "sam_rho": config.sam_rho,
      "sam_ascent_fraction": config.sam_ascent_fraction if config.sam_rho else None,
      "ema_decay": config.ema_decay,
      "dropout": dropout_rate(config),
      "stochdepth_rate": config.model.stochdepth_rate,
      "loss": config.loss,
      "mixup_cutmix": config.augment.mixup_cutmix,
      "randaugment_layers": config.augment.randaugment_layers,
      "randaugment_magnitude": randaugment_magnitude(config),
      "label_smoothing": config.augment.label_smoothing,
      "init_from": config.init_from,
      "train": config.data.train,
      "eval": config.data.eval,
      "workdir": stage.workdir,
      "env": {k: os.environ[k] for k in PROGRAM_ENV if os.environ.get(k)},
      "command": stage.command,
  }


# ----------------------------------------------------------------------------
# Results table
# ----------------------------------------------------------------------------

def _percent(value) -> str:
  return "-" if value is None else f"{100 * value:.2f}"


def recorded_run(workdir: str) -> tuple[str, int] | None:
  """(variant, eval resolution) as the workdir's latest checkpoint records
  them, or None before the first checkpoint."""
  try:
    step_dir = run_checkpoint.find_checkpoint_step_dir(workdir)
    saved = run_checkpoint.read_checkpoint_config(step_dir)
  except (FileNotFoundError, NotADirectoryError):
    return None
  config = saved["config"]
  return (saved["model"]["variant"],
          config.get("eval_resolution") or config["resolution"])


def results_row(stage: Stage) -> dict[str, str]:
  """One table row: what the stage's results.json says (or that it has none).

  Variant and resolution are the ones the run recorded in its checkpoint
  (they may differ from today's arguments); the config's before any run.
  """
  plan = resolve(stage)
  variant, resolution = (recorded_run(stage.workdir) or
                         (plan["variant"], plan["eval_resolution"]))
  finished = results.read_results(stage.workdir)
  if not finished:
    status = "not finished"
  else:
    status = f"step {finished.get('step', '?')}"
  return {
      "stage": stage.name,
      "variant": variant,
      "res": str(resolution),
      "status": status,
      "top-1": _percent(finished.get("eval/top1")),
      "top-1 EMA": _percent(finished.get("eval_ema/top1")),
      "paper": stage.paper or "-",
  }


def results_table(stages: Sequence[Stage]) -> str:
  """The recipe's closing table: every stage's final top-1, raw and EMA."""
  return ("Top-1 (%) at the end of each stage, raw and EMA weights:\n" +
          results.format_table([results_row(stage) for stage in stages]))
