"""Running a recipe: options -> inputs -> resolved stages -> runs -> table.

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

import json
import os
import shlex
import subprocess
import sys
import time
from typing import Sequence

from recipes import inputs as inputs_lib
from recipes import options as options_lib
from recipes import plan, registry
from recipes.options import RecipeError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
               inputs: inputs_lib.Inputs, options, extra: list[str]) -> list[str]:
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
                   inputs: inputs_lib.Inputs, values: dict[str, str]) -> list[plan.Stage]:
  workdir = os.path.abspath(os.path.expanduser(
      options.workdir or recipe.workdir.format(**values)))
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
  options, extra = options_lib.parse_options(recipe, argv)
  if options.help:
    print(options_lib.help_text(name, recipe), end="")
    return 0
  options_lib.setup_hosts(options)
  values = options_lib.template_values(recipe, options)
  inputs = inputs_lib.read_inputs(recipe, options, options.dry_run)
  # Every stage resolved (and its overrides checked) before anything runs.
  stages = resolve_stages(recipe, options, extra, inputs, values)
  if options.dry_run:
    for stage in stages:
      print(json.dumps(plan.resolve(stage)), flush=True)
    return 0
  by_name = {s.name: s for s in recipe.stages}
  inputs_lib.check_inputs(inputs, {by_name[s.name].data for s in stages})
  for stage in stages:
    plan.resolve(stage)  # A stage that cannot be planned fails before any runs.
  # The interpreter running the recipe (a venv's, say), unless PYTHON says.
  python = os.environ.get("PYTHON") or sys.executable
  for stage in stages:
    run_stage(stage, options, python)
  if is_first_host(options):
    print()
    print(plan.results_table(stages))
  return 0
