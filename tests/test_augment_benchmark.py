"""The input-pipeline benchmark runs end to end and keeps its --json contract."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_input_pipeline_benchmark_json():
  command = [sys.executable, os.path.join(ROOT, "benchmarks", "input_pipeline.py"),
             "--num-images", "16", "--batch-size", "4", "--batches", "2", "--heavy-batches", "1",
             "--warmup", "1", "--rounds", "1", "--workers", "1", "--resolution", "32",
             "--no-decoders", "--json"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["ours_images_per_s"] > 0 and report["tfdata_images_per_s"] > 0
  ratio = report["ours_images_per_s"] / report["tfdata_images_per_s"]
  assert abs(report["ratio"] - ratio) < 0.02
  assert {(row["pipeline"], row["workers"]) for row in report["rows"]} == {
      ("base", 1), ("heavy", 1)}
  assert report["mean_jpeg_kb"] > 30  # real-size JPEGs, not thumbnails
