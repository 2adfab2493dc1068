"""Config -> the run's objects: model, schedule, optimizer, initial state, evals.

Small pure helpers shared by `pretrain/main.py` and `finetune/main.py`, so that
each program's main reads as the story of one run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
from absl import flags, logging
from etils import epath
from ml_collections import config_flags
import numpy as np
import optax
from jax.sharding import Mesh

from nfnet import checkpoints, convert, flops, optim, parallel, report, training
from nfnet.config_base import model_kwargs
from nfnet.model import NFNet


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> NFNet:
  return NFNet(**model_kwargs(config.model, num_classes))


@dataclasses.dataclass(frozen=True)
class Durations:
  """The run's length in steps, resolved once from steps, epochs or examples."""

  total_steps: int
  warmup_steps: int
  steps_per_epoch: float


def resolve_durations(config: ml_collections.ConfigDict,
                      num_train_examples: int) -> Durations:
  steps_per_epoch = num_train_examples / config.batch_size
  total = optim.duration_to_steps(
      steps=config.total_steps, epochs=config.total_epochs,
      examples=config.total_examples, batch_size=config.batch_size,
      num_examples=num_train_examples, name="total")
  warmup = optim.duration_to_steps(
      steps=config.warmup_steps, epochs=config.warmup_epochs, examples=None,
      batch_size=config.batch_size, num_examples=num_train_examples,
      name="warmup", default=0)
  return Durations(total, warmup, steps_per_epoch)


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  """`lr * batch / 256` when the recipe scales it (training from scratch)."""
  if config.lr_batch_scaling:
    return optim.scale_learning_rate(config.lr, config.batch_size)
  return config.lr


def build_optimizer(config: ml_collections.ConfigDict, durations: Durations):
  schedule = optim.warmup_cosine_schedule(
      peak_learning_rate(config), warmup_steps=durations.warmup_steps,
      total_steps=durations.total_steps)
  tx = optim.sgd_agc(schedule, momentum=config.momentum,
                     weight_decay=config.weight_decay,
                     clipping=config.agc_clipping or None)
  return schedule, tx


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


def evaluate(eval_step, params_by_name: dict[str, Any],
             eval_batches: Iterable[dict], mesh: Mesh) -> dict[str, float]:
  """One pass over the eval split (each `iter()` of `eval_batches` is a fresh,
  exact pass) per parameter set: raw, EMA."""
  results = {}
  for name, params in params_by_name.items():
    totals = None
    for host_batch in eval_batches:
      sums = eval_step(params, parallel.to_global_batch(host_batch, mesh))
      totals = sums if totals is None else jax.tree_util.tree_map(
          jnp.add, totals, sums)
    if totals is None:
      raise ValueError("The eval split yielded no batches.")
    totals = jax.device_get(totals)
    count = max(float(totals["count"]), 1.0)
    results.update({f"{name}/{k}": float(v) / count
                    for k, v in totals.items() if k != "count"})
    results[f"{name}/examples"] = float(totals["count"])
  return results


class PreemptionGuard:
  """Turns SIGTERM/SIGINT into a flag the loop checks: save, then exit cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # A second signal: the user really wants out now.
      signal.signal(signum, self._previous[signum])
      raise KeyboardInterrupt
    self.requested = True
    print(f"Received signal {signum}: saving a checkpoint and stopping.",
          flush=True)

  def should_stop(self, manager, step: int) -> bool:
    """True on every process once any process was signalled (or orbax saw a
    preemption notice), so all of them save the same step and stop together."""
    stop = self.requested or manager.reached_preemption(step)
    # Agreeing across hosts is a blocking collective: do it every 10 steps.
    if jax.process_count() > 1 and step % 10 == 0:
      from jax.experimental import multihost_utils
      return bool(np.any(multihost_utils.process_allgather(np.int32(stop))))
    return stop and jax.process_count() == 1


def build_train_step(config: ml_collections.ConfigDict, model: NFNet, tx,
                     schedule, mesh: Mesh):
  return training.make_train_step(
      model, tx, mesh, loss=config.loss, sam_rho=config.sam_rho,
      sam_ascent_fraction=config.sam_ascent_fraction,
      ema_decay=config.ema_decay or None, micro_batches=config.micro_batches,
      learning_rate_fn=schedule, agc_clipping=config.agc_clipping or None,
      seed=config.seed, diagnostics_every_steps=config.log_every_steps)


RESULTS_FILE = report.RESULTS_FILE


def write_results(workdir: str, step: int, metrics: dict[str, float]) -> None:
  """The finished run's final eval metrics, for recipes and tables (local
  paths and gs:// alike)."""
  if jax.process_index() == 0:
    (epath.Path(workdir) / RESULTS_FILE).write_text(
        json.dumps({"step": step, **metrics}, indent=2))


def read_results(workdir: str) -> dict[str, float]:
  path = epath.Path(workdir) / RESULTS_FILE
  return json.loads(path.read_text()) if path.exists() else {}


def format_metrics(metrics: dict[str, float]) -> str:
  """{'eval/top1': 0.81, ...} -> 'eval/top1 81.00%, ...' (counts stay counts)."""
  return ", ".join(f"{k} {v:.2%}" if "/top" in k else f"{k} {v:g}"
                   for k, v in sorted(metrics.items()))


def run_summary(model: NFNet, config: ml_collections.ConfigDict,
                durations: Durations, mesh: Mesh) -> str:
  """One line that says what this run is, for the log and TensorBoard."""
  params = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), is_training=False))
  num_params = sum(int(np.prod(p.shape))
                   for p in jax.tree_util.tree_leaves(params))
  macs = flops.model_macs_per_image(model, params["params"], config.resolution)
  devices = mesh.devices.size
  macs_text = f"{macs / 1e9:.2f}B" if macs >= 1e9 else f"{macs / 1e6:.1f}M"
  return (f"NFNet {model.variant} ({num_params:,} params, {macs_text} "
          f"MACs/image at {config.resolution} px, {model.num_classes} classes) "
          f"on {devices} {jax.default_backend()} device(s) in "
          f"{jax.process_count()} process(es); batch {config.batch_size} "
          f"({config.batch_size // devices}/device), {durations.total_steps:,} "
          f"steps ({durations.total_steps / max(durations.steps_per_epoch, 1e-9):.1f}"
          f" epochs), warm-up {durations.warmup_steps:,}.")


def log_run_start(writer, model: NFNet, config: ml_collections.ConfigDict,
                  durations: Durations, mesh: Mesh) -> None:
  """The one-line summary to the log and TensorBoard, the config as hparams."""
  summary = run_summary(model, config, durations, mesh)
  logging.info(summary)
  writer.write_texts(0, {"run": summary})
  writer.write_hparams(flat_hparams(config))


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as flat scalar hparams ('model.variant': 'F0', ...)."""
  flat = {}

  def walk(prefix, value):
    if isinstance(value, dict):
      for k, v in value.items():
        walk(f"{prefix}{k}.", v)
    else:
      flat[prefix[:-1]] = value if isinstance(value, (int, float, str, bool)) else str(value)

  walk("", config.to_dict())
  return flat


def image_grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
  """[N, H, W, 3] uint8 -> one [1, rows*H, columns*W, 3] mosaic for TensorBoard."""
  n, h, w, c = images.shape
  rows = -(-n // columns)
  padded = np.zeros((rows * columns, h, w, c), images.dtype)
  padded[:n] = images
  grid = padded.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4)
  return grid.reshape(1, rows * h, columns * w, c)


def params_to_evaluate(state) -> dict[str, Any]:
  """Raw weights always; EMA weights too when the run keeps them."""
  params = {"eval": state.params}
  if state.ema_params is not None:
    params["eval_ema"] = state.ema_params
  return params


def run_description(config: ml_collections.ConfigDict, model: NFNet,
                    durations: Durations,
                    label_names: list[str] | None = None) -> dict[str, Any]:
  """What a checkpoint says about itself: the resolved config and model, and
  the training source's class names when it has them (for `nfnet.load`)."""
  description = {
      "config": config.to_dict(),
      "model": checkpoints.model_description(model),
      "total_steps": durations.total_steps,
      "warmup_steps": durations.warmup_steps,
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
  logging.info("Initialised from %s%s", config.init_from,
               f" ({'; '.join(notes)})" if notes else "")
  return params


def restore_or_initialize(manager, model: NFNet, tx, config, mesh: Mesh,
                          data_iterator, use_ema: bool):
  """Start-up precedence: resume the workdir > init_from > scratch."""
  latest = manager.latest_step()
  if latest is not None:
    # A workdir holding another model's checkpoint is a user error, not an
    # orbax shape error: compare the recorded model before touching arrays.
    saved = checkpoints.read_checkpoint_config(
        os.path.join(str(manager.directory), str(latest)))
    checkpoints.check_same_architecture(
        convert.model_from_description(saved["model"]), model,
        what=f"the checkpoint in {manager.directory}")
  abstract = abstract_train_state(model, tx, config.resolution, use_ema, mesh)
  restored = checkpoints.restore_latest(manager, abstract, data_iterator)
  if restored is not None:
    state, step = restored
    logging.info("Resumed from step %d in %s.", step, manager.directory)
    return state
  return place_train_state(initial_params(model, config), tx, use_ema, mesh)


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


# Errors a user can cause: print one clear line, no traceback soup.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError,
               checkpoints.CheckpointMismatchError)


def run_with_clear_errors(fn: Callable, *args) -> Any:
  try:
    return fn(*args)
  except USER_ERRORS as e:
    logging.debug("Traceback of the error below:", exc_info=True)
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
