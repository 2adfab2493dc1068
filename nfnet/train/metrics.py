"""Metrics and progress for long runs: clu writers, a NaN guard, a console line,
and what a run says about itself at the start (summary, hparams, images).

TensorBoard events and the console get the same scalars: loss, learning
rate, grad/param/update norms, AGC clip fraction, steps/s, images/s, ETA
(from `clu.periodic_actions.ReportProgress`), and eval top-1/top-5 for raw
and EMA weights.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Callable, Mapping

import einops
from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metric_writers, parameter_overview, periodic_actions

from nfnet import flops
from nfnet.errors import UserError

from nfnet.train.training import DIAGNOSTIC_METRICS, DIAGNOSTICS_FLAG


class NonFiniteLossError(UserError, FloatingPointError):
  """Training produced a NaN/inf; the last good checkpoint is left untouched."""


class _DropLibraryChatter(logging.Filter):
  """Hides orbax's per-save INFO lines; warnings and errors still show."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def quiet_library_logs() -> None:
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_DropLibraryChatter())


def make_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard events under workdir/tensorboard (process 0 only) + console."""
  return metric_writers.create_default_writer(
      os.path.join(workdir, "tensorboard"),
      just_logging=jax.process_index() > 0, asynchronous=True)


def make_progress(total_steps: int, writer, every_steps: int):
  """steps/s and ETA every `every_steps`, written through the same writer."""
  return periodic_actions.ReportProgress(
      num_train_steps=total_steps, writer=writer, every_steps=every_steps,
      every_secs=None)


# Values of a schedule, not measurements: a window's mean would lag them (a
# warm-up ending mid-window would seem to peak later and lower).
SCHEDULE_METRICS = ("learning_rate",)


def host_scalars(metrics: list[Mapping[str, Any]]) -> dict[str, float]:
  """Per-step metric dicts -> host floats: the mean of each measurement over
  the window, and each of SCHEDULE_METRICS as it stands at the last step.

  When the steps carry `training.DIAGNOSTICS_FLAG` (diagnostics computed on
  logging steps only), each of `training.DIAGNOSTIC_METRICS` is the mean over
  the steps that computed it, and absent if none in the window did.
  """
  metrics = jax.device_get(metrics)
  computed = [m for m in metrics if m.get(DIAGNOSTICS_FLAG, 1.0)]
  scalars = {}
  for k in metrics[0]:
    if k == DIAGNOSTICS_FLAG:
      continue
    if k in SCHEDULE_METRICS:
      scalars[k] = float(metrics[-1][k])
    elif k in DIAGNOSTIC_METRICS:
      if computed:
        scalars[k] = float(np.mean([m[k] for m in computed]))
    else:
      scalars[k] = float(np.mean([m[k] for m in metrics]))
  return scalars


def check_finite(losses: Mapping[int, float]) -> None:
  """Raises at the first step whose loss is NaN or infinite."""
  for step, loss in sorted(losses.items()):
    if not math.isfinite(loss):
      raise NonFiniteLossError(
          f"Loss became {loss} at step {step}. Nothing was saved after the "
          "last good checkpoint. Lower the learning rate, check agc_clipping, "
          "or inspect the data with `python -m data.inspect SOURCE --check`.")


class TrainLogger:
  """Collects step metrics and writes their mean every `every_steps` steps
  (the learning rate as at that step), with steps/s, images/s and ETA; raises
  on a non-finite loss. `counters`, when given, is called at each write for
  host-side counts to log beside them (it is called on every process)."""

  def __init__(self, writer, total_steps: int, batch_size: int,
               every_steps: int,
               counters: Callable[[], dict[str, float]] | None = None):
    self.writer = writer
    self.counters = counters
    self.every_steps = every_steps
    self.batch_size = batch_size
    self.progress = make_progress(total_steps, writer, every_steps)
    self.total_steps = total_steps
    self._pending = []
    self._last = None

  def __call__(self, step: int, metrics: Mapping[str, Any],
               flush: bool = False) -> None:
    self._pending.append((step, metrics))
    if step % self.every_steps and not flush:
      self.progress(step)
      return
    # Steps are dispatched ahead of the device: wait for the window's steps
    # before the progress report times them, or its steps/s and ETA would
    # count dispatches (the first window read 10 steps/s for a real 4).
    per_step = jax.device_get(self._pending)
    self.progress(step)
    self._pending = []
    check_finite({s: float(m["loss"]) for s, m in per_step})
    scalars = host_scalars([m for _, m in per_step])
    scalars.update(self._throughput(step))
    if self.counters:
      scalars.update(self.counters())
    self.writer.write_scalars(step, scalars)

  def _throughput(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    last, self._last = self._last, (step, now)
    if last is None or step == last[0]:
      return {}
    steps_per_s = (step - last[0]) / (now - last[1])
    return {"steps_per_s": steps_per_s,
            "images_per_s": steps_per_s * self.batch_size}


# ----------------------------------------------------------------------------
# What the run says about itself at the start.
# ----------------------------------------------------------------------------

def run_summary(model, config: ml_collections.ConfigDict, durations,
                mesh) -> str:
  """One line that says what this run is, for the log and TensorBoard."""
  params = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), is_training=False))
  # clu counts shapes as floats; a parameter count is a whole number.
  num_params = int(parameter_overview.count_parameters(params["params"]))
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


def log_run_start(writer, model, config: ml_collections.ConfigDict,
                  durations, mesh) -> None:
  """The one-line summary to the log and TensorBoard, the config as hparams."""
  summary = run_summary(model, config, durations, mesh)
  absl_logging.info(summary)
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
  """[N, H, W, 3] uint8 -> one [1, rows*H, columns*W, 3] mosaic for TensorBoard
  (the last row padded with black)."""
  n = images.shape[0]
  rows = -(-n // columns)
  padded = np.zeros((rows * columns, *images.shape[1:]), images.dtype)
  padded[:n] = images
  return einops.rearrange(padded, "(r c) h w ch -> 1 (r h) (c w) ch", c=columns)
