"""The train step's EMA, the classification losses, top-1 on soft targets and
stochastic depth, checked against values written out by hand (not the code's
own formulas); the batch / micro-batch check and the preemption guard."""
import math
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import multihost_utils

from nfnet import NFNet, layers
from nfnet.errors import UserError
from nfnet.train import parallel, preemption, training


# ----------------------------------------------------------------------------
# classification_loss
# ----------------------------------------------------------------------------

def test_softmax_loss_renormalises_multi_hot_targets():
  logits = jnp.asarray([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
  targets = jnp.asarray([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  # Row 0: two labels, 1/2 each: -(log p0 + log p1) / 2.
  z0 = math.log(math.exp(2) + 1 + math.exp(-1))
  row0 = -((2 - z0) + (0 - z0)) / 2
  z1 = math.log(2 * math.exp(0.5) + math.exp(3))
  row1 = -(3 - z1)
  loss = training.classification_loss(logits, targets, "softmax")
  np.testing.assert_allclose(float(loss), (row0 + row1) / 2, rtol=1e-6)


def test_sigmoid_loss_sums_binary_cross_entropy_over_classes():
  logits = jnp.asarray([[2.0, 0.0, -1.0], [0.5, -3.0, 3.0]])
  targets = jnp.asarray([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  sigmoid = lambda x: 1 / (1 + math.exp(-x))
  per_row = []
  for row_logits, row_targets in zip(logits.tolist(), targets.tolist()):
    per_row.append(-sum(t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x))
                        for x, t in zip(row_logits, row_targets)))
  loss = training.classification_loss(logits, targets, "sigmoid")
  np.testing.assert_allclose(float(loss), np.mean(per_row), rtol=1e-6)


def test_unknown_loss_kind_is_refused():
  with pytest.raises(ValueError, match="loss must be one of"):
    training.classification_loss(jnp.zeros((1, 2)), jnp.zeros((1, 2)), "hinge")


# ----------------------------------------------------------------------------
# Stochastic depth
# ----------------------------------------------------------------------------

def test_top1_counts_the_target_argmax_on_soft_targets():
  logits = jnp.array([[3.0, 1.0, 0.0, 0.0]] * 4)  # the model's top class is 0
  targets = jnp.array([
      [0.925, 0.025, 0.025, 0.025],  # label smoothing 0.1, true class 0: right
      [0.025, 0.925, 0.025, 0.025],  # smoothed, true class 1: wrong
      [0.3, 0.7, 0.0, 0.0],          # a MixUp pair, class 1 the larger share
      [1.0, 0.0, 1.0, 0.0],          # multi-hot: any true label counts
  ])
  np.testing.assert_array_equal(training.top1_correct(logits, targets),
                                [1.0, 0.0, 0.0, 1.0])
  # An even mix counts either class; a row without labels counts nothing.
  even = jnp.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(training.top1_correct(logits[:2], even), [1.0, 0.0])
  # Top-k is a hit among the k best.
  np.testing.assert_array_equal(
      training.topk_correct(logits, targets, 2), [1.0, 1.0, 1.0, 1.0])
  np.testing.assert_array_equal(
      training.topk_correct(logits[:1], jnp.array([[0.0, 0.0, 1.0, 0.0]]), 2), [0.0])


def _stochastic_depth(rate, x, is_training, seed=0):
  module = layers.StochasticDepth(rate)
  return module.apply({}, x, is_training, rngs={"dropout": jax.random.PRNGKey(seed)})


def test_stochastic_depth_drops_whole_examples_without_rescaling():
  batch, rate = 4000, 0.3
  x = jnp.asarray(np.random.default_rng(0).uniform(1, 2, (batch, 3, 3, 4)),
                  jnp.float32)
  out = np.asarray(_stochastic_depth(rate, x, True))
  kept = np.all(out == np.asarray(x), axis=(1, 2, 3))
  dropped = np.all(out == 0, axis=(1, 2, 3))
  # Every example is either untouched (no 1/keep factor) or entirely zero.
  assert np.all(kept | dropped)
  sigma = math.sqrt(rate * (1 - rate) / batch)
  assert abs(dropped.mean() - rate) < 4 * sigma
  # Per-example masks: not one draw for the whole batch.
  assert 0 < dropped.sum() < batch


def test_stochastic_depth_is_the_identity_at_eval():
  x = jnp.ones((64, 2, 2, 3))
  np.testing.assert_array_equal(_stochastic_depth(0.9, x, False), x)


def test_each_block_drops_its_branch_at_rate_i_over_n():
  """The rate `stochdepth_rate * i / N` reaches block i: recorded per call and
  measured as the share of examples whose branch came out all zero."""
  batch, rate = 512, 0.8
  model = NFNet(num_classes=3, stochdepth_rate=rate, variant="F0", width=0.125,
                depths=(1, 1, 1, 1), group_size=16, conv_impl="native")
  images = jax.random.normal(jax.random.PRNGKey(1), (batch, 16, 16, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])["params"]
  rates = []

  @jax.jit
  def branches_in_and_out(params, images):
    recorded = []

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if (isinstance(context.module, layers.StochasticDepth)
          and context.method_name == "__call__"):
        rates.append(context.module.rate)
        recorded.append((args[0], out))
      return out

    with nn.intercept_methods(record):
      model.apply({"params": params}, images, is_training=True,
                  rngs={"dropout": jax.random.PRNGKey(2)})
    return recorded

  recorded = branches_in_and_out(params, images)
  num_blocks = 4
  assert rates == pytest.approx([rate * i / num_blocks for i in range(num_blocks)])
  for block_rate, (branch, out) in zip(rates, recorded):
    branch_live = np.any(np.asarray(branch) != 0, axis=(1, 2, 3))
    dropped = np.all(np.asarray(out) == 0, axis=(1, 2, 3)) & branch_live
    share = dropped.sum() / branch_live.sum()
    sigma = math.sqrt(max(block_rate * (1 - block_rate), 1e-12) / batch)
    assert abs(share - block_rate) < 4 * sigma + 1e-9, (block_rate, share)


# ----------------------------------------------------------------------------
# EMA inside the train step
# ----------------------------------------------------------------------------

@pytest.mark.slow
def test_train_step_ema_averages_post_update_params_with_warmed_up_decay(
    tiny_nfnet_kwargs):
  model = NFNet(num_classes=3, drop_rate=0.0, stochdepth_rate=0.0,
                **tiny_nfnet_kwargs)
  mesh = parallel.make_data_mesh()
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
  tx = optax.sgd(0.5)
  decay = 0.5
  state = training.create_train_state(params, tx, use_ema=True)
  step = training.make_train_step(model, tx, mesh, ema_decay=decay)
  rng = np.random.default_rng(0)
  batch = parallel.to_global_batch(
      {"image": rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
       "label": rng.integers(0, 3, (4,)).astype(np.int32)}, mesh)
  flat = lambda tree: [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]
  expected_ema = flat(params)
  for t in range(3):
    state, _ = step(state, batch)
    # The step index t of the update just applied: min(decay, (1+t)/(10+t))
    # is 0.1, 2/11, 3/12 here (warm-up), so the cap of 0.5 is never reached.
    d = min(decay, (1 + t) / (10 + t))
    new_params = flat(state.params)
    expected_ema = [d * e + (1 - d) * p for e, p in zip(expected_ema, new_params)]
    got = flat(state.ema_params)
    for e, g in zip(expected_ema, got):
      np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)
  assert int(state.step) == 3
  # The EMA really lags the weights (the check above is not trivially equal).
  assert max(float(np.max(np.abs(e - p)))
             for e, p in zip(flat(state.ema_params), flat(state.params))) > 1e-4


# ----------------------------------------------------------------------------
# Virtual replica ids (the per-micro-batch dropout keys; the masks themselves
# are checked on 8 devices in test_training_sharded.py)
# ----------------------------------------------------------------------------

def test_virtual_replica_ids_follow_device_and_micro_batch():
  ids = training.virtual_replica_ids(8, 4, 2)
  np.testing.assert_array_equal(ids, [8, 8, 9, 9, 10, 10, 11, 11])
  np.testing.assert_array_equal(training.virtual_replica_ids(4, 1, 3), [3, 3, 3, 3])


def test_a_batch_its_micro_batches_cannot_split_is_refused_with_the_numbers():
  mesh = parallel.make_data_mesh()
  batch = 12 * mesh.devices.size  # 12 per device
  parallel.check_batch_divisible(batch, mesh, micro_batches=3)
  with pytest.raises(UserError, match="per-device batch of 12 .* micro_batches=5"):
    parallel.check_batch_divisible(batch, mesh, micro_batches=5)
  with pytest.raises(UserError, match="positive int, got 0"):
    parallel.check_batch_divisible(batch, mesh, micro_batches=0)


class _NoticeAt:
  """A checkpoint manager whose preemption notice arrives at one step."""

  def __init__(self, step):
    self.step = step

  def reached_preemption(self, step):
    return step == self.step


@pytest.mark.parametrize("processes", [1, 2])
def test_preemption_guard_stops_at_the_notice_step_and_on_a_signal(
    monkeypatch, processes):
  monkeypatch.setattr(preemption.jax, "process_count", lambda: processes)
  gathered = []
  monkeypatch.setattr(multihost_utils, "process_allgather",
                      lambda x: gathered.append(int(x)) or np.array([x]))
  before = signal.getsignal(signal.SIGINT)
  with preemption.PreemptionGuard() as guard:
    assert signal.getsignal(signal.SIGINT) == guard._handle  # pylint: disable=protected-access
    # Orbax's notice is the same step everywhere: stop there, no collective.
    assert [guard.should_stop(_NoticeAt(7), s) for s in (6, 7)] == [False, True]
    assert gathered == []
    guard.requested = True  # what SIGTERM sets
    if processes == 1:
      assert guard.should_stop(_NoticeAt(None), 11)
    else:  # hosts agree on a signal every 10 steps
      assert not guard.should_stop(_NoticeAt(None), 11)
      assert guard.should_stop(_NoticeAt(None), 20) and gathered == [1]
  # After the run Ctrl-C is the caller's again.
  assert signal.getsignal(signal.SIGINT) == before


# ----------------------------------------------------------------------------
# Flip-averaged evaluation
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_flip_average_scores_the_mean_of_an_image_and_its_mirror(loss):
  """flip_top1 is the argmax of the mean class probability of each image and
  its left-right mirror, computed here with numpy; the plain top-1 is kept."""
  model = NFNet(num_classes=6, variant="F0", width=0.125, depths=(1, 1, 1, 1),
                group_size=16, conv_impl="native")
  batch = 48
  images = np.asarray(jax.random.uniform(jax.random.PRNGKey(3), (batch, 16, 16, 3),
                                         maxval=255.0), np.float32)
  labels = np.asarray(jax.random.randint(jax.random.PRNGKey(4), (batch,), 0, 6))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])["params"]
  # A freshly initialised head gives logits of about 0.2: scale them to about
  # 2 so that the images' predictions differ.
  params["classifier"]["kernel"] = params["classifier"]["kernel"] * 10.0

  apply = jax.jit(lambda x: model.apply({"params": params},
                                        training.normalize_images(x),
                                        is_training=False))
  logits_of = lambda x: np.asarray(apply(np.ascontiguousarray(x)), np.float64)

  def probabilities(logits):
    if loss == "sigmoid":
      return 1 / (1 + np.exp(-logits))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  plain = logits_of(images)
  mirrored_lr = probabilities(plain) + probabilities(logits_of(images[:, :, ::-1]))
  mirrored_ud = probabilities(plain) + probabilities(logits_of(images[:, ::-1]))
  expected = lambda scores: float(np.sum(scores.argmax(-1) == labels))
  for scores in (plain, mirrored_lr):  # no near-ties that float32 could flip
    top_two = np.sort(scores, axis=-1)[:, -2:]
    assert np.all(top_two[:, 1] - top_two[:, 0] > 1e-4)
  # The check can tell the width axis from the height axis.
  assert expected(mirrored_lr) != expected(mirrored_ud)

  mesh = parallel.make_data_mesh()
  step = training.make_eval_step(model, mesh, topk=5, flip_average=True, loss=loss)
  sums = step(params, parallel.to_global_batch(
      {"image": images, "label": labels, "mask": np.ones(batch, bool)}, mesh))
  assert float(sums["top1"]) == expected(plain)
  assert float(sums["flip_top1"]) == expected(mirrored_lr)
  assert float(sums["count"]) == batch
  assert "flip_top1" not in training.make_eval_step(model, mesh)(
      params, parallel.to_global_batch(
          {"image": images, "label": labels, "mask": np.ones(batch, bool)}, mesh))
