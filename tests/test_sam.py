"""nfnet.sam on one device: against hand-written two-pass SAM gradients.

The per-replica behaviour over a real 8-device mesh is in test_sam_sharded.py.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nfnet import NFNet, optim
from nfnet.sam import ascent_batch_size, sam_value_and_grad

# The NumPy SGD-AGC reference lives with the optimizer tests.
from test_optim import NumpySgdAgc, flatten

# ----------------------------------------------------------------------------
# A linear least-squares model whose gradients NumPy writes down exactly
# ----------------------------------------------------------------------------

B, D_IN, D_OUT = 10, 4, 3


def make_problem(seed=0):
  rng = np.random.default_rng(seed)
  params = {"dense": {"kernel": rng.normal(size=(D_IN, D_OUT)),
                      "bias": rng.normal(size=(D_OUT,))}}
  batch = {"x": rng.normal(size=(B, D_IN)), "y": rng.normal(size=(B, D_OUT))}
  as_f32 = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), t)
  return params, batch, as_f32(params), as_f32(batch)


def squared_error(params, batch):
  pred = batch["x"] @ params["dense"]["kernel"] + params["dense"]["bias"]
  return jnp.mean(jnp.sum((pred - batch["y"]) ** 2, axis=-1))


def np_loss_and_grad(w, b, x, y):
  residual = x @ w + b - y
  n = x.shape[0]
  loss = np.mean(np.sum(residual ** 2, axis=-1))
  return loss, 2 / n * x.T @ residual, 2 / n * residual.sum(0)


def np_sam(params, batch, rho, n_ascent):
  """SAM by hand: ascent on the first n_ascent examples, descent on all."""
  w, b = params["dense"]["kernel"], params["dense"]["bias"]
  x, y = batch["x"], batch["y"]
  _, gw, gb = np_loss_and_grad(w, b, x[:n_ascent], y[:n_ascent])
  scale = rho / (math.sqrt(np.sum(gw ** 2) + np.sum(gb ** 2)) + 1e-12)
  return np_loss_and_grad(w + scale * gw, b + scale * gb, x, y)


def assert_sam_matches(value, grads, expected):
  loss, gw, gb = expected
  np.testing.assert_allclose(value, loss, rtol=2e-5)
  np.testing.assert_allclose(grads["dense"]["kernel"], gw, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(grads["dense"]["bias"], gb, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("fraction,n_ascent", [(0.2, 2), (0.25, 3), (1.0, B)])
def test_sam_matches_numpy_two_pass(fraction, n_ascent):
  np_params, np_batch, params, batch = make_problem()
  rho = 0.3
  grad_fn = jax.jit(sam_value_and_grad(squared_error, rho=rho,
                                       ascent_fraction=fraction))
  value, grads = grad_fn(params, batch)
  assert_sam_matches(value, grads, np_sam(np_params, np_batch, rho, n_ascent))
  # And it is not the plain gradient, nor SAM with another ascent subset.
  _, plain_w, _ = np_loss_and_grad(np_params["dense"]["kernel"],
                                   np_params["dense"]["bias"], np_batch["x"],
                                   np_batch["y"])
  assert np.abs(grads["dense"]["kernel"] - plain_w).max() > 1e-2
  other = np_sam(np_params, np_batch, rho, n_ascent + 1 if n_ascent < B else 1)
  assert np.abs(grads["dense"]["kernel"] - other[1]).max() > 1e-3


def test_micro_batches_average_per_micro_batch_sam():
  np_params, np_batch, params, batch = make_problem(1)
  rho, k = 0.3, 2
  grad_fn = jax.jit(sam_value_and_grad(squared_error, rho=rho,
                                       ascent_fraction=0.2, micro_batches=k))
  value, grads = grad_fn(params, batch)
  size = B // k  # 5 examples per micro-batch, ceil(0.2 * 5) = 1 for ascent
  parts = [np_sam(np_params, {n: a[i * size:(i + 1) * size]
                              for n, a in np_batch.items()}, rho, 1)
           for i in range(k)]
  expected = [sum(p[j] for p in parts) / k for j in range(3)]
  assert_sam_matches(value, grads, expected)
  whole = np_sam(np_params, np_batch, rho, 2)
  assert np.abs(grads["dense"]["kernel"] - whole[1]).max() > 1e-3


# ----------------------------------------------------------------------------
# has_aux, extra args, errors
# ----------------------------------------------------------------------------

def mlp_loss(params, batch, temperature):
  hidden = jnp.tanh(batch["x"] @ params["w0"])
  pred = hidden @ params["w1"] / temperature
  per_example = jnp.sum((pred - batch["y"]) ** 2, axis=-1)
  return per_example.mean(), {"per_example": per_example,
                              "mean_abs_pred": jnp.abs(pred).mean()}


def mlp_problem():
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  params = {"w0": jax.random.normal(keys[0], (4, 8)),
            "w1": jax.random.normal(keys[1], (8, 2))}
  batch = {"x": jax.random.normal(keys[2], (8, 4)),
           "y": jax.random.normal(keys[3], (8, 2))}
  return params, batch


@functools.partial(jax.jit, static_argnums=(3, 4))
def hand_sam_with_aux(params, batch, temperature, rho, n_ascent):
  ascent = jax.grad(lambda p: mlp_loss(p, {k: v[:n_ascent] for k, v in batch.items()},
                                       temperature)[0])(params)
  norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree_util.tree_leaves(ascent)))
  perturbed = jax.tree_util.tree_map(lambda p, g: p + rho * g / (norm + 1e-12),
                                     params, ascent)
  return jax.value_and_grad(mlp_loss, has_aux=True)(perturbed, batch, temperature)


def test_has_aux_returns_the_descent_pass_aux_and_passes_args():
  params, batch = mlp_problem()
  grad_fn = jax.jit(sam_value_and_grad(mlp_loss, rho=0.1, ascent_fraction=0.5,
                                       has_aux=True))
  (loss, aux), grads = grad_fn(params, batch, 2.0)
  (e_loss, e_aux), e_grads = hand_sam_with_aux(params, batch, 2.0, 0.1, 4)
  np.testing.assert_allclose(loss, e_loss, rtol=1e-5)
  np.testing.assert_allclose(aux["per_example"], e_aux["per_example"], rtol=1e-5)
  np.testing.assert_allclose(aux["mean_abs_pred"], e_aux["mean_abs_pred"], rtol=1e-5)
  for g, e in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(e_grads)):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
  # The extra argument reached the loss: another temperature, another loss.
  (other, _), _ = grad_fn(params, batch, 1.0)
  assert abs(float(other) - float(loss)) > 1e-3


def test_micro_batched_aux_is_shaped_as_for_the_full_batch():
  params, batch = mlp_problem()
  grad_fn = jax.jit(sam_value_and_grad(mlp_loss, rho=0.1, ascent_fraction=0.5,
                                       has_aux=True, micro_batches=2))
  (loss, aux), _ = grad_fn(params, batch, 1.0)
  halves = [hand_sam_with_aux(params, {k: v[i * 4:(i + 1) * 4] for k, v in batch.items()},
                              1.0, 0.1, 2) for i in range(2)]
  np.testing.assert_allclose(loss, (halves[0][0][0] + halves[1][0][0]) / 2, rtol=1e-5)
  assert aux["per_example"].shape == (8,)
  np.testing.assert_allclose(
      aux["per_example"],
      np.concatenate([h[0][1]["per_example"] for h in halves]), rtol=1e-5)
  np.testing.assert_allclose(
      aux["mean_abs_pred"],
      (halves[0][0][1]["mean_abs_pred"] + halves[1][0][1]["mean_abs_pred"]) / 2,
      rtol=1e-5)


@pytest.mark.parametrize("kwargs", [
    dict(rho=0.0), dict(rho=-0.05), dict(rho=float("nan")), dict(rho="0.05"),
    dict(ascent_fraction=0.0), dict(ascent_fraction=1.5),
    dict(ascent_fraction=-0.2), dict(micro_batches=0), dict(micro_batches=1.5)])
def test_invalid_settings_raise_value_error(kwargs):
  with pytest.raises(ValueError):
    sam_value_and_grad(squared_error, **kwargs)


def test_batch_that_does_not_split_into_micro_batches_raises():
  _, _, params, batch = make_problem()
  grad_fn = sam_value_and_grad(squared_error, micro_batches=3)
  with pytest.raises(ValueError, match="micro_batches=3"):
    grad_fn(params, batch)


def test_axis_name_outside_shard_map_fails():
  _, _, params, batch = make_problem()
  grad_fn = sam_value_and_grad(squared_error, axis_name="data")
  with pytest.raises(NameError):
    jax.jit(grad_fn)(params, batch)


@pytest.mark.parametrize("batch,fraction,expected", [
    (10, 0.2, 2), (15, 0.2, 3), (11, 0.2, 3), (1, 0.2, 1), (32, 0.2, 7),
    (4096, 0.2, 820), (8, 1.0, 8)])
def test_ascent_batch_size_is_the_ceiling(batch, fraction, expected):
  assert ascent_batch_size(batch, fraction) == expected


# ----------------------------------------------------------------------------
# The real model
# ----------------------------------------------------------------------------

def test_sam_on_a_tiny_nfnet_then_sgd_agc():
  """SAM through flax apply with a dropout rng argument, then one SGD-AGC step."""
  model = NFNet(variant="F0", num_classes=5, width=0.125, depths=(1, 1, 1, 1),
                group_size=16, conv_impl="native")
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
  labels = jnp.arange(4) % 5
  # The model's parameter tree filled like its init (no init to compile),
  # with nonzero skip gains so that the perturbation reaches every block.
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images[:1])
                          ["params"])
  rng_np = np.random.default_rng(0)

  def fill(path, s):  # NumPy: eager jax ops would compile a kernel per shape
    name = str(path[-1].key)
    if name == "kernel":
      fan_in = math.prod(s.shape[:-1])
      return jnp.asarray(rng_np.normal(size=s.shape) / math.sqrt(fan_in),
                         jnp.float32)
    return jnp.asarray(np.full(s.shape, {"gain": 1.0, "skip_gain": 0.5}.get(
        name, 0.0)), jnp.float32)
  params = jax.tree_util.tree_map_with_path(fill, shapes)

  def loss_fn(p, batch, rng):
    logits = model.apply({"params": p}, batch["image"], is_training=True,
                         rngs={"dropout": rng})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return loss.mean(), jnp.argmax(logits, -1)

  rho = 0.5
  batch = {"image": images, "label": labels}
  rng = jax.random.PRNGKey(2)
  tx = optim.sgd_agc(0.1)

  @jax.jit
  def both(params):
    (loss, preds), grads = sam_value_and_grad(
        loss_fn, rho=rho, ascent_fraction=0.5, has_aux=True)(params, batch, rng)
    # By hand: the ascent gradient on the first 2 examples, then the descent
    # pass's value at the perturbed weights (its gradient is checked exactly
    # on the small models above; one more backward pass here costs seconds
    # of compilation).
    ascent = jax.grad(lambda p: loss_fn(p, {k: v[:2] for k, v in batch.items()},
                                        rng)[0])(params)
    norm = optax.global_norm(ascent)
    perturbed = jax.tree_util.tree_map(lambda p, g: p + rho * g / (norm + 1e-12),
                                       params, ascent)
    e_loss, e_preds = loss_fn(perturbed, batch, rng)
    plain_loss = loss_fn(params, batch, rng)[0]
    updates, _ = tx.update(grads, tx.init(params), params)
    return loss, preds, grads, e_loss, e_preds, plain_loss, updates

  loss, preds, grads, e_loss, e_preds, plain_loss, updates = both(params)
  np.testing.assert_allclose(loss, e_loss, rtol=1e-5)
  np.testing.assert_array_equal(preds, e_preds)
  assert abs(float(loss) - float(plain_loss)) > 1e-4  # the weights did move
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
  grads, updates = jax.device_get((grads, updates))
  assert all(np.all(np.isfinite(g)) and np.abs(g).max() > 0
             for g in jax.tree_util.tree_leaves(grads))
  # The SGD-AGC step on the SAM gradient is the NumPy reference optimizer's
  # (AGC per unit against the unperturbed weights, decay on kernels only,
  # Nesterov momentum from zero), leaf by leaf.
  reference = NumpySgdAgc(flatten(params), clipping=0.01, weight_decay=2e-5,
                          lr_fn=lambda step: 0.1)
  reference.step(flatten(grads))
  expected = {k: reference.params[k] - v for k, v in flatten(params).items()}
  ours = flatten(updates)
  assert ours.keys() == expected.keys()
  for name in ours:
    np.testing.assert_allclose(ours[name], expected[name], rtol=1e-4,
                               atol=1e-9, err_msg=name)
  assert sum(reference.clipped_units.values()) > 0  # AGC had work to do
