"""A recipe's inputs: the data (and weights) options -> the `--config.data.*`
overrides each kind of stage gets, and the checks a real run makes with
`data.sources` before any stage starts (shards that match, folders and
prepared TFDS datasets that exist)."""
from __future__ import annotations

import dataclasses
import os
import sys

from data import sources
from recipes import registry
from recipes.options import RecipeError

IMAGENET_TFDS = "tfds:imagenet2012/train"
MISSING_IMAGENET = ("ImageNet location missing: pass --imagenet TFDS_DATA_DIR "
                    "(holding imagenet2012 prepared as array_record; or set "
                    "IMAGENET_DIR), or --imagenet-train/--imagenet-eval SOURCE; "
                    "see --help.")


def note(message: str) -> None:
  print(f"note: {message}", file=sys.stderr)


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
    os.environ["TFDS_DATA_DIR"] = os.path.abspath(
        os.path.expanduser(options.imagenet))
    inputs.checks[registry.IMAGENET] = [("--imagenet", IMAGENET_TFDS)]
  else:
    inputs.missing[registry.IMAGENET] = MISSING_IMAGENET


def dataset_inputs(options, inputs: Inputs, dry_run: bool) -> None:
  """--weights, --train, --eval -> the fine-tune's init_from and sources."""
  if options.weights:
    weights = os.path.abspath(os.path.expanduser(options.weights))
    inputs.dataset.append(f"--config.init_from={weights}")
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
    if not os.path.isfile(os.path.expanduser(options.weights)):
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
