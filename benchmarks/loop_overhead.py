"""Per-step host overhead of the training loop at small scale.

    python -m benchmarks.loop_overhead --steps 150

Builds the synthetic pre-training run (pretrain/configs/synthetic.py: F0
topology at 1/4 width, one block per stage, 32 px, batch 64) on a freshly
written small synthetic corpus, then runs the loop's per-step work by hand
and times each part: `next()` of the real training loader, `to_global_batch`,
the step's dispatch, and the logger (`TrainLogger`, which moves the
metrics to the host every `log_every_steps`); and, apart from the loop, the
compiled step alone on one batch already on the device. Both with the
diagnostic norms on every step and on logging steps only
(`training.make_train_step(diagnostics_every_steps=...)`), interleaved.
Prints one JSON object per setting (milliseconds per step).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import jax

from data import synthetic
from nfnet.train import from_config as data_from_config
from nfnet.train import metrics as train_metrics
from nfnet.train import parallel, setup, training
from nfnet.train import state as train_state
from pretrain.configs import synthetic as synthetic_config


class _NullWriter:
  """Stands in for the clu writer: the loop's logging cost without disk I/O."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def flush(self):
    pass


def build(config, mesh, every: int):
  train_data = data_from_config.make_train_data(config, 0, 1)
  durations = setup.resolve_durations(config, train_data.num_examples)
  model = setup.build_model(config, train_data.num_classes)
  schedule, tx = setup.build_optimizer(config, durations)
  state = train_state.place_train_state(
      train_state.init_params(model, config.resolution, config.seed), tx, False,
      mesh)
  step = training.make_train_step(
      model, tx, mesh, loss=config.loss, learning_rate_fn=schedule,
      agc_clipping=config.agc_clipping or None,
      diagnostics_every_steps=every)
  return train_data.iterator, state, step


def time_loop(iterator, state, step, mesh, config, steps: int):
  """Milliseconds per step of each part of the loop, and the loop's wall."""
  logger = train_metrics.TrainLogger(_NullWriter(), steps, config.batch_size,
                                 config.log_every_steps)
  parts = {"data_next": [], "to_global_batch": [], "step_dispatch": [],
           "logger": []}
  start = time.perf_counter()
  for i in range(1, steps + 1):
    t0 = time.perf_counter()
    host_batch = next(iterator)
    t1 = time.perf_counter()
    batch = parallel.to_global_batch(host_batch, mesh)
    t2 = time.perf_counter()
    state, metrics = step(state, batch)
    t3 = time.perf_counter()
    logger(i, metrics, flush=i == steps)
    t4 = time.perf_counter()
    for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
      parts[name].append(seconds)
  jax.block_until_ready(state)
  wall = time.perf_counter() - start
  row = {f"{k}_ms": round(1e3 * sum(v) / steps, 3) for k, v in parts.items()}
  row["loop_ms_per_step"] = round(1e3 * wall / steps, 2)
  return state, batch, row


def time_step_alone(state, step, batch, steps: int):
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return state, round(1e3 * statistics.median(times), 2)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=150)
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args()
  log = lambda *a: print(*a, file=sys.stderr, flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    log("Writing a small synthetic corpus ...")
    synthetic.generate(tmp, num_train=2048, num_eval=64,
                       downstream_train_per_class=1,
                       downstream_eval_per_class=1)
    config = synthetic_config.get_config(f"data_dir={tmp},fewshot=False")
    mesh = parallel.make_data_mesh()
    every = config.log_every_steps
    runs = {}
    for diagnostics_every in (1, every):
      log(f"Compiling the step (diagnostics every {diagnostics_every}) ...")
      iterator, state, step = build(config, mesh, diagnostics_every)
      state, _, _ = time_loop(iterator, state, step, mesh, config, 3)
      runs[diagnostics_every] = [iterator, state, step, []]
    for _ in range(args.rounds):
      for diagnostics_every, run in runs.items():
        iterator, state, step, rows = run
        state, batch, row = time_loop(iterator, state, step, mesh, config,
                                      args.steps)
        state, row["step_alone_ms"] = time_step_alone(state, step, batch, 20)
        run[1] = state
        rows.append(row)
    for diagnostics_every, (_, _, _, rows) in runs.items():
      merged = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
      merged["outside_step_ms"] = round(
          merged["loop_ms_per_step"] - merged["step_alone_ms"], 2)
      print(json.dumps({"diagnostics_every_steps": diagnostics_every,
                        "batch": config.batch_size,
                        "resolution": config.resolution,
                        "steps": args.steps, "rounds": args.rounds,
                        "steps_per_s": round(1e3 / merged["loop_ms_per_step"], 2),
                        **merged}), flush=True)


if __name__ == "__main__":
  main()
