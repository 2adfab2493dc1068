"""The input-pipeline benchmark: its timing against iterators of known cost,
and the end-to-end run with its --json contract."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 8


class _KnownCost:
  """Batches of BATCH images; the first `warmup` cost `warmup_s` each, the rest
  `batch_s` each, spent asleep or spinning on this process's CPU clock."""

  def __init__(self, batch_s, warmup_s, warmup, busy):
    self.batch_s, self.warmup_s, self.warmup, self.busy = batch_s, warmup_s, warmup, busy
    self.calls, self.closed = 0, False

  def __next__(self):
    cost = self.warmup_s if self.calls < self.warmup else self.batch_s
    self.calls += 1
    if self.busy:
      end = time.process_time() + cost
      while time.process_time() < end:
        pass
    else:
      time.sleep(cost)
    return {"image": np.zeros((BATCH, 1, 1, 3), np.uint8)}

  def close(self):
    self.closed = True


def test_measure_times_only_the_batches_after_warmup(benchmark_module):
  measure = benchmark_module("input_pipeline").measure
  batches, batch_s, warmup_s = 4, 0.05, 0.25
  expected = BATCH / batch_s  # 160 images/s; counting the warm-up batch would give 71

  asleep = _KnownCost(batch_s, warmup_s, 1, busy=False)
  rate, per_cpu = measure(lambda: asleep, batches=batches, warmup=1)
  assert asleep.closed and asleep.calls == batches + 1
  # Sleep never returns early, so the rate is at most the expected one; the
  # lower bound leaves a loaded machine 0.16 s of late wake-ups.
  assert 0.55 * expected < rate <= expected
  assert per_cpu > 5 * rate  # sleeping costs (almost) no CPU

  busy = _KnownCost(batch_s, warmup_s, 1, busy=True)
  _, per_cpu = measure(lambda: busy, batches=batches, warmup=1)
  # CPU-seconds are immune to the machine's load (10 ms clock ticks: 5%).
  assert per_cpu == pytest.approx(expected, rel=0.15)


def test_input_pipeline_benchmark_json():
  command = [sys.executable, os.path.join(ROOT, "benchmarks", "input_pipeline.py"),
             "--num-images", "16", "--batch-size", "4", "--batches", "2", "--heavy-batches", "1",
             "--warmup", "1", "--rounds", "1", "--workers", "1", "--resolution", "32",
             "--no-decoders", "--json"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  rows = {(row["pipeline"], row["workers"]): row for row in report["rows"]}
  assert set(rows) == {("base", 1), ("heavy", 1)}
  # The headline is the base pipeline at the largest worker count that fits.
  base = rows[("base", 1)]
  assert (report["ours_images_per_s"], report["tfdata_images_per_s"], report["workers"]) == (
      base["ours_images_per_s"], base["tfdata_images_per_s"], 1)
  assert report["ours_images_per_s"] > 0 and report["tfdata_images_per_s"] > 0
  assert (report["resolution"], report["batch_size"], report["rounds"]) == (32, 4, 1)
  assert report["mean_jpeg_kb"] > 30  # real-size JPEGs, not thumbnails
