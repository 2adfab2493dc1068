"""Running a recipe: options -> checked inputs -> resolved stages -> runs -> table.

    python -m recipes run NAME [--dry-run] [options] [-- ARGS for every stage]

Every stage is resolved from the real configs before the first one starts
(`recipes/plan.py`), so a typo in a fine-tune override fails now rather than
after pre-training. `--dry-run` prints each stage's plan as one JSON line and
stops: no data, no weights, no arrays, JAX kept on the CPU. A real run checks
its inputs with `data.sources`, then runs each stage as `python -m
PROGRAM.main ...`, skipping those whose workdir already holds results.json
(the programs themselves resume an unfinished workdir), and ends with the
results table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Sequence

from data import sources
from recipes import plan, registry

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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

IMAGENET_TFDS = "tfds:imagenet2012/train"
MISSING_IMAGENET = ("ImageNet location missing: pass --imagenet TFDS_DATA_DIR "
                    "(holding imagenet2012 prepared as array_record; or set "
                    "IMAGENET_DIR), or --imagenet-train/--imagenet-eval SOURCE; "
                    "see --help.")


class RecipeError(Exception):
  """A recipe option or input that is wrong; exit status 2, like a bad flag."""


def note(message: str) -> None:
  print(f"note: {message}", file=sys.stderr)


def help_text(name: str, recipe: registry.Recipe) -> str:
  script = f"recipes/{name}.sh"
  return recipe.about + "\n\n" + COMMON_HELP.format(
      inputs=INPUTS_HELP[recipe.inputs], workdir=recipe.workdir,
      stages=", ".join(s.name for s in recipe.stages), script=script)


# ----------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------
# Template values and inputs
# ----------------------------------------------------------------------------

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


@dataclasses.dataclass
class Inputs:
  """The --config.data.* (and init_from) overrides each kind of stage gets."""

  pretrain: list[str] = dataclasses.field(default_factory=list)
  imagenet: list[str] = dataclasses.field(default_factory=list)
  dataset: list[str] = dataclasses.field(default_factory=list)
  # (option, source) pairs a real run checks before any stage starts, per kind.
  checks: dict[str, list[tuple[str, str]]] = dataclasses.field(
      default_factory=dict)
  missing: dict[str, str] = dataclasses.field(default_factory=dict)


def _data_overrides(train: str, eval_source: str | None) -> list[str]:
  overrides = [f"--config.data.train={train}"]
  if eval_source is not None:
    overrides.append(f"--config.data.eval={eval_source}")
  return overrides


def transfer_pretrain_inputs(options, inputs: Inputs, dry_run: bool) -> None:
  """--pretrain-data / --pretrain-eval -> the pre-training stage's sources."""
  if not options.pretrain_data:
    inputs.missing[registry.PRETRAIN_DATA] = (
        "pre-training data missing: pass --pretrain-data DIR|SOURCE (or set "
        "PRETRAIN_DATA); see --help.")
    return
  train = sources.as_spec(options.pretrain_data, shard_split="train")
  is_shard_dir = train != options.pretrain_data
  if options.pretrain_eval == "none":
    eval_source = ""
  elif options.pretrain_eval:
    eval_source = sources.as_spec(options.pretrain_eval, shard_split="eval")
  elif is_shard_dir:
    eval_source = sources.as_spec(options.pretrain_data, shard_split="eval")
  else:
    eval_source = ""
    if not dry_run:
      note("no --pretrain-eval: pre-training runs without a held-out "
           "evaluation.")
  inputs.pretrain = _data_overrides(train, eval_source)
  inputs.checks[registry.PRETRAIN_DATA] = [("--pretrain-data", train)] + (
      [("--pretrain-eval", eval_source)] if eval_source else [])


def imagenet_inputs(options, inputs: Inputs) -> None:
  """--imagenet-train/--imagenet-eval, or --imagenet as the TFDS data_dir
  the configs' tfds:imagenet2012/... sources are found in."""
  if options.imagenet_train or options.imagenet_eval:
    if not (options.imagenet_train and options.imagenet_eval):
      raise RecipeError("give both --imagenet-train and --imagenet-eval (or "
                        "--imagenet TFDS_DIR).")
    train = sources.as_spec(options.imagenet_train)
    eval_source = sources.as_spec(options.imagenet_eval)
    inputs.imagenet = _data_overrides(train, eval_source)
    inputs.checks[registry.IMAGENET] = [("--imagenet-train", train),
                                        ("--imagenet-eval", eval_source)]
  elif options.imagenet:
    os.environ["TFDS_DATA_DIR"] = os.path.abspath(options.imagenet)
    inputs.checks[registry.IMAGENET] = [("--imagenet", IMAGENET_TFDS)]
  else:
    inputs.missing[registry.IMAGENET] = MISSING_IMAGENET


def dataset_inputs(options, inputs: Inputs, dry_run: bool) -> None:
  """--weights, --train, --eval -> the fine-tune's init_from and sources."""
  if options.weights:
    inputs.dataset.append(
        f"--config.init_from={os.path.abspath(options.weights)}")
  checks = []
  if options.train:
    train = sources.as_spec(options.train)
    inputs.dataset.append(f"--config.data.train={train}")
    checks.append(("--train", train))
  if options.eval:
    eval_source = sources.as_spec(options.eval)
    inputs.dataset.append(f"--config.data.eval={eval_source}")
    checks.append(("--eval", eval_source))
  elif not dry_run:
    note("no --eval: the run trains but reports no accuracy.")
  inputs.checks[registry.USER_DATA] = checks
  if not dry_run:
    if not options.weights:
      raise RecipeError("weights missing: pass --weights F0_haiku.npz (or set "
                        "WEIGHTS); see --help.")
    if not os.path.isfile(options.weights):
      raise RecipeError(f"--weights: no such file: {options.weights}")
    if not options.train:
      raise RecipeError("training data missing: pass --train DIR|SOURCE (or "
                        "set TRAIN_DATA); see --help.")


def read_inputs(recipe: registry.Recipe, options, dry_run: bool) -> Inputs:
  inputs = Inputs()
  if recipe.inputs == "transfer":
    transfer_pretrain_inputs(options, inputs, dry_run)
  if recipe.inputs in ("transfer", "imagenet"):
    imagenet_inputs(options, inputs)
  if recipe.inputs == "dataset":
    dataset_inputs(options, inputs, dry_run)
  return inputs


def check_inputs(inputs: Inputs, kinds: set[str]) -> None:
  """Fails now, not hours into a run, when a local input cannot exist."""
  for kind in (registry.PRETRAIN_DATA, registry.IMAGENET, registry.USER_DATA):
    if kind not in kinds:
      continue
    if kind in inputs.missing:
      raise RecipeError(inputs.missing[kind])
    for option, spec in inputs.checks.get(kind, []):
      try:
        sources.check_source_exists(spec)
      except FileNotFoundError as e:
        hint = ""
        if spec == IMAGENET_TFDS:
          hint = " (ImageNet needs its tars in DATA_DIR/downloads/manual first.)"
        elif kind == registry.PRETRAIN_DATA:
          hint = " Point the option at the shards (see --help)."
        raise RecipeError(f"{option}: {e}{hint}") from None
      except ValueError as e:
        raise RecipeError(f"{option}: {e}") from None


# ----------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------

def config_spec(stage: registry.Stage, values: dict[str, str]) -> str:
  """The stage's config file with its filled, non-empty `:args`."""
  args = [(k, v.format(**values)) for k, v in stage.config_args]
  args = [f"{k}={v}" for k, v in args if v]
  path = os.path.join(REPO_ROOT, stage.config)
  return f"{path}:{','.join(args)}" if args else path


def select_stages(recipe: registry.Recipe, selection: str
                  ) -> list[registry.Stage]:
  if not selection:
    return list(recipe.stages)
  known = [s.name for s in recipe.stages]
  wanted = [name for name in selection.split(",") if name]
  for name in wanted:
    if name not in known:
      raise RecipeError(f"--stages: unknown stage '{name}'; this recipe has: "
                        f"{' '.join(known)}.")
  if not wanted:
    raise RecipeError("--stages selected no stage.")
  return [s for s in recipe.stages if s.name in wanted]


def stage_argv(stage: registry.Stage, workdir: str, values: dict[str, str],
               inputs: Inputs, options, extra: list[str]) -> list[str]:
  """The program's argv: config, workdir, the recipe's overrides, then the
  user's (--pretrain-arg/--finetune-arg, then ARGS after --), so they win."""
  argv = [f"--config={config_spec(stage, values)}",
          f"--workdir={os.path.join(workdir, stage.name)}"]
  if stage.starts_from:
    argv.append(f"--config.init_from={os.path.join(workdir, stage.starts_from)}")
  argv += {registry.PRETRAIN_DATA: inputs.pretrain,
           registry.IMAGENET: inputs.imagenet,
           registry.USER_DATA: inputs.dataset}.get(stage.data, [])
  argv += (options.pretrain_arg if stage.program == "pretrain"
           else options.finetune_arg)
  argv += extra
  if options.distributed:
    argv.append("--distributed")
  return argv


def resolve_stages(recipe: registry.Recipe, options, extra: list[str],
                   inputs: Inputs, values: dict[str, str]) -> list[plan.Stage]:
  workdir = os.path.abspath(options.workdir or recipe.workdir.format(**values))
  resolved = []
  for stage in select_stages(recipe, options.stages):
    resolved.append(plan.parse_stage(
        stage.name, stage.program,
        stage_argv(stage, workdir, values, inputs, options, extra),
        paper=stage.paper.format(**values),
        needs=os.path.join(workdir, stage.starts_from) if stage.starts_from
        else ""))
  return resolved


# ----------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------

def is_first_host(options) -> bool:
  return options.host_id in (None, "0")


def wait_for_results(stage: plan.Stage, options) -> None:
  """Process 0 writes results.json before it exits; on the other hosts it may
  show up on the shared filesystem a little later."""
  patience = int(os.environ.get("RESULTS_WAIT_S", "300"))
  if options.host_id == "0" or (options.host_id is None and
                                not options.distributed):
    patience = 0
  path = os.path.join(stage.workdir, plan.results.RESULTS_FILE)
  waited = 0
  while not os.path.isfile(path):
    if waited >= patience:
      raise RecipeError(
          f"stage {stage.name} stopped before its last step ({path} was not "
          "written, e.g. after a preemption signal). Re-run the same command: "
          "it resumes from the last checkpoint.")
    time.sleep(5)
    waited += 5


def run_stage(stage: plan.Stage, options, python: str) -> None:
  results_file = os.path.join(stage.workdir, plan.results.RESULTS_FILE)
  print(f"==> [{stage.name}] {python} -m {stage.program}.main "
        f"{shlex.join(stage.program_argv)}", flush=True)
  if os.path.isfile(results_file):
    print(f"    finished earlier ({results_file}): skipped.", flush=True)
    return
  if stage.needs and not os.path.isfile(
      os.path.join(stage.needs, plan.results.RESULTS_FILE)):
    raise RecipeError(
        f"stage {stage.name} starts from {stage.needs}, which holds no finished "
        f"run ({stage.needs}/{plan.results.RESULTS_FILE} is missing): run that "
        "stage first.")
  env = dict(os.environ)
  # The programs and configs import from the repository: run from any directory.
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
  rc = subprocess.call([python, "-m", f"{stage.program}.main",
                        *stage.program_argv], env=env)
  if rc != 0:
    print(f"error: stage {stage.name} failed (exit {rc}). Fix the cause above "
          "and re-run the same command: finished stages are skipped and this "
          f"one resumes from its last checkpoint in {stage.workdir}.",
          file=sys.stderr)
    sys.exit(rc)
  wait_for_results(stage, options)


def run_recipe(name: str, argv: Sequence[str]) -> int:
  recipe = registry.RECIPES[name]
  options, extra = parse_options(recipe, argv)
  if options.help:
    print(help_text(name, recipe), end="")
    return 0
  setup_hosts(options)
  values = template_values(recipe, options)
  inputs = read_inputs(recipe, options, options.dry_run)
  # Every stage resolved (and its overrides checked) before anything runs.
  stages = resolve_stages(recipe, options, extra, inputs, values)
  if options.dry_run:
    for stage in stages:
      print(json.dumps(plan.resolve(stage)), flush=True)
    return 0
  by_name = {s.name: s for s in recipe.stages}
  check_inputs(inputs, {by_name[s.name].data for s in stages})
  for stage in stages:
    plan.resolve(stage)  # A stage that cannot be planned fails before any runs.
  python = os.environ.get("PYTHON", "python3")
  for stage in stages:
    run_stage(stage, options, python)
  if is_first_host(options):
    print()
    print(plan.results_table(stages))
  return 0
