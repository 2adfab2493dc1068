"""Where a training step's time goes on XLA:CPU, per compiled HLO op.

    python -m benchmarks.step_profile --variant F0 --batch 8 --resolution 128
    python -m benchmarks.step_profile --width 0.25 --depths 1,1,1,1 \
        --group-size 32 --batch 64 --resolution 32 --top 30

Compiles `benchmarks/latency.py`'s training step, traces `--steps` steps
with `jax.profiler` (XLA:CPU's per-op trace events switched on with
`--xla_cpu_enable_xprof_traceme`), and joins each event with the optimized
HLO of the step, so every op gets a category: a convolution (forward, input
gradient -- a conv with lhs dilation when the forward was strided -- or
kernel gradient, told apart by XLA's dim labels and window), a dot, an
elementwise / reduction fusion, a copy or transpose. Prints per-category and
per-op milliseconds per step (summed over the worker threads and divided by
the thread count, so the categories add up to about the step's wall time),
and the op's HLO shape and attributes.

With `--phases` it first prints, as one JSON line, the median wall time of
the forward pass, the forward + backward pass, the optimizer update and the
full step (forward, backward, optimizer), each compiled alone.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time

if "--xla_cpu_enable_xprof_traceme" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from benchmarks import latency  # noqa: E402
from nfnet import optim  # noqa: E402

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*?) ([a-z][a-z\-]*)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")


def parse_hlo(text: str) -> tuple[dict, dict]:
  """HLO text -> ({instruction: (computation, type, opcode, rest)},
  {computation: [instruction names]})."""
  instructions, computations, current = {}, collections.defaultdict(list), None
  for line in text.splitlines():
    match = _COMPUTATION.match(line)
    if match and " = " not in line:
      current = match.group(1)
      continue
    match = _INSTRUCTION.match(line)
    if match and current:
      name, type_, opcode, rest = match.groups()
      instructions[name] = (current, type_, opcode, rest)
      computations[current].append(name)
  return instructions, computations


def _conv_kind(rest: str) -> str:
  window = re.search(r"window=\{([^}]*)\}", rest)
  labels = re.search(r"dim_labels=(\S+?)[,\s]", rest + " ")
  window = window.group(1) if window else ""
  labels = labels.group(1) if labels else ""
  size = re.search(r"size=(\S+)", window)
  size = size.group(1) if size else "?"
  stride = "s2 " if "stride=2" in window else ""
  lhs, _, out = labels.partition("->")
  lhs, _, rhs = lhs.partition("_")
  if "lhs_dilate" in window:
    return f"conv {size} input-grad of a strided conv"
  if lhs.startswith("f") or out.startswith("01") or "rhs_dilate" in window:
    return f"conv {size} {stride}kernel-grad"
  if rhs.endswith("oi"):
    return f"conv {size} {stride}input-grad"
  return f"conv {size} {stride}forward"


def categorize(name: str, instructions: dict, computations: dict) -> tuple[str, str]:
  """(category, description) of one HLO op by what it or its fusion holds."""
  if name not in instructions:
    return "other", name
  _, type_, opcode, rest = instructions[name]
  called = re.findall(r"calls=%?([\w.\-]+)", rest)
  inner = [instructions[i] for c in called for i in computations.get(c, ())]
  for _, itype, iop, irest in [(None, type_, opcode, rest)] + inner:
    if iop == "convolution":
      return _conv_kind(irest), f"{itype} {irest[:160]}"
    if iop == "dot":
      return "dot", f"{itype} {irest[:120]}"
  inner_ops = collections.Counter(op for _, _, op, _ in inner)
  if opcode == "fusion":
    main = [op for op in ("reduce", "reduce-window", "select-and-scatter",
                          "transpose", "concatenate", "slice", "pad",
                          "dynamic-update-slice") if inner_ops.get(op)]
    return ("fusion: " + "+".join(main[:2]) if main else "fusion: elementwise",
            f"{type_} {dict(inner_ops.most_common(6))}")
  return opcode, f"{type_} {rest[:120]}"


def trace_events(fn, steps: int) -> tuple[dict, int]:
  """{op name: total ns} over `steps` calls of fn(), and the worker thread count."""
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp)
    for i in range(steps):
      fn(i)
    jax.profiler.stop_trace()
    path = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)[0]
    from jax._src.lib import _profile_data  # pylint: disable=import-outside-toplevel
    profile = _profile_data.ProfileData.from_file(path)
  totals, threads = collections.Counter(), set()
  for plane in profile.planes:
    for line in plane.lines:
      if "XLAEigen" not in line.name:
        continue
      threads.add(line.name)
      for event in line.events:
        if not event.name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
          totals[event.name] += event.duration_ns
  return totals, max(len(threads), 1)


def phase_times(model, batch: int, resolution: int, repeats: int) -> dict:
  """Median seconds of the forward, forward + backward, the optimizer update
  and the full step."""
  rng = jax.random.PRNGKey(0)
  images = jax.random.normal(rng, (batch, resolution, resolution, 3))
  labels = jax.random.randint(rng, (batch,), 0, model.num_classes)
  params = jax.jit(model.init)(rng, images[:1])["params"]

  def loss_fn(p):
    logits = model.apply({"params": p}, images, is_training=True,
                         rngs={"dropout": rng})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  tx = optim.sgd_agc(0.1)
  opt_state = tx.init(params)

  def full(p, s):
    grads = jax.grad(loss_fn)(p)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s

  def optimizer_only(p, s, g):
    updates, s = tx.update(g, s, p)
    return optax.apply_updates(p, updates), s

  grads = jax.jit(jax.grad(loss_fn))(params)
  fns = {"forward": (jax.jit(loss_fn), (params,)),
         "forward_backward": (jax.jit(jax.grad(loss_fn)), (params,)),
         "optimizer": (jax.jit(optimizer_only), (params, opt_state, grads)),
         "full_step": (jax.jit(full), (params, opt_state))}
  out = {}
  for name, (fn, args) in fns.items():
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - start)
    out[name + "_s"] = statistics.median(times)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="F0")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--resolution", type=int, default=128)
  parser.add_argument("--conv-impl", default="auto",
                      choices=("auto", "native", "per_group", "matmul"))
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--depths", default=None)
  parser.add_argument("--group-size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=25)
  parser.add_argument("--phases", action="store_true",
                      help="also time forward, forward+backward, optimizer alone")
  parser.add_argument("--dump-hlo", default=None, help="write the optimized HLO here")
  args = parser.parse_args()
  depths = tuple(int(d) for d in args.depths.split(",")) if args.depths else None
  model = latency.build_model(args.variant, "float32", args.conv_impl,
                              width=args.width, depths=depths,
                              group_size=args.group_size)
  log = lambda *a: print(*a, file=sys.stderr, flush=True)

  if args.phases:
    log("Timing the phases ...")
    print(json.dumps(phase_times(model, args.batch, args.resolution, 3)), flush=True)

  step_once, compile_s, _ = latency.jax_stepper(model, args.batch,
                                                args.resolution, "float32")
  log(f"compiled in {compile_s:.1f} s")
  step_once(1)
  # The jitted step inside jax_stepper is the one traced; its HLO names the ops.
  rng = jax.random.PRNGKey(0)
  images = jnp.zeros((args.batch, args.resolution, args.resolution, 3))
  labels = jnp.zeros((args.batch,), jnp.int32)
  params = jax.eval_shape(lambda: model.init(rng, images[:1])["params"])
  tx = optim.sgd_agc(0.1)
  hlo = latency.make_train_step(model, tx).lower(
      params, jax.eval_shape(tx.init, params), images, labels, rng
  ).compile().as_text()
  if args.dump_hlo:
    with open(args.dump_hlo, "w") as f:
      f.write(hlo)
  instructions, computations = parse_hlo(hlo)

  wall = []
  totals, threads = trace_events(lambda i: wall.append(step_once(10 + i)), args.steps)
  per_step = lambda ns: ns / 1e6 / args.steps / threads
  categories, ops = collections.Counter(), []
  for name, ns in totals.items():
    category, description = categorize(name, instructions, computations)
    categories[category] += ns
    ops.append((ns, name, category, description))
  step_ms = statistics.median(wall) * 1e3
  print(f"step {step_ms:.0f} ms (median of {args.steps} traced), ops "
        f"{per_step(sum(totals.values())):.0f} ms per step on {threads} threads")
  print("\nper category, ms per step:")
  for category, ns in categories.most_common():
    print(f"  {per_step(ns):8.1f}  {category}")
  print(f"\ntop {args.top} ops, ms per step:")
  for ns, name, category, description in sorted(ops, reverse=True)[:args.top]:
    print(f"  {per_step(ns):8.1f}  {name:32s} {category:40s} {description[:150]}")


if __name__ == "__main__":
  main()
