"""What a SAM step costs relative to a plain step (paper appendix A.4).

SAM adds an ascent pass (forward + backward) before the descent pass. On the
whole batch that doubles the step (the paper: about +100%); on 20% of it the
paper measured +20-40%. This measures both on a tiny NFNet, side by side in
one process: each round times one plain step, one SAM step at every ascent
fraction, in turn, and the medians over rounds are compared.

    python benchmarks/sam_cost.py                      # tiny F0, batch 32, 64 px
    python benchmarks/sam_cost.py --batch 64 --steps 30 --json

Every step is a full jitted training step (gradient, SGD-AGC update, state
donated) with the batch already on the device.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

from nfnet import NFNet, optim
from nfnet.sam import ascent_batch_size, sam_value_and_grad


def make_step(model: NFNet, tx: optax.GradientTransformation,
              ascent_fraction: float | None, rho: float):
  """A jitted `step(params, opt_state, batch, rng)`; plain when fraction is None."""
  def loss_fn(params, batch, rng):
    logits = model.apply({"params": params}, batch["image"], is_training=True,
                         rngs={"dropout": rng})
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label"]).mean()

  if ascent_fraction is None:
    grad_fn = jax.value_and_grad(loss_fn)
  else:
    grad_fn = sam_value_and_grad(loss_fn, rho=rho,
                                 ascent_fraction=ascent_fraction)

  def step(params, opt_state, batch, rng):
    loss, grads = grad_fn(params, batch, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def measure(args) -> dict:
  model = NFNet(variant=args.variant, num_classes=10, width=args.width,
                depths=tuple(args.depths), group_size=args.group_size,
                conv_impl=args.conv_impl)
  rng = jax.random.PRNGKey(0)
  batch = {"image": jax.random.normal(rng, (args.batch, args.resolution,
                                            args.resolution, 3)),
           "label": jax.random.randint(rng, (args.batch,), 0, 10)}
  init_params = jax.jit(model.init)(rng, batch["image"][:1])["params"]
  tx = optim.sgd_agc(0.01)

  modes = {"plain": None}
  modes.update({f"sam_{f:g}": f for f in args.fractions})
  steps, states = {}, {}
  for name, fraction in modes.items():
    print(f"compiling {name} ...", file=sys.stderr, flush=True)
    steps[name] = make_step(model, tx, fraction, args.rho)
    params = jax.tree_util.tree_map(jnp.copy, init_params)
    state = (params, tx.init(params))
    for i in range(args.warmup + 1):  # the first call compiles
      *state, loss = steps[name](*state, batch, jax.random.fold_in(rng, i))
    jax.block_until_ready(loss)
    states[name] = state

  times = {name: [] for name in modes}
  for i in range(args.steps):
    for name in modes:  # interleaved: machine noise hits every mode alike
      step_rng = jax.random.fold_in(rng, 1000 + i)
      start = time.perf_counter()
      *states[name], loss = steps[name](*states[name], batch, step_rng)
      jax.block_until_ready(loss)
      times[name].append(time.perf_counter() - start)
    if (i + 1) % max(1, args.steps // 5) == 0:
      print(f"round {i + 1}/{args.steps}", file=sys.stderr, flush=True)

  medians = {name: statistics.median(t) for name, t in times.items()}
  return {
      "model": {"variant": args.variant, "width": args.width,
                "depths": list(args.depths), "group_size": args.group_size,
                "conv_impl": args.conv_impl},
      "batch": args.batch, "resolution": args.resolution,
      "backend": jax.default_backend(), "devices": jax.device_count(),
      "rounds": args.steps,
      "ascent_examples": {f"sam_{f:g}": ascent_batch_size(args.batch, f)
                          for f in args.fractions},
      "median_step_s": medians,
      "ratio_to_plain": {name: medians[name] / medians["plain"]
                         for name in modes if name != "plain"},
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="F0")
  parser.add_argument("--width", type=float, default=0.25)
  parser.add_argument("--depths", type=int, nargs=4, default=(1, 1, 1, 1))
  parser.add_argument("--group-size", type=int, default=16)
  parser.add_argument("--conv-impl", default="auto",
                      choices=("auto", "native", "per_group", "matmul"))
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--fractions", type=float, nargs="+", default=(1.0, 0.2))
  parser.add_argument("--rho", type=float, default=0.05)
  parser.add_argument("--steps", type=int, default=20,
                      help="timed rounds (one step of every mode each)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--json", action="store_true",
                      help="print one JSON object instead of a table")
  args = parser.parse_args()
  result = measure(args)
  if args.json:
    print(json.dumps(result))
    return
  print(f"{args.variant} width {args.width} depths {tuple(args.depths)}, "
        f"batch {args.batch} at {args.resolution}px on "
        f"{result['backend']}, median of {args.steps} interleaved rounds")
  plain = result["median_step_s"]["plain"]
  print(f"  plain            {plain * 1e3:8.1f} ms   1.00x")
  for name, ratio in result["ratio_to_plain"].items():
    examples = result["ascent_examples"][name]
    print(f"  {name:<8} ({examples:>3} ex) "
          f"{result['median_step_s'][name] * 1e3:8.1f} ms   {ratio:.2f}x "
          f"({(ratio - 1) * 100:+.0f}%)")


if __name__ == "__main__":
  main()
