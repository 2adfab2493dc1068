"""Training logs: window means, the learning rate at the logged step, NaN stops, the run summary."""
import time

import jax
import numpy as np
import pytest

from nfnet.model import NFNet
from nfnet.train import config_base, parallel, setup
from nfnet.train import metrics as reporting
from nfnet.train.results import read_scalars


def _log_steps(workdir, losses, learning_rates, every_steps):
  writer = reporting.make_writer(str(workdir))
  logger = reporting.TrainLogger(writer, total_steps=len(losses), batch_size=8,
                                 every_steps=every_steps)
  try:
    for step, (loss, lr) in enumerate(zip(losses, learning_rates), start=1):
      logger(step, {"loss": np.float32(loss), "learning_rate": np.float32(lr)})
  finally:
    writer.close()


def test_loss_is_the_window_mean_and_learning_rate_the_value_at_the_step(tmp_path):
  losses = [4.0, 3.0, 2.0, 1.0]
  warmup = [0.25, 0.5, 0.75, 1.0]
  _log_steps(tmp_path, losses, warmup, every_steps=2)

  scalars = read_scalars(str(tmp_path))
  steps, values = scalars["loss"]
  assert list(steps) == [2, 4] and np.allclose(values, [3.5, 1.5])
  steps, values = scalars["learning_rate"]
  assert list(steps) == [2, 4] and np.allclose(values, [0.5, 1.0])


def test_counters_are_logged_beside_the_window_means(tmp_path):
  """Host-side counts (the trainer's data/corrupt_skipped) are read at each
  write, not at each step."""
  reads = []
  writer = reporting.make_writer(str(tmp_path))
  logger = reporting.TrainLogger(
      writer, total_steps=4, batch_size=8, every_steps=2,
      counters=lambda: reads.append(1) or {"data/corrupt_skipped": len(reads)})
  for step in range(1, 5):
    logger(step, {"loss": np.float32(1.0), "learning_rate": np.float32(0.1)})
  writer.close()
  steps, values = read_scalars(str(tmp_path))["data/corrupt_skipped"]
  assert list(steps) == [2, 4] and list(values) == [1, 2]


def test_progress_times_finished_steps_not_dispatched_ones(tmp_path, monkeypatch):
  """Steps are dispatched in 0.1 s each; fetching a window's metrics waits
  1 s for the device to finish them. clu's steps_per_sec (and its ETA) must
  count that wait in the window it belongs to, as steps_per_s does."""
  now, queued = [0.0], [False]
  monkeypatch.setattr(time, "monotonic", lambda: now[0])
  monkeypatch.setattr(time, "perf_counter", lambda: now[0])
  fetch = jax.device_get

  def fetch_after_the_device_finishes(tree):
    if queued[0]:  # only the first fetch after dispatches waits
      now[0] += 1.0
      queued[0] = False
    return fetch(tree)

  monkeypatch.setattr(jax, "device_get", fetch_after_the_device_finishes)
  writer = reporting.make_writer(str(tmp_path))
  logger = reporting.TrainLogger(writer, total_steps=4, batch_size=8, every_steps=2)
  for step in range(1, 5):
    now[0] += 0.1
    queued[0] = True
    logger(step, {"loss": np.float32(1.0), "learning_rate": np.float32(0.1)})
  writer.close()

  scalars = read_scalars(str(tmp_path))
  steps, rates = scalars["steps_per_sec"]
  assert list(steps) == [2, 4]
  # Step 1 finished dispatching at 0.1 s; step 2's metrics arrived at 1.2 s.
  np.testing.assert_allclose(rates, [1 / 1.1, 2 / 1.2], rtol=1e-6)
  np.testing.assert_allclose(scalars["steps_per_s"][1], [2 / 1.2], rtol=1e-6)


def test_non_finite_loss_names_the_first_bad_step(tmp_path):
  with pytest.raises(reporting.NonFiniteLossError, match="Loss became nan at step 3"):
    _log_steps(tmp_path, [1.0, 1.0, float("nan"), float("inf")], [0.1] * 4, every_steps=4)


def test_diagnostics_average_only_over_the_steps_that_computed_them():
  flag = reporting.DIAGNOSTICS_FLAG
  window = [{"loss": 3.0, "grad_norm": 0.0, flag: 0.0},
            {"loss": 1.0, "grad_norm": 5.0, flag: 1.0}]
  assert reporting.host_scalars(window) == {"loss": 2.0, "grad_norm": 5.0}
  # A window without a diagnostics step reports no norm rather than a zero.
  assert reporting.host_scalars(window[:1]) == {"loss": 3.0}
  # Steps without the flag (diagnostics every step) average as before.
  assert reporting.host_scalars([{"grad_norm": 1.0}, {"grad_norm": 3.0}]) == {
      "grad_norm": 2.0}


def test_run_summary_counts_parameters_as_a_whole_number():
  config = config_base.base_config()
  config.update(batch_size=8, resolution=32)
  model = NFNet(variant="F0", num_classes=3, width=0.125, depths=(1, 1, 1, 1),
                group_size=16)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32), is_training=False))
  count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes))
  summary = reporting.run_summary(model, config, setup.Durations(20, 2, 10.0),
                                  parallel.make_data_mesh())
  assert f"({count:,} params," in summary, summary
