"""Training-step latency, measured as in the paper (appendix A.2).

The median wall time of a full training step (forward, backward and the
NFNet update: AGC + SGD with Nesterov momentum, `nfnet.optim.sgd_agc`; jitted,
state donated) with the batch already on the
device, over `--steps` steps after `--warmup` untimed ones.

    python benchmarks/latency.py --variant F0 --batch 8 --resolution 128
    python benchmarks/latency.py --variant F0 --batch 8 --resolution 128 \
        --compare-conv-impl        # per-group vs native grouped convs

Prints one JSON object per measurement: median_step_s, images_per_s and the
achieved gflops_per_s (training counted as 3x the forward MACs, 2 FLOPs each;
the AGC/optimizer arithmetic is not counted).
"""
from __future__ import annotations

import argparse
import json
import statistics
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


def measure(variant: str, batch: int, resolution: int, dtype: str, steps: int,
            warmup: int, conv_impl: str, remat: bool = False) -> dict:
  model = NFNet(variant=variant, dtype=DTYPES[dtype], conv_impl=conv_impl,
                remat=remat)
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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="F0")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--resolution", type=int, default=128)
  parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--conv-impl", default="auto",
                      choices=("auto", "native", "per_group"))
  parser.add_argument("--remat", action="store_true")
  parser.add_argument("--compare-conv-impl", action="store_true",
                      help="measure per_group and native side by side and "
                      "print their ratio")
  args = parser.parse_args()
  impls = (("per_group", "native") if args.compare_conv_impl else
           (args.conv_impl,))
  results = [measure(args.variant, args.batch, args.resolution, args.dtype,
                     args.steps, args.warmup, impl, args.remat) for impl in impls]
  for result in results:
    print(json.dumps(result), flush=True)
  if args.compare_conv_impl:
    per_group, native = results
    print(json.dumps({
        "native_over_per_group_step_time":
            native["median_step_s"] / per_group["median_step_s"]}))


if __name__ == "__main__":
  main()
