"""The train state at start-up: resume the workdir > init_from > scratch.

A workdir's latest checkpoint always wins (the run resumes with the same data
order); else `init_from`'s weights are merged into a fresh model, the head
re-initialised when the class count differs (head surgery, the fine-tune's
usual start, also open to a pre-training that continues from other weights);
else fresh parameters. See docs/design.md, "Start-up precedence".
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from jax.sharding import Mesh

from nfnet import convert, optim
from nfnet.model import NFNet
from nfnet.train import checkpoints, parallel, training
from nfnet.weights import run_checkpoint


def init_params(model: NFNet, resolution: int, seed: int) -> Any:
  """Fresh float32 parameters on the host (identical on every process)."""
  images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
  params = jax.jit(lambda r: model.init(r, images, is_training=False)["params"],
                   backend="cpu")(jax.random.PRNGKey(seed))
  return jax.device_get(params)


def abstract_train_state(model, tx, resolution: int, use_ema: bool, mesh: Mesh):
  """ShapeDtypeStructs of the state, with the replicated sharding to restore to."""
  sharding = parallel.replicated(mesh)
  images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
  abstract = jax.eval_shape(lambda: training.create_train_state(
      model.init(jax.random.PRNGKey(0), images, is_training=False)["params"],
      tx, use_ema))
  return jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
      abstract)


def place_train_state(params, tx, use_ema: bool, mesh: Mesh):
  """Host params -> a replicated TrainState built on the devices."""
  return jax.jit(lambda p: training.create_train_state(p, tx, use_ema),
                 out_shardings=parallel.replicated(mesh))(params)


def run_description(config: ml_collections.ConfigDict, model: NFNet,
                    durations, label_names: list[str] | None = None,
                    multi_label: bool = False) -> dict[str, Any]:
  """What a checkpoint says about itself: the resolved config and model,
  whether the training source was multi-label, and its class names when it
  has them (for `nfnet.load`)."""
  description = {
      "config": config.to_dict(),
      "model": checkpoints.model_description(model),
      "total_steps": durations.total_steps,
      "warmup_steps": durations.warmup_steps,
      "multi_label": bool(multi_label),
  }
  if label_names is not None and len(label_names) == model.num_classes:
    description["label_names"] = [str(name) for name in label_names]
  return description


def initial_params(model: NFNet, config: ml_collections.ConfigDict) -> Any:
  """init_from's weights merged into a fresh model (head surgery), or fresh."""
  params = init_params(model, config.resolution, config.seed)
  if not config.init_from:
    return params
  loaded, source_model = checkpoints.load_pretrained(config.init_from)
  checkpoints.check_same_architecture(source_model, model,
                                      what=f"init_from={config.init_from}")
  params, notes = checkpoints.merge_pretrained(
      params, loaded, reinit_head=config.reinit_head)
  if config.get("init_ws_kernel_norm"):
    # Every WS kernel of the merged tree is a loaded one (the architectures
    # match; a re-initialised head is a dense kernel).
    params = optim.ws_kernels_at_norm(params, config.init_ws_kernel_norm)
    notes.append("weight-standardised kernels re-centred at norm "
                 f"{config.init_ws_kernel_norm}")
  logging.info("Initialised from %s%s", config.init_from,
               f" ({'; '.join(notes)})" if notes else "")
  return params


def restore_or_initialize(manager, model: NFNet, tx, config, mesh: Mesh,
                          data_iterator, use_ema: bool):
  """Start-up precedence: resume the workdir > init_from > scratch."""
  latest = manager.latest_step()
  saved = None
  if latest is not None:
    # A workdir holding another model's checkpoint is a user error, not an
    # orbax shape error: compare the recorded model before touching arrays.
    saved = run_checkpoint.read_checkpoint_config(
        os.path.join(str(manager.directory), str(latest)))
    what = f"the checkpoint in {manager.directory}"
    checkpoints.check_same_architecture(
        convert.model_from_description(saved["model"]), model, what=what)
    checkpoints.check_same_head(saved["model"]["num_classes"], model, what)
  abstract = abstract_train_state(model, tx, config.resolution, use_ema, mesh)
  try:
    restored = checkpoints.restore_latest(manager, abstract, data_iterator)
  except ValueError as e:  # orbax: the saved tree does not fit this run's
    differences = "; ".join(checkpoints.config_differences(
        saved["config"], config.to_dict())) or "none"
    orbax_says = str(e).splitlines()[0][:300]
    raise checkpoints.CheckpointMismatchError(
        f"the checkpoint in {manager.directory} holds another train state "
        f"than this config builds ({orbax_says}).\nConfig values that differ "
        f"from the checkpoint's: {differences}.\nResume with the "
        "checkpoint's values, or use a new workdir.") from None
  if restored is not None:
    state, step = restored
    logging.info("Resumed from step %d in %s.", step, manager.directory)
    return state
  return place_train_state(initial_params(model, config), tx, use_ema, mesh)
