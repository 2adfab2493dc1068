"""Orbax checkpoints that bridge the stages: writing them during a run,
resuming from them, and fitting `init_from`'s weights to a new model.

A checkpoint step holds three items (`nfnet/weights/run_checkpoint.py` reads
them back for inference):
  state   the TrainState (params, optimizer state, EMA, step)
  data    each process's grain iterator state (one JSON file per process)
  config  the resolved run config, with the model description under "model"
so a checkpoint alone says what model it holds.

Start-up precedence (docs/design.md; `nfnet/train/state.py`): resume the
latest checkpoint in the workdir; else initialise from `init_from` (our
checkpoint, a DeepMind `*_haiku.npz`, a timm state dict) with the head
re-initialised when the class count differs; else from scratch.
"""
from __future__ import annotations

import os
from typing import Any

import grain
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from nfnet import convert
from nfnet.errors import UserError
from nfnet.model import CLASSIFIER
from nfnet.weights import run_checkpoint
from nfnet.weights.run_checkpoint import CHECKPOINT_DIRNAME, CONFIG, DATA, STATE

class CheckpointMismatchError(UserError):
  """Weights that do not fit the model: lists every offending parameter."""


def make_manager(workdir: str, *, save_every_steps: int, keep: int = 3,
                 keep_every_steps: int | None = None,
                 async_save: bool = True) -> ocp.CheckpointManager:
  """A manager that saves every `save_every_steps` steps, when orbax sees a
  preemption notice, and when forced (the last step, a signal); it keeps the
  latest `keep` steps plus every `keep_every_steps`-th."""
  # FixedIntervalPolicy saves exactly on multiples of the interval (orbax's
  # default interval policy also saves the first step of a run).
  save_policy = ocp.checkpoint_managers.AnySavePolicy([
      ocp.checkpoint_managers.FixedIntervalPolicy(save_every_steps),
      ocp.checkpoint_managers.PreemptionCheckpointingPolicy()])
  keep_policies = [ocp.checkpoint_managers.LatestN(keep)]
  if keep_every_steps:
    keep_policies.append(ocp.checkpoint_managers.EveryNSteps(keep_every_steps))
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=save_policy,
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
          keep_policies),
      create=True, enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(
      os.path.join(run_checkpoint.absolute_path(workdir), CHECKPOINT_DIRNAME),
      options=options, item_names=(STATE, DATA, CONFIG))


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         data_iterator: Any, config: dict, *, force: bool = False) -> bool:
  """Saves all three items if the manager's policy (or `force`) says so."""
  args = {STATE: ocp.args.StandardSave(state), CONFIG: ocp.args.JsonSave(config)}
  if data_iterator is not None:
    args[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
  return manager.save(step, args=ocp.args.Composite(**args), force=force)


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any,
                   data_iterator: Any) -> tuple[Any, int] | None:
  """(state, step) of the latest checkpoint, restoring the iterator in place."""
  step = manager.latest_step()
  if step is None:
    return None
  args = {STATE: ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    args[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**args))
  return restored[STATE], step


def _flat(tree) -> dict[str, Any]:
  return traverse_util.flatten_dict(tree, sep="/")


def merge_pretrained(init_params: Any, loaded_params: Any, *,
                     reinit_head: bool = False) -> tuple[Any, list[str]]:
  """Takes every weight from `loaded_params` except the classifier when its
  shape differs from the new model's (or `reinit_head`).

  Returns (params, notes). Any other missing, unexpected or mis-shaped weight
  raises one CheckpointMismatchError listing them all.
  """
  init, loaded = _flat(init_params), _flat(loaded_params)
  is_head = lambda key: key.split("/")[0] == CLASSIFIER
  head_shapes_differ = any(
      np.shape(loaded.get(k)) != np.shape(v) for k, v in init.items()
      if is_head(k))
  notes = []
  keep_new_head = reinit_head or head_shapes_differ
  if keep_new_head:
    notes.append("classifier re-initialised" + (
        " (class count differs)" if head_shapes_differ else " (asked)"))
  problems = []
  merged = {}
  for key, value in init.items():
    if keep_new_head and is_head(key):
      merged[key] = value
    elif key not in loaded:
      problems.append(f"missing from checkpoint: {key} {tuple(np.shape(value))}")
    elif np.shape(loaded[key]) != np.shape(value):
      problems.append(f"wrong shape: {key} checkpoint "
                      f"{tuple(np.shape(loaded[key]))} vs model "
                      f"{tuple(np.shape(value))}")
    else:
      merged[key] = np.asarray(loaded[key], np.float32)
  for key in loaded:
    if key not in init and not (keep_new_head and is_head(key)):
      problems.append(f"unexpected in checkpoint: {key} "
                      f"{tuple(np.shape(loaded[key]))}")
  if problems:
    raise CheckpointMismatchError(
        f"{len(problems)} parameter(s) do not fit the model:\n  " +
        "\n  ".join(problems) +
        "\nCheck that the config's model matches the checkpoint's "
        "(variant, width, depths).")
  return traverse_util.unflatten_dict(merged, sep="/"), notes


def model_description(model) -> dict:
  """The NFNet constructor fields, as stored in every checkpoint's config."""
  return convert.model_to_description(model)


# Fields that change what the weights compute; the run's model must agree on
# them with the weights it starts from. (num_classes is handled by head
# surgery; dropout, stochastic depth, dtype, remat, conv_impl are free.)
# Widths and depths are compared as resolved per stage, so `depths=None` and
# the variant's own depths, or width multipliers that round to the same
# channels, are the same model.
ARCHITECTURE_FIELDS = ("variant", "stage_widths", "stage_depths", "group_size",
                       "activation", "alpha", "se_ratio", "use_two_convs",
                       "final_conv_mult", "ws_eps", "ws_eps_mode",
                       "stem_stride", "stem_width")


def _architecture(model) -> dict:
  description = model_description(model)
  # Variant names are case-insensitive ('f0' is F0): compare the table's name.
  description["variant"] = model.spec.name
  description["activation"] = model.activation or model.spec.activation
  description["stage_widths"] = list(model.stage_widths())
  description["stage_depths"] = list(model.stage_depths())
  return {k: description[k] for k in ARCHITECTURE_FIELDS}


def check_same_architecture(source_model, model, what: str = "init_from") -> None:
  """Raises one error naming every architecture field that differs."""
  source, target = _architecture(source_model), _architecture(model)
  differing = [f"{k}: weights {source[k]!r}, config {target[k]!r}"
               for k in ARCHITECTURE_FIELDS if source[k] != target[k]]
  if differing:
    raise CheckpointMismatchError(
        f"{what} holds a different model than the config asks for:\n  " +
        "\n  ".join(differing) + "\nSet the config's model fields to the "
        "weights' values (e.g. --config.model.variant=...).")


def check_same_head(saved_num_classes: int, model, what: str) -> None:
  """Resuming needs the same head (init_from, unlike resuming, replaces it)."""
  if saved_num_classes != model.num_classes:
    raise CheckpointMismatchError(
        f"{what} holds a {saved_num_classes}-class model; this run has "
        f"{model.num_classes} classes. To start from those weights with a new "
        "head, give a new workdir and --config.init_from=<that workdir>.")


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
  """`key: saved -> current` for every config value that differs (lists and
  tuples compare by their items: the saved config went through JSON)."""
  differences = []
  for key in sorted(set(saved) | set(current)):
    old, new = saved.get(key), current.get(key)
    if isinstance(old, dict) and isinstance(new, dict):
      differences += config_differences(old, new, f"{prefix}{key}.")
    elif isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
      if list(old) != list(new):
        differences.append(f"{prefix}{key}: {old!r} -> {new!r}")
    elif old != new:
      differences.append(f"{prefix}{key}: {old!r} -> {new!r}")
  return differences


def load_pretrained(path: str) -> tuple[Any, Any]:
  """(params as numpy, the NFNet they belong to) from any weights we accept:
  our workdir / checkpoint dir, a `python -m nfnet.convert` output, a DeepMind
  `*_haiku.npz` pickle, or a timm `.safetensors` / `.pth` state dict
  (`nfnet.loading.load`)."""
  from nfnet import loading  # pylint: disable=import-outside-toplevel
  if not run_checkpoint.is_url(path) and not os.path.exists(path):
    raise FileNotFoundError(f"init_from={path!r} does not exist.")
  model, params, _ = loading.load(path)
  return params, model
