"""One accelerator check: step latency, grouped-conv kernels, memory, input rate.

    bash benchmarks/gpu_check.sh            # on one GPU: under 8 minutes
    bash benchmarks/gpu_check.sh --dry-run  # on CPU, tiny shapes, seconds

Prints one JSON object per line, each with a `measurement` key:

- `environment`: backend, device kind and count, jax version.
- `train_step` (one line per setting): median wall time of a full training
  step (forward, backward, AGC + SGD-Nesterov update; jitted, state donated,
  batch on the device; `benchmarks/latency.py`'s step) for F0 at the paper's
  per-device batch 32 in bfloat16 at its training resolution, with native and
  per-group grouped convolutions, then F1-F3 (native). The paper measured
  F0 at 56.7 ms per step on a V100; the aim on an H100/H200 is under 15 ms.
- `conv_impl_ratio`: F0's per-group over native step time.
- `train_memory` (F4 and up, with and without `remat`): the compiled step's
  memory as XLA assigns it (`Compiled.memory_analysis()`: arguments, outputs,
  temporaries), from compiling alone, so a size that would not fit still
  reports what it would need.
- `input_pipeline`: the training loader (`data.loader.make_train_loader`, the
  real JPEG decode / Inception crop / flip path, grain worker processes) on
  real-size JPEGs at 224 px: images/s and images per CPU-second, which is the
  per-core rate.

Each measurement runs in its own `try`: a failure (an out-of-memory, say)
prints `{"measurement": ..., "error": "..."}` and the rest still run. A
measurement that would start after `--budget-s` prints `{"skipped": ...}`.
`--dry-run` runs every measurement with tiny shapes (1/8 width, one block per
stage, 32 px, batch 2, float32) on whatever backend there is and prints the
same keys; on a 2-core CPU it takes one to a few minutes, nearly all of it
XLA compiling its five steps (F0 native and per-group, F1, F4 with and
without remat; a full run compiles 13).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from typing import Callable

import jax
import jax.numpy as jnp

from benchmarks import latency
from nfnet import optim

PAPER_F0_V100_MS = 56.7  # Table 2 / appendix A.2 of the NFNets paper.
TARGET_F0_MS = 15.0      # the aim on an H100 / H200.


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to measure, at which shapes; `full()` for a GPU, `dry()` for CPU."""

  batch: int
  dtype: str
  steps: int
  warmup: int
  latency_variants: tuple[str, ...]
  memory_variants: tuple[str, ...]
  model_shape: dict  # width / depths / group_size overrides (tiny for dry runs)
  resolution: int | None  # None: each variant's training resolution
  pipeline_images: int
  pipeline_batch: int
  pipeline_resolution: int
  pipeline_batches: int
  pipeline_workers: int
  pipeline_mode: str

  @classmethod
  def full(cls) -> "Plan":
    cores = os.cpu_count() or 1
    return cls(batch=32, dtype="bfloat16", steps=20, warmup=3,
               latency_variants=("F1", "F2", "F3"),
               memory_variants=("F4", "F5", "F6", "F7"), model_shape={},
               resolution=None, pipeline_images=256, pipeline_batch=64,
               pipeline_resolution=224, pipeline_batches=12,
               pipeline_workers=max(1, min(8, cores // 2)),
               pipeline_mode="processes")

  @classmethod
  def dry(cls) -> "Plan":
    # float32: XLA:CPU compiles it faster, and CPU numbers mean nothing here.
    return cls(batch=2, dtype="float32", steps=2, warmup=1,
               latency_variants=("F1",), memory_variants=("F4",),
               model_shape=dict(width=0.125, depths=(1, 1, 1, 1),
                                group_size=16),
               resolution=32, pipeline_images=8, pipeline_batch=4,
               pipeline_resolution=32, pipeline_batches=2,
               pipeline_workers=1, pipeline_mode="threads")

  def resolution_of(self, variant: str) -> int:
    from nfnet import variants
    return self.resolution or variants.get_variant(variant).train_resolution


def emit(row: dict) -> None:
  print(json.dumps(row), flush=True)


class Runner:
  """Runs measurements in order, each isolated, under one wall-clock budget."""

  def __init__(self, budget_s: float):
    self.deadline = time.monotonic() + budget_s

  def __call__(self, name: str, settings: dict, fn: Callable[[], dict]) -> dict | None:
    head = {"measurement": name, **settings}
    if time.monotonic() > self.deadline:
      emit({**head, "skipped": "time budget spent"})
      return None
    start = time.monotonic()
    try:
      row = {**head, **fn(), "wall_s": round(time.monotonic() - start, 2)}
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc(file=sys.stderr)
      emit({**head, "error": f"{type(e).__name__}: {str(e)[:500]}"})
      return None
    emit(row)
    return row


def environment() -> dict:
  devices = jax.devices()
  return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
          "device_count": len(devices), "jax_version": jax.__version__,
          "cpu_cores": os.cpu_count()}


def train_step_latency(plan: Plan, variant: str, conv_impl: str) -> dict:
  resolution = plan.resolution_of(variant)
  model = latency.build_model(variant, plan.dtype, conv_impl, **plan.model_shape)
  step_once, compile_s, macs = latency.jax_stepper(model, plan.batch, resolution,
                                                   plan.dtype)
  for i in range(plan.warmup):
    step_once(1 + i)
  times = [step_once(1 + plan.warmup + i) for i in range(plan.steps)]
  median = statistics.median(times)
  return {"median_step_ms": round(median * 1e3, 3),
          "min_step_ms": round(min(times) * 1e3, 3),
          "images_per_s": round(plan.batch / median, 1),
          "tflops_per_s": round(3 * 2 * macs * plan.batch / median / 1e12, 2),
          "compile_s": round(compile_s, 1)}


def train_memory(plan: Plan, variant: str, remat: bool) -> dict:
  """The compiled step's buffer sizes, from compiling alone (nothing runs)."""
  resolution = plan.resolution_of(variant)
  model = latency.build_model(variant, plan.dtype, "native", remat,
                              **plan.model_shape)
  dtype = latency.DTYPES[plan.dtype]
  images = jax.ShapeDtypeStruct((plan.batch, resolution, resolution, 3), dtype)
  labels = jax.ShapeDtypeStruct((plan.batch,), jnp.int32)
  rng = jax.random.PRNGKey(0)
  params = jax.eval_shape(
      lambda: model.init(rng, jnp.zeros((1, resolution, resolution, 3), dtype))
      ["params"])
  tx = optim.sgd_agc(0.1)
  opt_state = jax.eval_shape(tx.init, params)
  step = latency.make_train_step(model, tx)
  start = time.monotonic()
  compiled = step.lower(params, opt_state, images, labels, rng).compile()
  compile_s = time.monotonic() - start
  stats = compiled.memory_analysis()
  argument = int(stats.argument_size_in_bytes)
  output = int(stats.output_size_in_bytes)
  alias = int(stats.alias_size_in_bytes)
  temp = int(stats.temp_size_in_bytes)
  peak = argument + output - alias + temp
  return {"peak_gib": round(peak / 2**30, 3), "temp_gib": round(temp / 2**30, 3),
          "argument_gib": round(argument / 2**30, 3),
          "output_gib": round(output / 2**30, 3),
          "alias_gib": round(alias / 2**30, 3), "compile_s": round(compile_s, 1)}


def input_pipeline_rate(plan: Plan) -> dict:
  from benchmarks import input_pipeline
  with tempfile.TemporaryDirectory() as tmp:
    spec, _ = input_pipeline.write_corpus(tmp, plan.pipeline_images)
    rate, per_cpu = input_pipeline.measure(
        lambda: input_pipeline.ours_iterator(
            spec, batch_size=plan.pipeline_batch,
            resolution=plan.pipeline_resolution, workers=plan.pipeline_workers,
            heavy=False, mode=plan.pipeline_mode),
        batches=plan.pipeline_batches, warmup=1)
  return {"images_per_s": round(rate, 1),
          "images_per_cpu_s": round(per_cpu, 1)}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dry-run", action="store_true",
                      help="tiny shapes on any backend; the same JSON keys")
  parser.add_argument("--budget-s", type=float, default=450.0,
                      help="start no measurement after this many seconds")
  args = parser.parse_args(argv)
  plan = Plan.dry() if args.dry_run else Plan.full()
  run = Runner(args.budget_s)
  shape = {"dry_run": args.dry_run, **{k: list(v) if isinstance(v, tuple) else v
                                       for k, v in plan.model_shape.items()}}

  run("environment", {"dry_run": args.dry_run}, environment)

  def step_settings(variant, conv_impl):
    return {**shape, "variant": variant, "batch": plan.batch,
            "resolution": plan.resolution_of(variant), "dtype": plan.dtype,
            "conv_impl": conv_impl}

  f0 = {}
  for conv_impl in ("native", "per_group"):
    settings = step_settings("F0", conv_impl)
    if conv_impl == "native":
      settings.update(paper_v100_ms=PAPER_F0_V100_MS, target_ms=TARGET_F0_MS)
    f0[conv_impl] = run("train_step", settings,
                        lambda c=conv_impl: train_step_latency(plan, "F0", c))
  if f0["native"] and f0["per_group"]:
    emit({"measurement": "conv_impl_ratio", **shape, "variant": "F0",
          "per_group_over_native": round(f0["per_group"]["median_step_ms"]
                                         / f0["native"]["median_step_ms"], 3)})
  else:
    emit({"measurement": "conv_impl_ratio", **shape, "variant": "F0",
          "error": "a conv_impl measurement failed or was skipped"})

  for variant in plan.latency_variants:
    run("train_step", step_settings(variant, "native"),
        lambda v=variant: train_step_latency(plan, v, "native"))

  for variant in plan.memory_variants:
    for remat in (False, True):
      run("train_memory", {**shape, "variant": variant, "batch": plan.batch,
                           "resolution": plan.resolution_of(variant),
                           "dtype": plan.dtype, "remat": remat},
          lambda v=variant, r=remat: train_memory(plan, v, r))

  run("input_pipeline", {"dry_run": args.dry_run,
                         "resolution": plan.pipeline_resolution,
                         "batch": plan.pipeline_batch,
                         "workers": plan.pipeline_workers,
                         "mode": plan.pipeline_mode},
      lambda: input_pipeline_rate(plan))


if __name__ == "__main__":
  main()
