"""nfnet.optim against an independent NumPy transcription of docs/reference.md section 3.

The reference step, per leaf, in float64:
  AGC on the raw gradient (all leaves but classifier/kernel), then `g + wd * p`
  (kernels only), then `m = mu * m + g; u = g + mu * m; p -= lr(t) * u`.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nfnet import NFNet, model as model_lib
from nfnet import optim
from nfnet.errors import UserError

LR_PEAK, WARMUP, TOTAL = 0.4, 2, 6
# Weight decay far above the paper's 2e-5, so that decaying the wrong leaf shows.
MOMENTUM, WD, CLIP, EPS = 0.9, 5e-3, 0.01, 1e-3


# ----------------------------------------------------------------------------
# The NumPy reference
# ----------------------------------------------------------------------------

def np_lr(t):
  """Linear warmup 0 -> peak over WARMUP steps, cosine to 0 at TOTAL."""
  if t <= WARMUP:
    return LR_PEAK * t / WARMUP
  return LR_PEAK * 0.5 * (1 + math.cos(math.pi * (t - WARMUP) / (TOTAL - WARMUP)))


def np_unitwise_norm(x):
  """One norm per output unit (all axes but the last); whole norm for vectors."""
  if x.ndim <= 1:
    return np.sqrt(np.sum(x ** 2))
  return np.sqrt(np.sum(x ** 2, axis=tuple(range(x.ndim - 1)), keepdims=True))


def flatten(tree):
  return {"/".join(str(k.key) for k in path): np.asarray(leaf, np.float64)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


class NumpySgdAgc:
  """The reference optimizer on a flat {path: array} dict, counting clips."""

  def __init__(self, params, *, clipping=CLIP, weight_decay=WD, lr_fn=None):
    self.lr_fn = lr_fn or np_lr
    self.params = dict(params)
    self.momentum = {k: np.zeros_like(v) for k, v in params.items()}
    self.clipping, self.weight_decay = clipping, weight_decay
    self.step_count = 0
    self.clipped_units = {k: 0 for k in params}   # units that clipped
    self.unclipped_units = {k: 0 for k in params}
    self.would_clip_head = 0  # classifier/kernel units over the AGC threshold

  def agc(self, name, g, p):
    g_norm = np_unitwise_norm(g)
    max_norm = self.clipping * np.maximum(np_unitwise_norm(p), EPS)
    trigger = np.broadcast_to(g_norm > max_norm, np.shape(g_norm))
    if name == "classifier/kernel":
      self.would_clip_head += int(trigger.sum())
      return g
    self.clipped_units[name] += int(trigger.sum())
    self.unclipped_units[name] += int((~trigger).sum())
    return np.where(trigger, g * max_norm / np.maximum(g_norm, 1e-6), g)

  def step(self, grads):
    lr = self.lr_fn(self.step_count)
    for name, p in self.params.items():
      g = grads[name]
      if self.clipping is not None:
        g = self.agc(name, g, p)
      if self.weight_decay and name.rsplit("/", 1)[-1] == "kernel":
        g = g + self.weight_decay * p
      self.momentum[name] = MOMENTUM * self.momentum[name] + g
      update = g + MOMENTUM * self.momentum[name]
      self.params[name] = p - lr * update
    self.step_count += 1


# ----------------------------------------------------------------------------
# Parameter trees
# ----------------------------------------------------------------------------

def hand_made_nfnet_params(rng):
  """A one-block NFNet tree with the model's exact names and layouts."""
  def conv(kh, cin, cout):
    return {"kernel": rng.normal(size=(kh, kh, cin, cout)) / math.sqrt(kh * kh * cin),
            "gain": 1.0 + 0.1 * rng.normal(size=(cout,)),
            "bias": 0.1 * rng.normal(size=(cout,))}

  def dense(cin, cout):
    return {"kernel": rng.normal(size=(cin, cout)) / math.sqrt(cin),
            "bias": 0.1 * rng.normal(size=(cout,))}

  tree = {
      "stem_conv0": conv(3, 3, 4), "stem_conv1": conv(3, 4, 8),
      "stem_conv2": conv(3, 8, 8), "stem_conv3": conv(3, 8, 8),
      "nf_block_0": {"conv0": conv(1, 8, 8), "conv1": conv(3, 4, 8),
                     "conv1b": conv(3, 4, 8), "conv2": conv(1, 8, 16),
                     "conv_shortcut": conv(1, 8, 16),
                     "squeeze_excite": {"fc0": dense(16, 8), "fc1": dense(8, 16)},
                     "skip_gain": np.asarray(0.3)},
      "final_conv": conv(1, 16, 32),
      "classifier": dense(32, 5),
  }
  return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), tree)


def tiny_nfnet(variant="F0", num_classes=5):
  kwargs = dict(variant=variant, num_classes=num_classes, width=0.125,
                depths=(1, 1, 1, 1))
  if variant == "F0":
    kwargs["group_size"] = 16
  return NFNet(**kwargs)


def model_params(model, seed=0):
  """The model's real parameter tree (names, shapes), filled like its init:
  fan-in scaled kernels, unit gains, zero biases and zero skip gains.

  Built from `jax.eval_shape` so no model code is compiled here.
  """
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), is_training=False)["params"])
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = str(path[-1].key)
    if name == "kernel":
      return jnp.asarray(rng.normal(size=s.shape) / math.sqrt(
          np.prod(s.shape[:-1])), jnp.float32)
    if name == "gain":
      return jnp.ones(s.shape, jnp.float32)
    return jnp.zeros(s.shape, jnp.float32)  # bias, skip_gain
  return jax.tree_util.tree_map_with_path(fill, shapes)


def random_grads(params, rng, head_scale=1e3):
  """Gradients whose unit norms straddle AGC's threshold.

  Every unit gets a random size between 1e-4 and 1e-1 times its weight norm
  (the threshold is 1e-2), so some units clip and some do not; the classifier
  kernel's gradient is made huge so that clipping it would show.
  """
  def one(path, p):
    p = np.asarray(p, np.float64)
    unit_shape = (1,) * (p.ndim - 1) + p.shape[-1:] if p.ndim else ()
    size = 10.0 ** rng.uniform(-4, -1, size=unit_shape)
    g = rng.normal(size=p.shape)
    g = g / np.maximum(np_unitwise_norm(g), 1e-12)
    g = g * size * np.maximum(np_unitwise_norm(p), EPS)
    if jax.tree_util.keystr(path).endswith("['classifier']['kernel']"):
      g = g * head_scale
    return jnp.asarray(g, jnp.float32)
  return jax.tree_util.tree_map_with_path(one, params)


def run_both(params, grad_seq, **kwargs):
  kwargs = {"clipping": CLIP, "weight_decay": WD, **kwargs}
  schedule = optim.warmup_cosine_schedule(LR_PEAK, warmup_steps=WARMUP,
                                          total_steps=TOTAL)
  tx = optim.sgd_agc(schedule, momentum=MOMENTUM, **kwargs)
  reference = NumpySgdAgc(flatten(params), **kwargs)
  @jax.jit  # one program per step: eager per-leaf ops would compile per shape
  def step(grads, state, params):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = jax.jit(tx.init)(params)
  for grads in grad_seq:
    params, state = step(grads, state, params)
    reference.step(flatten(grads))
  return params, state, reference


def assert_trees_close(ours, reference_flat, rtol=2e-5, atol=1e-7):
  ours = flatten(ours)
  assert ours.keys() == reference_flat.keys()
  for name in ours:
    np.testing.assert_allclose(ours[name], reference_flat[name], rtol=rtol,
                               atol=atol, err_msg=name)


# ----------------------------------------------------------------------------
# sgd_agc against the reference
# ----------------------------------------------------------------------------

def test_sgd_agc_matches_numpy_reference_over_several_steps():
  rng = np.random.default_rng(0)
  params = hand_made_nfnet_params(rng)
  grad_seq = [random_grads(params, rng) for _ in range(5)]
  ours, state, reference = run_both(params, grad_seq)
  assert_trees_close(ours, reference.params)
  # The case mix is real: every clipped leaf saw units clip and units pass,
  # and the head's kernel was far over the threshold but left alone.
  clipped = {k: v for k, v in reference.clipped_units.items()
             if k != "classifier/kernel"}
  assert sum(v > 0 for v in clipped.values()) >= len(clipped) // 2
  assert sum(reference.unclipped_units.values()) > 0
  assert reference.clipped_units["classifier/bias"] + \
      reference.unclipped_units["classifier/bias"] == 5
  assert reference.would_clip_head > 0
  # Optimizer state: the momentum buffer and the schedule's counter.
  trace = [s for s in jax.tree_util.tree_leaves(
      state, is_leaf=lambda s: isinstance(s, optax.TraceState))
           if isinstance(s, optax.TraceState)]
  assert len(trace) == 1
  assert all(m.dtype == jnp.float32 for m in jax.tree_util.tree_leaves(trace[0]))
  assert_trees_close(trace[0].trace, reference.momentum, rtol=1e-4)


@pytest.mark.parametrize("variant", ["F0", "NF-ResNet-50"])
def test_sgd_agc_matches_reference_on_real_model_trees(variant):
  """Init-like values: unit gains, and zero biases and skip gains, whose AGC
  threshold is the eps floor (clipping * 1e-3)."""
  params = model_params(tiny_nfnet(variant))
  rng = np.random.default_rng(1)
  grad_seq = [random_grads(params, rng) for _ in range(4)]
  ours, _, reference = run_both(params, grad_seq)
  assert_trees_close(ours, reference.params)
  assert sum(v for k, v in reference.clipped_units.items()
             if k.endswith(("bias", "skip_gain"))) > 0
  assert sum(reference.unclipped_units.values()) > 0


@pytest.mark.parametrize("clipping,weight_decay", [(None, WD), (CLIP, 0.0),
                                                   (None, 0.0)])
def test_sgd_agc_switches_match_reference(clipping, weight_decay):
  rng = np.random.default_rng(2)
  params = hand_made_nfnet_params(rng)
  grad_seq = [random_grads(params, rng) for _ in range(3)]
  ours, _, reference = run_both(params, grad_seq, clipping=clipping,
                                weight_decay=weight_decay)
  assert_trees_close(ours, reference.params)


def test_first_step_closed_form_per_leaf_kind():
  """One step at constant lr: u = (1 + mu) * g' with g' the clipped+decayed grad."""
  lr = 0.5
  params = {"conv": {"kernel": jnp.ones((1, 1, 2, 2)), "gain": jnp.ones((2,)),
                     "bias": jnp.ones((2,))},
            "nf_block_0": {"skip_gain": jnp.asarray(2.0)},
            "classifier": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}}
  # Unit norms: kernel units sqrt(2), vectors sqrt(2), scalar 2 -> thresholds
  # 0.01 * those. Gradients of 3 per entry are far above every threshold.
  grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 3.0), params)
  tx = optim.sgd_agc(lr, weight_decay=0.1)
  updates, _ = tx.update(grads, tx.init(params), params)
  u = jax.tree_util.tree_map(lambda x: np.asarray(x) / (-lr * 1.9), updates)
  clipped_vec = 0.01 * math.sqrt(2) / math.sqrt(2 * 9) * 3.0  # per entry
  np.testing.assert_allclose(u["conv"]["kernel"], clipped_vec + 0.1, rtol=1e-6)
  np.testing.assert_allclose(u["conv"]["gain"], clipped_vec, rtol=1e-6)
  np.testing.assert_allclose(u["conv"]["bias"], clipped_vec, rtol=1e-6)
  np.testing.assert_allclose(u["nf_block_0"]["skip_gain"], 0.01 * 2.0, rtol=1e-6)
  np.testing.assert_allclose(u["classifier"]["kernel"], 3.0 + 0.1, rtol=1e-6)
  np.testing.assert_allclose(u["classifier"]["bias"], clipped_vec, rtol=1e-6)


def test_agc_eps_floors_zero_initialised_parameters():
  """A zero weight still lets through a gradient of norm clipping * eps."""
  params = {"conv": {"bias": jnp.zeros((4,))}}
  grads = {"conv": {"bias": jnp.full((4,), 1.0)}}
  tx = optim.sgd_agc(1.0, momentum=0.0, weight_decay=0.0, clipping=0.01)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(np.linalg.norm(updates["conv"]["bias"]), 0.01 * 1e-3,
                             rtol=1e-6)


def test_momentum_state_is_float32_for_bfloat16_params_and_grads():
  params = {"conv": {"kernel": jnp.ones((1, 1, 2, 2), jnp.bfloat16)}}
  grads = {"conv": {"kernel": jnp.full((1, 1, 2, 2), 1e-3, jnp.bfloat16)}}
  tx = optim.sgd_agc(0.1)
  state = tx.init(params)
  _, state = tx.update(grads, state, params)
  dtypes = {x.dtype for x in jax.tree_util.tree_leaves(state)
            if jnp.issubdtype(x.dtype, jnp.floating)}
  assert dtypes == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("kwargs", [dict(momentum=1.0), dict(momentum=-0.1),
                                    dict(weight_decay=-1e-5), dict(clipping=0.0),
                                    dict(clipping=-0.01), dict(eps=0.0)])
def test_sgd_agc_rejects_invalid_hyperparameters(kwargs):
  with pytest.raises(ValueError):
    optim.sgd_agc(0.1, **kwargs)


# ----------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------

def masked_paths(mask_tree, value):
  return {"/".join(str(k.key) for k in path)
          for path, leaf in jax.tree_util.tree_leaves_with_path(mask_tree)
          if leaf is value}


@pytest.mark.parametrize("variant", ["F0", "NF-ResNet-50"])
def test_masks_on_real_model_trees(variant):
  params = model_params(tiny_nfnet(variant))
  paths = set(flatten(jax.tree_util.tree_map(lambda s: np.zeros(()), params)))
  kernels = {p for p in paths if p.endswith("/kernel")}
  decayed = masked_paths(optim.weight_decay_mask(params), True)
  assert decayed == kernels
  assert not any(p.endswith(("gain", "bias")) for p in decayed)
  assert any("skip_gain" in p for p in paths - decayed)
  assert masked_paths(optim.agc_mask(params), False) == {"classifier/kernel"}
  if variant == "F0":
    assert "nf_block_0/squeeze_excite/fc0/kernel" in decayed
    assert "nf_block_0/squeeze_excite/fc0/bias" not in decayed
  assert "classifier/bias" not in decayed
  assert "classifier/kernel" in decayed


def test_masks_follow_a_freshly_attached_head():
  """Head surgery (new class count) keeps the rule, and the optimizer runs."""
  params = model_params(tiny_nfnet(num_classes=5))
  new_head = model_params(tiny_nfnet(num_classes=11), seed=1)["classifier"]
  params = {**params, "classifier": new_head}
  assert params["classifier"]["kernel"].shape[-1] == 11
  assert masked_paths(optim.agc_mask(params), False) == {"classifier/kernel"}
  tx = optim.sgd_agc(0.1)
  grads = jax.tree_util.tree_map(lambda p: np.full(p.shape, 10.0, np.float32),
                                 params)
  updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
  # The unclipped head kernel moves by lr * (1 + mu) * (10 + wd * w).
  expected = -0.1 * 1.9 * (10.0 + 2e-5 * params["classifier"]["kernel"])
  np.testing.assert_allclose(updates["classifier"]["kernel"], expected, rtol=1e-6)
  assert float(jnp.max(jnp.abs(updates["classifier"]["bias"]))) < 1.0


def test_lr_multipliers_scale_whole_steps_of_matched_leaves_only():
  """Two optimizers on the same gradients: sgd_agc alone, and chained with
  multipliers. Matched leaves move by exactly multiplier x the plain step
  (weight decay included) at every step; the others by the plain step."""
  rng = np.random.default_rng(3)
  params = hand_made_nfnet_params(rng)
  grad_seq = [random_grads(params, rng) for _ in range(3)]
  plain = optim.sgd_agc(0.3, weight_decay=WD, clipping=CLIP)
  scaled = optax.chain(optim.sgd_agc(0.3, weight_decay=WD, clipping=CLIP),
                       optim.scale_by_lr_multipliers(
                           [("stem_conv0/.*", 0.5), ("stem_conv.*", 3.0),
                            ("nf_block_0/.*", 2.0)]))
  plain_state, scaled_state = plain.init(params), scaled.init(params)
  for grads in grad_seq:
    ours, plain_state = plain.update(grads, plain_state, params)
    theirs, scaled_state = scaled.update(grads, scaled_state, params)
    for path, u in jax.tree_util.tree_flatten_with_path(ours)[0]:
      name = optim.path_string(path)
      # First match wins: stem_conv0 takes 0.5, the other stem convs 3.
      factor = (0.5 if name.startswith("stem_conv0/") else
                3.0 if name.startswith("stem_conv") else
                2.0 if name.startswith("nf_block_0/") else 1.0)
      other = theirs
      for key in name.split("/"):
        other = other[key]
      np.testing.assert_allclose(np.asarray(other), factor * np.asarray(u),
                                 rtol=1e-6, err_msg=name)
  names = [optim.path_string(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(params)[0]]
  assert any(n.startswith("stem_conv") for n in names)
  assert any(n.startswith("nf_block_0/") for n in names)


def test_lr_multipliers_refuse_a_pattern_that_matches_nothing():
  params = hand_made_nfnet_params(np.random.default_rng(4))
  with pytest.raises(UserError, match=r"\['stem_cnv.\*'\] match no parameter"):
    optim.scale_by_lr_multipliers([("stem_cnv.*", 0.5)]).init(params)
  # Patterns match whole paths: a module name alone is not a leaf's path.
  with pytest.raises(UserError, match="match no parameter"):
    optim.lr_multiplier_tree(params, [("nf_block_0", 0.5)])


def _centred_unit_norms(kernel) -> np.ndarray:
  units = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
  return np.linalg.norm(units - units.mean(axis=0), axis=0)


def test_fix_ws_kernel_norm_marks_exactly_the_weight_standardised_kernels(
    tiny_nfnet_kwargs):
  model = NFNet(num_classes=3, **tiny_nfnet_kwargs)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
  marked = {optim.path_string(path) for path, is_ws in
            jax.tree_util.tree_flatten_with_path(optim.ws_kernel_mask(params))[0]
            if is_ws}
  # Every conv of the stem, the blocks (shortcut included) and the final
  # conv; no dense kernel (squeeze-excite, classifier), gain or bias.
  convs = {name for name in (optim.path_string(path) for path, _ in
                             jax.tree_util.tree_flatten_with_path(params)[0])
           if name.endswith("/kernel") and "squeeze_excite" not in name
           and not name.startswith("classifier/")}
  assert marked == convs
  assert {"stem_conv0/kernel", "nf_block_0/conv_shortcut/kernel",
          "final_conv/kernel"} <= marked


def test_fix_ws_kernel_norm_holds_the_norm_and_leaves_the_rest_alone():
  """Chained after sgd_agc: each WS kernel ends every step with centred
  units of the set norm, pointing where the plain step took them; every
  other leaf moves exactly as under sgd_agc alone."""
  rng = np.random.default_rng(5)
  params = hand_made_nfnet_params(rng)
  plain = optim.sgd_agc(0.3, weight_decay=WD, clipping=CLIP)
  fixed = optax.chain(optim.sgd_agc(0.3, weight_decay=WD, clipping=CLIP),
                      optim.fix_ws_kernel_norm(2.0))
  plain_state, fixed_state = plain.init(params), fixed.init(params)
  mask = optim.ws_kernel_mask(params)
  assert sum(jax.tree_util.tree_leaves(mask)) >= 3
  for _ in range(3):
    grads = random_grads(params, rng)
    ours, plain_state = plain.update(grads, plain_state, params)
    theirs, fixed_state = fixed.update(grads, fixed_state, params)
    stepped = optax.apply_updates(params, ours)
    projected = optax.apply_updates(params, theirs)
    for (path, p_plain), p_fixed, is_ws in zip(
        jax.tree_util.tree_flatten_with_path(stepped)[0],
        jax.tree_util.tree_leaves(projected), jax.tree_util.tree_leaves(mask)):
      name = optim.path_string(path)
      if not is_ws:
        np.testing.assert_allclose(p_fixed, p_plain, rtol=1e-6, err_msg=name)
        continue
      np.testing.assert_allclose(_centred_unit_norms(p_fixed), 2.0, rtol=1e-5,
                                 err_msg=name)
      units = np.asarray(p_plain).reshape(-1, p_plain.shape[-1])
      direction = units - units.mean(axis=0)
      np.testing.assert_allclose(
          np.asarray(p_fixed).reshape(units.shape),
          2.0 * direction / np.linalg.norm(direction, axis=0), atol=1e-5,
          err_msg=name)
    params = projected


def test_ws_kernel_norms_do_not_change_what_the_model_computes(
    tiny_nfnet_kwargs):
  """The fixed norm's projection (a zero step) and `ws_kernels_at_norm` (as
  a fine-tune's loaded weights get it) move every WS kernel to centred units
  of the norm, leave every other leaf as it was, and the logits alone."""
  model = NFNet(num_classes=3, **tiny_nfnet_kwargs)
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  params = model.init(jax.random.PRNGKey(0), images)["params"]
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  tx = optim.fix_ws_kernel_norm(3.0)
  updates, _ = tx.update(zero, tx.init(params), params)
  mask = optim.ws_kernel_mask(params)
  for moved in (optax.apply_updates(params, updates),
                optim.ws_kernels_at_norm(params, 3.0)):
    for (path, new), old, is_ws in zip(
        jax.tree_util.tree_flatten_with_path(moved)[0],
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mask)):
      if is_ws:
        np.testing.assert_allclose(_centred_unit_norms(new), 3.0, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(new).reshape(-1, new.shape[-1])
                                   .mean(axis=0), 0.0, atol=1e-6)
      else:
        np.testing.assert_array_equal(new, old, optim.path_string(path))
    np.testing.assert_allclose(model.apply({"params": moved}, images),
                               model.apply({"params": params}, images),
                               rtol=2e-4, atol=2e-4)


def test_a_ws_kernel_norm_must_be_positive():
  with pytest.raises(UserError, match="must be positive"):
    optim.ws_kernels_at_norm({"conv": {"kernel": jnp.ones((1, 1, 1, 2)),
                                       "gain": jnp.ones((2,))}}, 0.0)
  with pytest.raises(UserError, match="must be positive"):
    optim.fix_ws_kernel_norm(-1.0)


def test_classifier_name_agrees_with_the_model():
  assert optim.CLASSIFIER == model_lib.CLASSIFIER


def test_agc_clip_fraction_counts_clipped_units():
  params = {"conv": {"kernel": jnp.ones((1, 1, 2, 4)), "gain": jnp.ones((4,))},
            "classifier": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}}
  # Kernel units have norm sqrt(2): threshold 0.01 * sqrt(2). Units 0 and 1
  # get gradient norm sqrt(2) (clip), units 2 and 3 get 1e-4 (pass).
  kernel_grad = jnp.ones((1, 1, 2, 4)).at[..., 2:].set(1e-4 / math.sqrt(2))
  grads = {"conv": {"kernel": kernel_grad, "gain": jnp.full((4,), 1e-5)},
           "classifier": {"kernel": jnp.full((2, 2), 1e3),
                          "bias": jnp.full((2,), 1.0)}}
  # Clipped entries: 4 of the kernel's 8 and both of the classifier bias'
  # (the gain passes, the head kernel does not count): 6 of 14.
  fraction = optim.agc_clip_fraction(grads, params, 0.01)
  np.testing.assert_allclose(fraction, 6 / 14, rtol=1e-6)


# ----------------------------------------------------------------------------
# Schedules and durations
# ----------------------------------------------------------------------------

def test_warmup_cosine_schedule_values_at_known_steps():
  schedule = optim.warmup_cosine_schedule(0.4, warmup_steps=5, total_steps=25)
  expected = {0: 0.0, 1: 0.08, 4: 0.32, 5: 0.4, 10: 0.2 * (1 + math.cos(math.pi / 4)),
              15: 0.2, 20: 0.2 * (1 - math.cos(math.pi / 4)), 25: 0.0, 40: 0.0}
  for step, value in expected.items():
    np.testing.assert_allclose(float(schedule(step)), value, atol=1e-7,
                               err_msg=f"step {step}")


def test_warmup_cosine_schedule_without_warmup_and_errors():
  schedule = optim.warmup_cosine_schedule(1.0, warmup_steps=0, total_steps=10)
  np.testing.assert_allclose([float(schedule(t)) for t in (0, 5, 10)],
                             [1.0, 0.5, 0.0], atol=1e-7)
  with pytest.raises(ValueError, match="warmup_steps"):
    optim.warmup_cosine_schedule(1.0, warmup_steps=10, total_steps=10)
  with pytest.raises(ValueError, match="total_steps"):
    optim.warmup_cosine_schedule(1.0, warmup_steps=0, total_steps=0)


def test_scale_learning_rate_is_the_papers_rule():
  assert optim.scale_learning_rate(0.1, 4096) == pytest.approx(1.6)
  assert optim.scale_learning_rate(0.1, 256) == pytest.approx(0.1)
  assert optim.scale_learning_rate(0.1, 1024) == pytest.approx(0.4)
  with pytest.raises(ValueError):
    optim.scale_learning_rate(0.1, 0)


IMAGENET_TRAIN = 1_281_167


def test_duration_to_steps_converts_each_unit():
  assert optim.duration_to_steps(epochs=360, batch_size=4096,
                                 num_examples=IMAGENET_TRAIN) == 112_602
  assert optim.duration_to_steps(epochs=5, batch_size=4096,
                                 num_examples=IMAGENET_TRAIN) == 1_563
  assert optim.duration_to_steps(steps=15_000, batch_size=2048) == 15_000
  assert optim.duration_to_steps(examples=10_000, batch_size=4096) == 2
  # Float error in epochs * examples must not lose a step (0.3 * 10 < 3).
  assert optim.duration_to_steps(epochs=0.3, batch_size=1,
                                 num_examples=10) == 3
  assert optim.duration_to_steps(batch_size=8, name="warmup", default=0) == 0


def test_duration_to_steps_refuses_two_units_and_missing_inputs():
  with pytest.raises(ValueError, match="only one of total_steps, total_epochs"):
    optim.duration_to_steps(steps=10, epochs=1.0, batch_size=8,
                            num_examples=80, name="total")
  with pytest.raises(ValueError, match="Set one of"):
    optim.duration_to_steps(batch_size=8, name="total")
  with pytest.raises(ValueError, match="num_examples"):
    optim.duration_to_steps(epochs=1.0, batch_size=8)
  with pytest.raises(ValueError, match="warmup_steps"):
    optim.duration_to_steps(steps=-1, batch_size=8, name="warmup")
  with pytest.raises(ValueError, match="whole number"):
    optim.duration_to_steps(steps=2.5, batch_size=8)


# ----------------------------------------------------------------------------
# EMA
# ----------------------------------------------------------------------------

def test_ema_decay_warmup_values():
  np.testing.assert_allclose(optim.ema_decay(0, 0.99999), 0.1, rtol=1e-6)
  np.testing.assert_allclose(optim.ema_decay(1, 0.99999), 2 / 11, rtol=1e-6)
  np.testing.assert_allclose(optim.ema_decay(90, 0.99999), 0.91, rtol=1e-6)
  np.testing.assert_allclose(optim.ema_decay(10**6, 0.9999), 0.9999, rtol=1e-7)
  # The warmup reaches 0.9999 only at t = 89,990.
  assert float(optim.ema_decay(80_000, 0.9999)) < 0.9999


def test_update_ema_sequence_matches_numpy_and_stays_float32():
  rng = np.random.default_rng(3)
  trajectory = [rng.normal(size=(3, 4)) for _ in range(6)]
  ema = {"w": jnp.asarray(trajectory[0], jnp.bfloat16)}
  ema = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), ema)
  expected = np.asarray(ema["w"], np.float64)
  update = jax.jit(optim.update_ema, static_argnums=3)
  for step, params in enumerate(trajectory[1:]):
    ema = update(ema, {"w": jnp.asarray(params, jnp.bfloat16)},
                 jnp.asarray(step, jnp.int32), 0.999)
    params_bf16 = np.asarray(jnp.asarray(params, jnp.bfloat16), np.float64)
    d = min(0.999, (1 + step) / (10 + step))
    expected = d * expected + (1 - d) * params_bf16
    assert ema["w"].dtype == jnp.float32
    np.testing.assert_allclose(ema["w"], expected, rtol=1e-5, atol=1e-6)
