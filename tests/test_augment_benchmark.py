"""The input-pipeline benchmark: its timing against iterators of known cost,
and the end-to-end run with its --json contract."""
import json
import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 8
# The known-cost iterators below: BATCHES timed batches of BATCH_S seconds each
# after one warm-up batch of WARMUP_S.
BATCHES, BATCH_S, WARMUP_S = 4, 0.05, 0.25


class _SimulatedClocks:
  """A wall clock and a CPU clock that move only when told to, standing in for
  the benchmark module's clocks so that its arithmetic is checked exactly, free
  of the machine's load (sleep-based timings wake late on a busy CI box)."""

  def __init__(self):
    self.wall_s, self.cpu_s = 0.0, 0.0

  def install(self, module, monkeypatch):
    monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=lambda: self.wall_s))
    monkeypatch.setattr(module, "_cpu_seconds", lambda: self.cpu_s)


class _KnownCost:
  """Batches of BATCH images; the first `warmup` cost `warmup_s` each, the rest
  `batch_s` each: simulated wall time spent waiting (no CPU) when `clocks` are
  given, else real CPU time spun on this process's CPU clock."""

  def __init__(self, batch_s, warmup_s, warmup, clocks=None):
    self.batch_s, self.warmup_s, self.warmup, self.clocks = batch_s, warmup_s, warmup, clocks
    self.calls, self.closed = 0, False

  def __next__(self):
    cost = self.warmup_s if self.calls < self.warmup else self.batch_s
    self.calls += 1
    if self.clocks:
      self.clocks.wall_s += cost
    else:
      end = time.process_time() + cost
      while time.process_time() < end:
        pass
    return {"image": np.zeros((BATCH, 1, 1, 3), np.uint8)}

  def close(self):
    self.closed = True


def test_measure_times_only_the_batches_after_warmup(benchmark_module, monkeypatch):
  module = benchmark_module("input_pipeline")
  expected = BATCH / BATCH_S  # 160 images/s; counting the warm-up batch would give 71

  clocks = _SimulatedClocks()
  clocks.install(module, monkeypatch)
  waiting = _KnownCost(BATCH_S, WARMUP_S, 1, clocks)
  rate, per_cpu = module.measure(lambda: waiting, batches=BATCHES, warmup=1)
  assert waiting.closed and waiting.calls == BATCHES + 1
  assert rate == pytest.approx(expected)
  # No CPU time was read, so the bound is one clock tick, not a division by 0.
  assert per_cpu == pytest.approx(BATCHES * BATCH / module._CPU_CLOCK_TICK_S)  # pylint: disable=protected-access


def test_measure_counts_the_pipelines_cpu_time(benchmark_module):
  measure = benchmark_module("input_pipeline").measure
  busy = _KnownCost(BATCH_S, WARMUP_S, 1)
  _, per_cpu = measure(lambda: busy, batches=BATCHES, warmup=1)
  # CPU-seconds are immune to the machine's load (10 ms clock ticks: 5%).
  assert per_cpu == pytest.approx(BATCH / BATCH_S, rel=0.15)


def test_input_pipeline_benchmark_json():
  command = [sys.executable, os.path.join(ROOT, "benchmarks", "input_pipeline.py"),
             "--num-images", "16", "--batch-size", "4", "--batches", "2", "--heavy-batches", "1",
             "--warmup", "1", "--rounds", "1", "--workers", "0,1", "--resolution", "32",
             "--no-decoders", "--json"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  rows = {(row["pipeline"], row["workers"]): row for row in report["rows"]}
  # 0 workers: ours decodes in-process and tf.data maps in sequence.
  assert set(rows) == {("base", 0), ("heavy", 0), ("base", 1), ("heavy", 1)}
  assert rows[("base", 0)]["tfdata_images_per_s"] > 0
  # The headline is the base pipeline at the largest worker count that fits.
  base = rows[("base", 1)]
  assert (report["ours_images_per_s"], report["tfdata_images_per_s"], report["workers"]) == (
      base["ours_images_per_s"], base["tfdata_images_per_s"], 1)
  assert report["ours_images_per_s"] > 0 and report["tfdata_images_per_s"] > 0
  assert (report["resolution"], report["batch_size"], report["rounds"]) == (32, 4, 1)
  assert report["mean_jpeg_kb"] > 30  # real-size JPEGs, not thumbnails
