"""benchmarks/gpu_check.sh runs end to end in --dry-run and keeps its JSON contract."""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMON = {"measurement", "dry_run"}
STEP = COMMON | {"variant", "batch", "resolution", "dtype", "conv_impl",
                 "median_step_ms", "min_step_ms", "images_per_s", "tflops_per_s",
                 "compile_s", "wall_s"}
EXPECTED_KEYS = {
    "environment": COMMON | {"backend", "device_kind", "device_count",
                             "jax_version", "cpu_cores", "wall_s"},
    "train_step": STEP,
    "conv_impl_ratio": COMMON | {"variant", "per_group_over_native"},
    "train_memory": COMMON | {"variant", "batch", "resolution", "dtype", "remat",
                              "peak_gib", "temp_gib", "argument_gib",
                              "output_gib", "alias_gib", "compile_s", "wall_s"},
    "input_pipeline": COMMON | {"resolution", "batch", "workers", "mode",
                                "images_per_s", "images_per_cpu_s", "wall_s"},
}


@pytest.mark.slow
def test_gpu_check_dry_run_prints_every_measurement():
  # Generous limits: on a busy 2-core CPU the five small compiles take minutes.
  result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run",
                           "--budget-s", "840"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "GPU_CHECK_TIMEOUT_S": "850"})
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
  for row in rows:
    assert "error" not in row and "skipped" not in row, row
    assert row["dry_run"] is True
    missing = EXPECTED_KEYS[row["measurement"]] - set(row)
    assert not missing, (row["measurement"], missing)
  counts = {}
  for row in rows:
    counts[row["measurement"]] = counts.get(row["measurement"], 0) + 1
  assert counts == {"environment": 1, "train_step": 3, "conv_impl_ratio": 1,
                    "train_memory": 2, "input_pipeline": 1}
  steps = [r for r in rows if r["measurement"] == "train_step"]
  assert [(r["variant"], r["conv_impl"]) for r in steps] == [
      ("F0", "native"), ("F0", "per_group"), ("F1", "native")]
  assert all(r["median_step_ms"] > 0 and r["images_per_s"] > 0 for r in steps)
  ratio = next(r for r in rows if r["measurement"] == "conv_impl_ratio")
  assert ratio["per_group_over_native"] == pytest.approx(
      steps[1]["median_step_ms"] / steps[0]["median_step_ms"], rel=1e-2)
  memory = {r["remat"]: r for r in rows if r["measurement"] == "train_memory"}
  for row in memory.values():
    # Peak is what XLA's buffer assignment says the step holds at once.
    assert row["peak_gib"] == pytest.approx(
        row["argument_gib"] + row["output_gib"] - row["alias_gib"]
        + row["temp_gib"], abs=2e-3)
    assert row["argument_gib"] > 0
  pipeline = next(r for r in rows if r["measurement"] == "input_pipeline")
  assert pipeline["images_per_s"] > 0 and pipeline["images_per_cpu_s"] > 0


def test_gpu_check_reports_a_failing_measurement_and_goes_on(capsys):
  from benchmarks import gpu_check  # pylint: disable=import-outside-toplevel
  run = gpu_check.Runner(budget_s=60)

  def out_of_memory():
    raise MemoryError("RESOURCE_EXHAUSTED: 80 GiB")

  assert run("train_memory", {"variant": "F7"}, out_of_memory) is None
  assert run("environment", {}, lambda: {"backend": "cpu"})["backend"] == "cpu"
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  assert lines[0] == {"measurement": "train_memory", "variant": "F7",
                      "error": "MemoryError: RESOURCE_EXHAUSTED: 80 GiB"}
  assert lines[1]["backend"] == "cpu"
  spent = gpu_check.Runner(budget_s=-1)
  assert spent("train_step", {}, lambda: {"never": 1}) is None
  assert json.loads(capsys.readouterr().out) == {"measurement": "train_step",
                                                 "skipped": "time budget spent"}
