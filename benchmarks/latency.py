"""Training-step latency, measured as in the paper (appendix A.2).

The median wall time of a full training step (forward, backward and the
NFNet update: AGC + SGD with Nesterov momentum, `nfnet.optim.sgd_agc`; jitted,
state donated) with the batch already on the
device, over `--steps` steps after `--warmup` untimed ones.

    python benchmarks/latency.py --variant F0 --batch 8 --resolution 128
    python benchmarks/latency.py --variant F0 --batch 8 --resolution 128 \
        --compare-conv-impl        # per-group vs native grouped convs
    python benchmarks/latency.py --variant F0 --batch 8 --resolution 128 \
        --compare-timm             # the same step through timm's dm_nfnet_f0
    python benchmarks/latency.py --width 0.25 --depths 1,1,1,1 --group-size 32 \
        --batch 64 --resolution 32 --compare-timm   # the synthetic config's model

`--compare-timm --conv-impl per_group,matmul` times each of our conv paths
beside timm, all interleaved. `--compare-timm` needs the optional `benchmark` extra (torch, timm): it runs
timm's NormFreeNet of the same topology (the `dm_nfnet_*` config, with the
width, depths and group size given) through the equivalent PyTorch step
(cross-entropy, AGC 0.01 via `timm.utils.adaptive_clip_grad`, SGD with
Nesterov momentum), interleaved with ours step by step, on as many torch
threads as JAX has CPU cores, and prints both and their ratio. The tiny
model's stem differs slightly: timm scales all four stem convs with
`stem_chs` where ours keeps 16, 32, 64.

Prints one JSON object per measurement: median_step_s, images_per_s and the
achieved gflops_per_s (training counted as 3x the forward MACs, 2 FLOPs each;
the AGC/optimizer arithmetic is not counted).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

from nfnet import NFNet, optim
from nfnet.flops import model_macs_per_image

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def make_train_step(model: NFNet, tx: optax.GradientTransformation):
  def loss_fn(params, images, labels, rng):
    logits = model.apply({"params": params}, images, is_training=True,
                         rngs={"dropout": rng})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  def train_step(params, opt_state, images, labels, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, images, labels, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(train_step, donate_argnums=(0, 1))


def build_model(variant: str, dtype: str, conv_impl: str, remat: bool = False,
                width: float = 1.0, depths=None, group_size: int = 128) -> NFNet:
  return NFNet(variant=variant, dtype=DTYPES[dtype], conv_impl=conv_impl,
               remat=remat, width=width, depths=depths, group_size=group_size)


def jax_stepper(model: NFNet, batch: int, resolution: int, dtype: str):
  """Compiled step with its state: returns (step_once, compile_s, macs)."""
  rng = jax.random.PRNGKey(0)
  images = jax.random.normal(rng, (batch, resolution, resolution, 3),
                             DTYPES[dtype])
  labels = jax.random.randint(rng, (batch,), 0, model.num_classes)
  params = jax.jit(model.init)(rng, images[:1])["params"]
  macs = model_macs_per_image(model, params, resolution)
  tx = optim.sgd_agc(0.1)
  state = [params, tx.init(params), None]
  step = make_train_step(model, tx)

  def step_once(i: int) -> float:
    start = time.perf_counter()
    state[0], state[1], state[2] = step(state[0], state[1], images, labels,
                                        jax.random.fold_in(rng, i))
    jax.block_until_ready(state[2])
    return time.perf_counter() - start

  compile_s = step_once(0)
  return step_once, compile_s, macs


def timm_stepper(variant: str, batch: int, resolution: int, width: float,
                 depths, group_size: int):
  """timm's NormFreeNet of the same shape and its SGD+AGC step, float32."""
  import dataclasses as dc
  import torch
  from timm.models import nfnet as timm_nfnet
  from timm.utils import adaptive_clip_grad

  torch.set_num_threads(jax.local_device_count() if jax.default_backend() != "cpu"
                        else len(os.sched_getaffinity(0)))
  cfg = timm_nfnet.model_cfgs[f"dm_nfnet_{variant.lower()}"]
  channels = tuple(int(c * width) for c in cfg.channels)
  cfg = dc.replace(cfg, channels=channels,
                   depths=tuple(depths) if depths else cfg.depths,
                   group_size=group_size, stem_chs=channels[0] // 2,
                   num_features=int(channels[-1] * 2.0))
  model = timm_nfnet.NormFreeNet(cfg, num_classes=1000).train()
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
  images = torch.randn(batch, 3, resolution, resolution)
  labels = torch.randint(0, 1000, (batch,))
  loss_fn = torch.nn.CrossEntropyLoss()

  def step_once(i: int) -> float:
    del i
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(images), labels)
    loss.backward()
    adaptive_clip_grad(model.parameters(), clip_factor=0.01, eps=1e-3)
    opt.step()
    return time.perf_counter() - start

  return step_once, torch.get_num_threads()


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
  """The dense-matmul ceiling: a jitted size^2 float32 matmul's GFLOP/s."""
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(f(a))
    times.append(time.perf_counter() - start)
  return 2 * size**3 / statistics.median(times) / 1e9


def compare_timm(variant: str, batch: int, resolution: int, steps: int,
                 warmup: int, conv_impls, width: float, depths,
                 group_size: int) -> list[dict]:
  """Ours (one stepper per conv_impl) and timm's float32 step, interleaved
  step by step, medians."""
  ours = {}
  for impl in conv_impls:
    model = build_model(variant, "float32", impl, width=width, depths=depths,
                        group_size=group_size)
    ours[impl] = jax_stepper(model, batch, resolution, "float32")
    print(f"ours ({impl}) compiled in {ours[impl][1]:.0f} s", file=sys.stderr,
          flush=True)
  macs = next(iter(ours.values()))[2]
  theirs, threads = timm_stepper(variant, batch, resolution, width, depths,
                                 group_size)
  for i in range(warmup):
    for step_once, _, _ in ours.values():
      step_once(i + 1)
    theirs(i)
  times = {impl: [] for impl in ours}
  times["timm"] = []
  for i in range(steps):
    for impl, (step_once, _, _) in ours.items():
      times[impl].append(step_once(warmup + 1 + i))
    times["timm"].append(theirs(i))
    print(f"step {i + 1}/{steps}: " + ", ".join(
        f"{k} {v[-1]:.3f} s" for k, v in times.items()), file=sys.stderr,
          flush=True)
  ceiling = matmul_gflops()
  gflop = 3 * 2 * macs * batch / 1e9
  shape = {"variant": variant, "width": width, "depths": depths,
           "group_size": group_size, "batch": batch, "resolution": resolution,
           "dtype": "float32", "steps": steps}
  rows = []
  timm_median = statistics.median(times["timm"])
  for name, ts in times.items():
    median = statistics.median(ts)
    row = {**shape, "impl": "timm" if name == "timm" else f"ours ({name})",
           "median_step_s": median, "steps_per_s": 1 / median,
           "step_gflop": gflop, "gflops_per_s": gflop / median,
           "fraction_of_matmul_ceiling": gflop / median / ceiling}
    if name != "timm":
      row["over_timm_step_time"] = median / timm_median
      row["jax_compile_s"] = ours[name][1]
    rows.append(row)
  rows.append({"matmul_2048_gflops_per_s": ceiling, "torch_threads": threads})
  return rows


def measure(variant: str, batch: int, resolution: int, dtype: str, steps: int,
            warmup: int, conv_impl: str, remat: bool = False,
            width: float = 1.0, depths=None, group_size: int = 128) -> dict:
  model = build_model(variant, dtype, conv_impl, remat, width, depths,
                      group_size)
  rng = jax.random.PRNGKey(0)
  images = jax.random.normal(rng, (batch, resolution, resolution, 3),
                             DTYPES[dtype])
  labels = jax.random.randint(rng, (batch,), 0, model.num_classes)
  params = jax.jit(model.init)(rng, images[:1])["params"]
  tx = optim.sgd_agc(0.1)
  opt_state = tx.init(params)
  step = make_train_step(model, tx)

  compile_start = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, images, labels, rng)
  jax.block_until_ready(loss)
  compile_s = time.perf_counter() - compile_start
  for _ in range(warmup):
    params, opt_state, loss = step(params, opt_state, images, labels, rng)
  jax.block_until_ready(loss)

  times = []
  for i in range(steps):
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, images, labels,
                                   jax.random.fold_in(rng, i))
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - start)

  median = statistics.median(times)
  macs = model_macs_per_image(model, params, resolution)
  return {
      "variant": variant, "batch": batch, "resolution": resolution,
      "dtype": dtype, "conv_impl": conv_impl, "remat": remat,
      "backend": jax.default_backend(), "steps": steps,
      "median_step_s": median, "images_per_s": batch / median,
      "gflops_per_s": 3 * 2 * macs * batch / median / 1e9,
      "compile_s": compile_s, "final_loss": float(loss),
  }


def _positive_ints(text: str) -> tuple[int, ...]:
  try:
    values = tuple(int(v) for v in text.split(","))
  except ValueError:
    values = ()
  if not values or min(values) < 1:
    raise argparse.ArgumentTypeError(f"expected positive ints like 1,1,1,1, got {text!r}")
  return values


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="F0")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--resolution", type=int, default=128)
  parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--conv-impl", default="auto",
                      help="auto, native, per_group or matmul "
                      "(nfnet.layers.conv2d_same); with --compare-timm a comma-separated list, each "
                      "timed beside timm in the same run")
  parser.add_argument("--remat", action="store_true")
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--depths", default=None, type=_positive_ints,
                      help="comma-separated blocks per stage, e.g. 1,1,1,1")
  parser.add_argument("--group-size", type=int, default=128)
  parser.add_argument("--compare-timm", action="store_true",
                      help="time timm's model of the same shape in the same "
                      "run (float32; needs the `benchmark` extra)")
  parser.add_argument("--compare-conv-impl", action="store_true",
                      help="measure per_group and native side by side and "
                      "print their ratio")
  args = parser.parse_args()
  if "," in args.conv_impl and not args.compare_timm:
    parser.error("a list of --conv-impl values needs --compare-timm")
  shape = dict(width=args.width, depths=args.depths, group_size=args.group_size)
  if args.compare_timm:
    impls = args.conv_impl.split(",")
    for row in compare_timm(args.variant, args.batch, args.resolution,
                            args.steps, args.warmup, impls, **shape):
      print(json.dumps(row), flush=True)
    return
  impls = (("per_group", "native") if args.compare_conv_impl else
           (args.conv_impl,))
  results = [measure(args.variant, args.batch, args.resolution, args.dtype,
                     args.steps, args.warmup, impl, args.remat, **shape)
             for impl in impls]
  for result in results:
    print(json.dumps(result), flush=True)
  if args.compare_conv_impl:
    per_group, native = results
    print(json.dumps({
        "native_over_per_group_step_time":
            native["median_step_s"] / per_group["median_step_s"]}))


if __name__ == "__main__":
  from nfnet.train import cli  # pylint: disable=import-outside-toplevel
  cli.run_with_clear_errors(main)  # an unknown variant: one error line
