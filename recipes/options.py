"""A recipe's command line: its options (flags, or environment variables),
the multi-host environment they set, and the values its stages' `{...}`
fields are filled with; and its --help text."""
from __future__ import annotations

import argparse
import os
import re
from typing import Sequence

from recipes import registry


class RecipeError(Exception):
  """A recipe option or input that is wrong; exit status 2, like a bad flag."""


COMMON_HELP = """\
Inputs (flag, or environment variable):
{inputs}
  --workdir DIR           WORKDIR  (default: ./{workdir})
Options:
  --dry-run       print each stage's resolved plan as one JSON line (from the
                  real configs, in-process); reads no data and no weights and
                  keeps JAX on the CPU
  --stages LIST   comma-separated subset of the stages: {stages}
  --pretrain-arg ARG, --finetune-arg ARG  extra program flag for those
                  stages, e.g. --pretrain-arg=--config.micro_batches=2;
                  ARGS after -- go to every stage
  -h, --help      this text

Re-running is safe: a stage whose workdir holds results.json is skipped, an
unfinished one resumes from its last checkpoint (the programs do that).

Multi-host: run the SAME command on every host at once; only the host id
differs. The workdir must be one shared filesystem path (NFS, ...).
  host 0:  {script} ... --coordinator 10.0.0.1:1234 --hosts 4 --host-id 0
  host 3:  {script} ... --coordinator 10.0.0.1:1234 --hosts 4 --host-id 3
(--coordinator/--hosts/--host-id are exported as JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID, which the programs pass to
jax.distributed.initialize(); setting those variables works too.) On TPU
pods and SLURM, where JAX finds the cluster itself, pass --distributed
instead. batch_size is global: each host loads batch / hosts images per step.
"""

INPUTS_HELP = {
    "transfer": """\
  --pretrain-data DIR|SOURCE  PRETRAIN_DATA  a directory of shards
      (DIR/train-*.array_record, DIR/eval-*.array_record, as written by
      python -m data.convert) or a source string (arrayrecord:GLOB,
      tfrecord:GLOB, tfds:NAME/SPLIT)
  --pretrain-eval DIR|SOURCE|none  PRETRAIN_EVAL  held-out pre-training split
  --imagenet TFDS_DIR     IMAGENET_DIR (or TFDS_DATA_DIR)  TFDS data_dir with
      imagenet2012 prepared as array_record (tfds build imagenet2012
      --file_format=array_record)
  --imagenet-train SOURCE, --imagenet-eval SOURCE  IMAGENET_TRAIN/_EVAL
      instead of --imagenet (a plain directory means folder:DIR)""",
    "imagenet": """\
  --imagenet TFDS_DIR     IMAGENET_DIR (or TFDS_DATA_DIR)  TFDS data_dir with
      imagenet2012 prepared as array_record
  --imagenet-train SOURCE, --imagenet-eval SOURCE  IMAGENET_TRAIN/_EVAL
      instead of --imagenet (a plain directory means folder:DIR)""",
    "dataset": """\
  --weights FILE     WEIGHTS     DeepMind *_haiku.npz (a restricted unpickler
                     reads it: numpy arrays only)
  --train DIR|SOURCE TRAIN_DATA  class folders (DIR/<class>/*.jpg) or a source
                     string (arrayrecord:GLOB, tfrecord:GLOB, tfds:NAME/SPLIT)
  --eval DIR|SOURCE  EVAL_DATA   held-out split, same forms (without it the
                     run reports no accuracy)""",
}

def help_text(name: str, recipe: registry.Recipe) -> str:
  script = f"recipes/{name}.sh"
  return recipe.about + "\n\n" + COMMON_HELP.format(
      inputs=INPUTS_HELP[recipe.inputs], workdir=recipe.workdir,
      stages=", ".join(s.name for s in recipe.stages), script=script)


def _env(name: str) -> str | None:
  return os.environ.get(name) or None


def build_parser(recipe: registry.Recipe) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  add = parser.add_argument
  add("-h", "--help", action="store_true")
  add("--dry-run", action="store_true")
  add("--workdir", default=_env("WORKDIR"))
  add("--stages", default="")
  add("--coordinator", default=_env("JAX_COORDINATOR_ADDRESS"))
  add("--hosts", default=_env("JAX_NUM_PROCESSES"))
  add("--host-id", default=_env("JAX_PROCESS_ID"))
  add("--distributed", action="store_true")
  add("--pretrain-arg", action="append", default=[])
  add("--finetune-arg", action="append", default=[])
  if recipe.inputs in ("transfer", "imagenet"):
    add("--imagenet", default=_env("IMAGENET_DIR") or _env("TFDS_DATA_DIR"))
    add("--imagenet-train", default=_env("IMAGENET_TRAIN"))
    add("--imagenet-eval", default=_env("IMAGENET_EVAL"))
  if recipe.inputs == "transfer":
    add("--pretrain-data", default=_env("PRETRAIN_DATA"))
    add("--pretrain-eval", default=_env("PRETRAIN_EVAL"))
  if recipe.inputs == "dataset":
    add("--weights", default=_env("WEIGHTS"))
    add("--train", default=_env("TRAIN_DATA"))
    add("--eval", default=_env("EVAL_DATA"))
  if recipe.variant_option:
    add("--variant", default=None if recipe.inputs == "dataset" else
        _env("VARIANT"))
  if recipe.epochs_option:
    add("--epochs", default=_env("EPOCHS"))
  if recipe.size_options:
    add("--res")
    add("--steps")
    add("--batch")
  return parser


def parse_options(recipe: registry.Recipe, argv: Sequence[str]):
  """(options, ARGS after --). Unknown options are errors naming --help."""
  argv = list(argv)
  extra = []
  if "--" in argv:
    extra = argv[argv.index("--") + 1:]
    argv = argv[:argv.index("--")]
  # `--pretrain-arg --config.x=y`: the value is itself a flag, which argparse
  # would take for an option; join it as `--pretrain-arg=--config.x=y`.
  joined = []
  for arg in argv:
    if joined and joined[-1] in ("--pretrain-arg", "--finetune-arg"):
      joined[-1] = f"{joined[-1]}={arg}"
    else:
      joined.append(arg)
  argv = joined
  parser = build_parser(recipe)
  try:
    options, unknown = parser.parse_known_args(argv)
  except SystemExit:  # argparse already printed what was wrong.
    raise RecipeError("see --help.") from None
  if unknown:
    raise RecipeError(f"unknown option {unknown[0]}; see --help.")
  return options, extra


def setup_hosts(options) -> None:
  """The environment the programs read for a multi-host run, checked."""
  if options.coordinator:
    if not (options.hosts and options.host_id is not None):
      raise RecipeError(
          "--coordinator needs --hosts N and --host-id I (or JAX_NUM_PROCESSES "
          "and JAX_PROCESS_ID): the same command on every host, each with its "
          "own --host-id 0..N-1.")
  elif (options.hosts or options.host_id is not None) and not options.distributed:
    raise RecipeError(
        "--hosts/--host-id need --coordinator HOST:PORT (process 0's address), "
        "or --distributed where JAX finds the cluster itself (TPU pods, SLURM).")
  if options.hosts:
    if not options.hosts.isdigit() or int(options.hosts) < 1:
      raise RecipeError(f"--hosts must be a positive integer, got "
                        f"'{options.hosts}'.")
    os.environ["JAX_NUM_PROCESSES"] = options.hosts
  if options.host_id is not None:
    if not options.host_id.isdigit():
      raise RecipeError(f"--host-id must be an integer, got '{options.host_id}'.")
    if options.hosts and int(options.host_id) >= int(options.hosts):
      raise RecipeError(
          f"--host-id {options.host_id} is out of range for --hosts "
          f"{options.hosts} (0..{int(options.hosts) - 1}).")
    os.environ["JAX_PROCESS_ID"] = options.host_id
  if options.coordinator:
    os.environ["JAX_COORDINATOR_ADDRESS"] = options.coordinator


def variant_from_file_name(path: str) -> str:
  """F3_haiku.npz -> F3 (DeepMind's release names); '' when the name says nothing."""
  match = re.fullmatch(r"[Ff]([0-7])(\+?)_haiku\.npz", os.path.basename(path))
  return f"F{match.group(1)}{match.group(2)}" if match else ""


def template_values(recipe: registry.Recipe, options) -> dict[str, str]:
  """What the recipe's `{...}` fields are filled with."""
  variant = getattr(options, "variant", None) or recipe.variant
  paper = ""
  if recipe.inputs == "dataset" and not variant and options.weights:
    variant = variant_from_file_name(options.weights)
    if not variant:
      raise RecipeError(
          f"cannot tell the variant from the file name "
          f"{os.path.basename(options.weights)} (DeepMind's are F0_haiku.npz .. "
          "F6_haiku.npz): pass --variant F0..F6; the program checks it against "
          "the weights.")
  if recipe.variants is not None:
    variant = variant.upper()
    if variant not in recipe.variants:
      raise RecipeError(
          f"--variant must be one of F0..F6 (the variants the paper trained on "
          f"ImageNet), got '{variant}'.")
    paper = recipe.variants[variant]
  return {"variant": variant, "variant_or_f0": variant or "F0", "paper": paper,
          "epochs": getattr(options, "epochs", None) or "",
          "res": getattr(options, "res", None) or "",
          "steps": getattr(options, "steps", None) or "",
          "batch": getattr(options, "batch", None) or ""}
