"""Every micro-batch (a virtual replica) draws its own dropout / stochastic-depth masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nfnet import NFNet, optim
from nfnet.train import parallel, training


def _loss_after_one_step(model, images, labels, micro_batches):
  mesh = parallel.make_data_mesh()
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
  tx = optim.sgd_agc(0.1)
  state = training.create_train_state(params, tx, use_ema=False)
  step = training.make_train_step(model, tx, mesh, micro_batches=micro_batches, seed=3)
  batch = parallel.to_global_batch({"image": images, "label": labels}, mesh)
  _, metrics = step(state, batch)
  return float(metrics["loss"])


@pytest.mark.parametrize("drop_rate", [0.0, 0.5])
def test_two_identical_micro_batches_draw_different_masks(tiny_nfnet_kwargs, drop_rate):
  rng = np.random.default_rng(0)
  half = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 5, (4,)).astype(np.int32)
  model = NFNet(num_classes=5, drop_rate=drop_rate, stochdepth_rate=0.0, **tiny_nfnet_kwargs)
  one = _loss_after_one_step(model, half, labels, micro_batches=1)
  # The same four examples twice, as two micro-batches: with one shared key
  # both would draw the same masks and the mean loss would equal `one` exactly.
  two = _loss_after_one_step(model, np.concatenate([half, half]),
                             np.concatenate([labels, labels]), micro_batches=2)
  if drop_rate == 0.0:
    assert two == pytest.approx(one, rel=1e-5)  # nothing random: the same
  else:
    assert abs(two - one) > 1e-4


def test_virtual_replica_ids_follow_device_and_micro_batch():
  ids = training.virtual_replica_ids(8, 4, 2)
  np.testing.assert_array_equal(ids, [8, 8, 9, 9, 10, 10, 11, 11])
  np.testing.assert_array_equal(training.virtual_replica_ids(4, 1, 3), [3, 3, 3, 3])
