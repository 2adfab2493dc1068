"""Diagnostic norms on logging steps only: same training, same norms where computed."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nfnet import NFNet, optim
from nfnet.train import parallel, training

# Whole-program / multi-device runs: scheduled first (tests/conftest.py).
pytestmark = pytest.mark.slow


def _run(tiny_nfnet_kwargs, every, steps=4):
  model = NFNet(num_classes=4, **tiny_nfnet_kwargs)
  mesh = parallel.make_data_mesh(1)
  tx = optim.sgd_agc(0.1, clipping=0.01)
  images = jax.random.randint(jax.random.PRNGKey(0), (4, 32, 32, 3), 0, 255,
                              jnp.int32).astype(jnp.uint8)
  params = jax.jit(model.init)(jax.random.PRNGKey(1),
                               jnp.zeros((1, 32, 32, 3)))["params"]
  state = training.create_train_state(params, tx, use_ema=False)
  step = training.make_train_step(model, tx, mesh, agc_clipping=0.01,
                                  diagnostics_every_steps=every)
  batch = {"image": images, "label": jnp.arange(4) % 4}
  history = []
  for _ in range(steps):
    state, metrics = step(state, batch)
    history.append(jax.device_get(metrics))
  return state, history


def test_diagnostics_every_two_steps_match_every_step(tiny_nfnet_kwargs):
  state_1, every_step = _run(tiny_nfnet_kwargs, 1)
  state_2, every_other = _run(tiny_nfnet_kwargs, 2)
  for a, b in zip(jax.tree_util.tree_leaves(state_1.params),
                  jax.tree_util.tree_leaves(state_2.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert training.DIAGNOSTICS_FLAG not in every_step[0]
  assert [m[training.DIAGNOSTICS_FLAG] for m in every_other] == [0, 1, 0, 1]
  for name in training.DIAGNOSTIC_METRICS:
    for i, (full, sparse) in enumerate(zip(every_step, every_other)):
      if i % 2:  # steps 2 and 4 (counted from 1) computed them
        np.testing.assert_allclose(sparse[name], full[name], rtol=1e-5)
        assert full[name] > 0 or name == "clip_fraction"
      else:
        assert sparse[name] == 0
    np.testing.assert_allclose([m["loss"] for m in every_other],
                               [m["loss"] for m in every_step], rtol=1e-5)
