r"""What a recipe's stages will run, resolved from the real configs; and what they reached.

    python -m nfnet.plan --stage=pretrain --program=pretrain \
        --config=pretrain/configs/jft.py:variant=F4+ --workdir=/ckpt/f4plus/pretrain \
        [--config.x=y ...] [--next --stage=finetune_384 --program=finetune ...]

Each stage is given exactly the arguments its program (`pretrain.main` or
`finetune.main`) would get (`--config` with its `:args`, `--config.x=y`
overrides, `--workdir`, `--distributed`), plus `--stage`, `--program` and an
optional `--paper` (the paper's number, shown in the results table); stages
are separated by `--next`. For every stage one JSON object is printed: the
config's run length resolved to steps (epochs through the config's nominal
`data.train_examples`, as `nfnet.builders.resolve_durations` does in the real
run), the peak learning rate (`nfnet.builders.peak_learning_rate`), the
regularisers, the augmentation (MixUp/CutMix, RandAugment layers and
magnitude, label smoothing), `init_from` and the exact program command. Nothing is read but
the config files: no data, no weights, no arrays, and JAX is kept on the CPU
so no accelerator is touched.

    python -m nfnet.plan --results <the same stage arguments>

prints the results table instead: per stage the variant, resolution and the
final top-1 of the raw and EMA weights from WORKDIR/results.json (written by
each finished run), next to the paper's number.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from typing import Any, Sequence

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from nfnet import builders, checkpoints, variants

STAGE_SEPARATOR = "--next"
RESULTS_MODE = "--results"
PROGRAMS = ("pretrain", "finetune")
# Flags that only the plan reads; everything else is the program's own argv.
PLAN_ONLY_FLAGS = ("stage", "program", "paper")
# The environment the programs read besides their flags (multi-host setup, the
# TFDS data directory): shown in each stage's plan when set.
PROGRAM_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
               "TFDS_DATA_DIR")


class PlanError(ValueError):
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

  @property
  def command(self) -> str:
    return shlex.join(("python3", "-m", f"{self.program}.main",
                       *self.program_argv))


def _is_plan_only(arg: str) -> bool:
  return any(arg == f"--{name}" or arg.startswith(f"--{name}=")
             for name in PLAN_ONLY_FLAGS)


def _last_line(error: BaseException) -> str:
  """ml_collections wraps a config's own error in a traceback: keep its end."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def parse_stage(argv: Sequence[str]) -> Stage:
  """Parses one stage's arguments with the programs' own flag definitions
  (a locked `config_flags` config file, so typos fail exactly as they would
  in the real run)."""
  argv = ["plan", *argv]
  values = flags.FlagValues()
  flags.DEFINE_string("stage", None, "Stage name.", flag_values=values)
  flags.DEFINE_enum("program", None, PROGRAMS, "Program.", flag_values=values)
  flags.DEFINE_string("paper", "", "The paper's result.", flag_values=values)
  flags.DEFINE_string("workdir", None, "Workdir.", flag_values=values)
  flags.DEFINE_bool("distributed", None, "Multi-host.", flag_values=values)
  config_flags.DEFINE_config_file("config", None, "Config file.",
                                  flag_values=values, lock_config=True,
                                  sys_argv=argv)
  where = "stage " + next((a.partition("=")[2] for a in argv
                           if a.startswith("--stage=")), "?")
  try:
    leftover = values(argv)
  except (flags.Error, AttributeError, ValueError) as e:
    raise PlanError(f"{where}: {_last_line(e)}") from None
  if len(leftover) > 1:
    raise PlanError(f"{where}: unexpected arguments {leftover[1:]}.")
  for name in ("stage", "program", "workdir", "config"):
    if values[name].value is None:
      raise PlanError(f"{where}: --{name} is required.")
  # 'path/to/config.py:variant=F4+' -> the file (config_flags splits the same way).
  config_file = config_flags.get_config_filename(values["config"]).split(":", 1)[0]
  if not os.path.isfile(config_file):
    raise PlanError(f"{where}: config file {config_file} does not exist.")
  config = values.config
  if not isinstance(config, ml_collections.ConfigDict):
    try:  # An unloadable config holds its error until it is used.
      config.to_dict()
    except Exception as e:  # pylint: disable=broad-except
      raise PlanError(f"{where}: {_last_line(e)}") from None
    raise PlanError(f"{where}: {config_file} did not give a config.")
  return Stage(name=values.stage, program=values.program, paper=values.paper,
               workdir=values.workdir, config=config,
               program_argv=tuple(a for a in argv[1:] if not _is_plan_only(a)))


def split_stages(argv: Sequence[str]) -> list[list[str]]:
  """['--stage=a', ..., '--next', '--stage=b', ...] -> one list per stage."""
  stages, current = [], []
  for arg in argv:
    if arg == STAGE_SEPARATOR:
      stages.append(current)
      current = []
    else:
      current.append(arg)
  stages.append(current)
  return [s for s in stages if s]


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
    durations = builders.resolve_durations(config, train_examples or 0)
  except ValueError as e:
    hint = ""
    if not train_examples:
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
      "learning_rate": builders.peak_learning_rate(config),
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
    step_dir = checkpoints.find_checkpoint_step_dir(workdir)
    saved = checkpoints.read_checkpoint_config(step_dir)
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
  results = builders.read_results(stage.workdir)
  if not results:
    status = "not finished"
  else:
    status = f"step {results.get('step', '?')}"
  return {
      "stage": stage.name,
      "variant": variant,
      "res": str(resolution),
      "status": status,
      "top-1": _percent(results.get("eval/top1")),
      "top-1 EMA": _percent(results.get("eval_ema/top1")),
      "paper": stage.paper or "-",
  }


def format_table(rows: Sequence[dict[str, str]]) -> str:
  """Rows of equal keys -> an aligned plain-text table (top-1 in %)."""
  if not rows:
    return ""
  columns = list(rows[0])
  widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
  lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
  lines.append("  ".join("-" * widths[c] for c in columns))
  lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in rows]
  return "\n".join(line.rstrip() for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(__doc__)
    return 0 if argv else 1
  # A plan never computes; make sure it cannot claim an accelerator either.
  jax.config.update("jax_platforms", "cpu")
  show_results = RESULTS_MODE in argv
  argv = [a for a in argv if a != RESULTS_MODE]
  try:
    stages = [parse_stage(group) for group in split_stages(argv)]
    if not stages:
      raise PlanError("no stage given; see python -m nfnet.plan --help.")
    if show_results:
      print("Top-1 (%) at the end of each stage, raw and EMA weights:")
      print(format_table([results_row(stage) for stage in stages]))
    else:
      for stage in stages:
        print(json.dumps(resolve(stage)), flush=True)
  except PlanError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
