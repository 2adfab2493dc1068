"""Reading a run's checkpoints (the programs' workdirs) for inference.

A checkpoint step holds three items, written by `nfnet.train.checkpoints`:

  state   the TrainState (params, optimizer state, EMA, step)
  data    each process's grain iterator state (one JSON file per process)
  config  the resolved run config, with the model description under "model"

This module reads the weights and the config back, for `nfnet.load` and
`init_from`; orbax is imported only when a checkpoint is read, so that
`import nfnet` stays light.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from nfnet.errors import UserError

STATE, DATA, CONFIG = "state", "data", "config"
CHECKPOINT_DIRNAME = "checkpoints"


def is_url(path: str | os.PathLike) -> bool:
  """gs://bucket/dir and other URLs that etils.epath (and orbax) read."""
  return "://" in os.fspath(path)


def absolute_path(path: str | os.PathLike) -> str:
  """A local path made absolute (orbax wants absolute paths); a URL as it is
  (os.path.abspath would turn gs://bucket/dir into ./gs:/bucket/dir)."""
  path = os.fspath(path)
  return path if is_url(path) else os.path.abspath(path)


def find_checkpoint_step_dir(path: str) -> str:
  """Resolves a workdir, a checkpoints dir or a step dir to one step dir
  (local or gs://)."""
  from etils import epath  # pylint: disable=import-outside-toplevel
  path = epath.Path(absolute_path(path))
  for root in (path / CHECKPOINT_DIRNAME, path):
    if root.is_dir():
      steps = [int(d.name) for d in root.iterdir() if d.name.isdigit()]
      if steps:
        return str(root / str(max(steps)))
  if (path / STATE).is_dir():
    return str(path)
  raise FileNotFoundError(
      f"No checkpoint found at {path}: expected a workdir, its "
      f"'{CHECKPOINT_DIRNAME}' folder, or one step folder of it.")


def read_checkpoint_config(step_dir: str) -> dict:
  """The run description saved beside the state (the `config` item)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
    return checkpointer.restore(os.path.join(step_dir, CONFIG),
                                args=ocp.args.JsonRestore())


def load_checkpoint_params(path: str, ema: bool = False) -> tuple[Any, dict]:
  """(params as numpy, run config) from our workdir / checkpoint / step dir;
  `ema=True` returns the EMA weights instead of the raw ones.

  Only that one subtree is read (orbax's partial restore): the optimizer
  state and the other weights stay on disk."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  step_dir = find_checkpoint_step_dir(path)
  key = "ema_params" if ema else "params"
  state_dir = os.path.join(step_dir, STATE)
  with ocp.PyTreeCheckpointer() as checkpointer:
    tree = checkpointer.metadata(state_dir).item_metadata.tree
    if not tree.get(key):
      raise UserError(f"The checkpoint {step_dir} holds no EMA weights (its run "
                      "had ema_decay=0); load the raw weights instead.")
    # Restored onto this process's first device, whatever topology saved them.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {key: jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        tree[key], is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))}
    restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=target, partial_restore=True,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target)))
  params = jax.tree_util.tree_map(np.asarray, restored[key])
  return params, read_checkpoint_config(step_dir)
