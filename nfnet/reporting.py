"""Metrics and progress for long runs: clu writers, a NaN guard, a console line.

TensorBoard events and the console get the same scalars: loss, learning
rate, grad/param/update norms, AGC clip fraction, steps/s, images/s, ETA
(from `clu.periodic_actions.ReportProgress`), and eval top-1/top-5 for raw
and EMA weights.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping

import jax
import numpy as np
from clu import metric_writers, periodic_actions


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/inf; the last good checkpoint is left untouched."""


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


def host_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
  """Averages a list (or one dict) of device metrics into host floats."""
  stacked = jax.device_get(metrics)
  if isinstance(stacked, (list, tuple)):
    keys = stacked[0].keys()
    return {k: float(np.mean([m[k] for m in stacked])) for k in keys}
  return {k: float(v) for k, v in stacked.items()}


def check_finite(scalars: Mapping[str, float], step: int) -> None:
  if not math.isfinite(scalars.get("loss", 0.0)):
    raise NonFiniteLossError(
        f"Loss became {scalars['loss']} at step {step}. Nothing was saved after "
        "the last checkpoint. Lower the learning rate, check agc_clipping, or "
        "inspect the data with `python -m data.inspect SOURCE --check`.")


def eval_summary(prefix: str, sums: Mapping[str, float]) -> dict[str, float]:
  """Turns summed correct counts into accuracies: {prefix}/top1 ..."""
  count = max(float(sums["count"]), 1.0)
  return {f"{prefix}/{k}": float(v) / count for k, v in sums.items()
          if k != "count"} | {f"{prefix}/examples": float(sums["count"])}
