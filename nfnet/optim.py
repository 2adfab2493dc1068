"""The NFNet optimizer: SGD with Nesterov momentum and Adaptive Gradient Clipping.

    schedule = warmup_cosine_schedule(scale_learning_rate(0.1, 4096),
                                      warmup_steps=1_563, total_steps=112_602)
    tx = sgd_agc(schedule, weight_decay=2e-5, clipping=0.01)
    updates, opt_state = tx.update(grads, opt_state, params)   # params required
    params = optax.apply_updates(params, updates)
    ema_params = update_ema(ema_params, params, step, decay=0.99999)

One step, per parameter leaf, exactly as the DeepMind reference
(`nfnets/optim.py: SGD_AGC`, docs/reference.md section 3):

    g = agc(g, p)          unit-wise clipping of the raw gradient (not classifier/kernel)
    g = g + wd * p         coupled weight decay (kernels only)
    m = momentum * m + g   PyTorch-style Nesterov momentum, m kept in float32
    u = g + momentum * m
    p = p - lr(step) * u

Which leaves are clipped and which are decayed is decided from the parameter
path alone (`agc_mask`, `weight_decay_mask`), so the rule holds for every NFNet
and NF-ResNet and for a freshly attached head, which is also named
`classifier`.

Also here: per-module learning rates, weight-standardised kernels held at a
fixed norm (`fix_ws_kernel_norm`) or put at one once, as loaded weights are
(`ws_kernels_at_norm`), the learning-rate schedule and its helpers (batch
scaling, durations in steps / epochs / examples) and the parameter EMA with
the reference's warmup.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax
from nfnet.errors import UserError

Params = Any

# The head's module name. nfnet.model names its classifier the same way
# (model.CLASSIFIER); it is repeated here so the optimizer does not import the
# model, and a test checks that the two agree.
CLASSIFIER = "classifier"
# The only leaves that weight decay applies to: conv kernels (HWIO), the
# squeeze-excite dense kernels and the classifier kernel.
DECAYED_LEAF = "kernel"


# ----------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------

def _path_names(path) -> tuple[str, ...]:
  """('nf_block_0', 'conv0', 'kernel') from a jax key path."""
  names = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
    else:
      names.append(str(key))
  return tuple(names)


def weight_decay_mask(params: Params) -> Params:
  """True for the leaves that get weight decay: those named `kernel`.

  That is every weight matrix / conv kernel, including the squeeze-excite
  dense layers and the classifier. Gains (`gain`), biases (`bias` of convs,
  squeeze-excite and classifier) and the residual branches' `skip_gain` are
  never decayed, as in the reference (which excludes every name containing
  'gain' or 'bias').
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: _path_names(path)[-1] == DECAYED_LEAF, params)


def agc_mask(params: Params) -> Params:
  """True for the leaves AGC clips: everything but the classifier's kernel.

  The final linear layer's weight is left unclipped (paper section 4.1: clipping
  it hurts); its bias is still clipped. The head is recognised by its module
  name `classifier` (the leaf path ends in `classifier/kernel`), which is also
  the name a freshly attached fine-tuning head gets.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: _path_names(path)[-2:] != (CLASSIFIER, DECAYED_LEAF),
      params)


def path_string(path) -> str:
  """'nf_block_0/conv0/kernel' from a jax key path: what `lr_multipliers`
  patterns are matched against."""
  return "/".join(_path_names(path))


# ----------------------------------------------------------------------------
# Per-parameter learning-rate multipliers
# ----------------------------------------------------------------------------

def lr_multiplier_tree(params: Params,
                       multipliers: Sequence[tuple[str, float]]) -> Params:
  """Each leaf's learning-rate multiplier: that of the first `(pattern,
  multiplier)` whose regular expression matches the leaf's whole path
  (`path_string`, e.g. `stem_conv0/kernel`), else 1.

  A pattern that decides no leaf (it matches none, or only leaves an
  earlier pattern took) raises: a misspelt module name would otherwise leave
  the run silently unscaled.
  """
  compiled = [(re.compile(pattern), float(multiplier))
              for pattern, multiplier in multipliers]
  used = set()

  def multiplier_of(path, _) -> float:
    name = path_string(path)
    for i, (pattern, multiplier) in enumerate(compiled):
      if pattern.fullmatch(name):
        used.add(i)
        return multiplier
    return 1.0

  tree = jax.tree_util.tree_map_with_path(multiplier_of, params)
  unused = [multipliers[i][0] for i in range(len(compiled)) if i not in used]
  if unused:
    names = [path_string(path) for path, _ in
             jax.tree_util.tree_flatten_with_path(params)[0]]
    raise UserError(
        f"lr_multipliers pattern(s) {unused} match no parameter; patterns "
        f"match whole paths such as {names[:3]}.")
  return tree


def scale_by_lr_multipliers(multipliers: Sequence[tuple[str, float]]
                            ) -> optax.GradientTransformation:
  """Multiplies each leaf's update by its `lr_multiplier_tree` factor.

  Chained after `sgd_agc` it scales the whole step of those leaves (the
  learning rate, weight decay included), as a per-module learning rate
  does; the momentum buffers are unchanged. Needs `params` in `update`.
  """
  def init(params):
    lr_multiplier_tree(params, multipliers)  # fail at init on a bad pattern
    return optax.EmptyState()

  def update(updates, state, params=None):
    if params is None:
      raise UserError("scale_by_lr_multipliers needs params in update().")
    factors = lr_multiplier_tree(params, multipliers)
    return jax.tree_util.tree_map(
        lambda u, f: u if f == 1.0 else u * jnp.asarray(f, u.dtype),
        updates, factors), state

  return optax.GradientTransformation(init, update)


# ----------------------------------------------------------------------------
# Weight-standardised kernels at a fixed norm
# ----------------------------------------------------------------------------

def ws_kernel_mask(params: Params) -> Params:
  """True for the kernels of weight-standardised convolutions: a `kernel`
  leaf whose module also holds a `gain` (nfnet.layers.WSConv2D). Dense
  kernels (squeeze-excite, the classifier) have no gain."""
  def mark(module):  # the same mapping type, so the trees line up
    return type(module)({
        name: (mark(value) if isinstance(value, Mapping) else
               name == DECAYED_LEAF and "gain" in module)
        for name, value in module.items()})
  return mark(params)


def _centred_at_norm(kernel: jax.Array, norm: float) -> jax.Array:
  """Each output unit (last axis) of `kernel` minus its mean, scaled to L2
  norm `norm`: the same standardised weight, so the same function."""
  units = kernel.reshape(-1, kernel.shape[-1])
  centred = units - jnp.mean(units, axis=0)
  length = jnp.sqrt(jnp.sum(jnp.square(centred), axis=0))
  scale = norm / jnp.maximum(length, jnp.finfo(kernel.dtype).tiny)
  return (centred * scale).reshape(kernel.shape)


def _check_ws_kernel_norm(norm: float) -> None:
  if not norm > 0:
    raise UserError(f"a WS kernel norm must be positive, got {norm}.")


def ws_kernels_at_norm(params: Params, norm: float) -> Params:
  """`params` with every weight-standardised kernel's output units centred
  at L2 norm `norm` (`ws_kernel_mask`): the same function, but SGD's
  effective step on those kernels becomes lr / norm^2. A fine-tune applies
  it to the weights it loads (`config.init_ws_kernel_norm`)."""
  _check_ws_kernel_norm(norm)
  return jax.tree_util.tree_map(
      lambda p, is_ws: _centred_at_norm(p, norm).astype(p.dtype) if is_ws else p,
      params, ws_kernel_mask(params))


def fix_ws_kernel_norm(norm: float) -> optax.GradientTransformation:
  """After each step, every weight-standardised kernel's output units are
  centred and put back at L2 norm `norm` (`ws_kernel_mask`).

  Weight standardisation makes a conv's output independent of its kernel's
  per-unit mean and scale, so SGD's effective step on a unit is lr /
  |w|^2, and the gradient, orthogonal to w, only ever grows |w|. In the
  small-image pre-training the stem's kernels grew 3-4x within 4,500 steps:
  its effective learning rate fell ten-fold and more while the body's did not, and
  the stem is where the transfer lives. At a fixed norm the schedule alone
  sets each kernel's effective step (weight decay, which only shrinks the
  norm, no longer acts on these kernels). Chained after `sgd_agc`, last;
  needs `params` in `update`.
  """
  _check_ws_kernel_norm(norm)

  def update(updates, state, params=None):
    if params is None:
      raise UserError("fix_ws_kernel_norm needs params in update().")
    return jax.tree_util.tree_map(
        lambda u, p, is_ws: (_centred_at_norm(p + u, norm) - p).astype(u.dtype)
        if is_ws else u,
        updates, params, ws_kernel_mask(params)), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# ----------------------------------------------------------------------------
# AGC and the optimizer
# ----------------------------------------------------------------------------

def adaptive_grad_clip(clipping: float, eps: float = 1e-3
                       ) -> optax.GradientTransformation:
  """Unit-wise AGC: `G_i *= max_norm / max(||G_i||, 1e-6)` where
  `||G_i|| > max_norm = clipping * max(||W_i||, eps)`.

  This is `optax.adaptive_grad_clip` unchanged, because its unit-wise norm is
  the reference's, line for line (checked in optax 0.2.8): conv kernels HWIO
  reduce over (H, W, I), dense kernels [in, out] over `in` (one norm per
  output unit), and vectors and scalars (gains, biases, skip gains) use the
  whole-tensor norm; the eps floor and the 1e-6 guard in the denominator match.
  Both it and the reference call a tensor a vector when it has at most one
  axis longer than 1 (a `[1, out]` dense kernel gets one whole-tensor norm);
  no NFNet or NF-ResNet parameter has such a shape. The only other difference
  is at `||G_i|| == max_norm` exactly, where optax rescales by exactly 1.
  """
  return optax.adaptive_grad_clip(clipping, eps=eps)


def sgd_agc(learning_rate: float | optax.Schedule, *, momentum: float = 0.9,
            nesterov: bool = True, weight_decay: float = 2e-5,
            clipping: float | None = 0.01, eps: float = 1e-3
            ) -> optax.GradientTransformation:
  """SGD + AGC with the reference's semantics (see the module docstring).

  Args:
    learning_rate: a float or an optax schedule (a function of the step count,
      counted from 0 by this transformation's own state).
    momentum: Nesterov / heavy-ball momentum; 0 turns momentum off.
    nesterov: PyTorch-style Nesterov (`u = g + momentum * m`) when True,
      heavy ball (`u = m`) when False.
    weight_decay: coupled decay added to the clipped gradient of the kernels
      (`weight_decay_mask`); 0 turns it off.
    clipping: AGC's clipping threshold lambda; None turns AGC off.
    eps: AGC's floor on the parameter norm, `max(||W_i||, eps)`.

  `update` needs `params` (AGC and weight decay read them). The momentum
  buffer is float32 whatever the gradient dtype.
  """
  if momentum < 0 or momentum >= 1:
    raise UserError(f"momentum must be in [0, 1), got {momentum}.")
  if weight_decay < 0:
    raise UserError(f"weight_decay must be >= 0, got {weight_decay}.")
  if clipping is not None and not clipping > 0:
    raise UserError(
        f"clipping must be > 0, or None to turn AGC off; got {clipping}.")
  if not eps > 0:
    raise UserError(f"eps must be > 0, got {eps}.")

  steps = []
  if clipping is not None:
    steps.append(optax.masked(adaptive_grad_clip(clipping, eps), agc_mask))
  if weight_decay:
    steps.append(optax.add_decayed_weights(weight_decay,
                                           mask=weight_decay_mask))
  if momentum:
    # optax.trace is PyTorch's momentum: m = momentum * m + g, and with
    # nesterov=True it returns g + momentum * m (the updated m), as the
    # reference's SGD.update_param does.
    steps.append(optax.trace(decay=momentum, nesterov=nesterov,
                             accumulator_dtype=jnp.float32))
  steps.append(optax.scale_by_learning_rate(learning_rate))
  return optax.chain(*steps)


def agc_clip_fraction(grads: Params, params: Params, clipping: float,
                      eps: float = 1e-3) -> jax.Array:
  """Share of the clipped parameters' gradient entries that AGC rescales.

  Each entry counts for its unit (an output channel of a conv, an output unit
  of a dense layer, or a whole vector), so this is the fraction of units
  clipped, weighted by unit size. Leaves outside `agc_mask` do not count.
  A training-health metric: near 0, AGC is idle; near 1, it sets every step.
  """
  mask = jax.tree_util.tree_leaves(agc_mask(params))
  g_leaves = jax.tree_util.tree_leaves(grads)
  p_leaves = jax.tree_util.tree_leaves(params)
  clipped = jnp.zeros((), jnp.float32)
  total = 0
  for keep, g, p in zip(mask, g_leaves, p_leaves):
    if not keep:
      continue
    g_norm = optax.transforms.unitwise_norm(g.astype(jnp.float32))
    max_norm = clipping * jnp.maximum(
        optax.transforms.unitwise_norm(p.astype(jnp.float32)), eps)
    clipped = clipped + jnp.sum(g_norm > max_norm)
    total += g.size
  return clipped / max(total, 1)


# ----------------------------------------------------------------------------
# Learning-rate schedule and durations
# ----------------------------------------------------------------------------

def scale_learning_rate(base_lr: float, batch_size: int,
                        base_batch_size: int = 256) -> float:
  """The paper's batch scaling rule, `base_lr * batch_size / 256`.

  ImageNet from scratch uses `scale_learning_rate(0.1, 4096) == 1.6`.
  Fine-tuning does not scale (its lr 0.1 is used as given).
  """
  if batch_size <= 0:
    raise UserError(f"batch_size must be positive, got {batch_size}.")
  return base_lr * batch_size / base_batch_size


def warmup_cosine_schedule(peak_value: float, *, warmup_steps: int,
                           total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `peak_value`, then cosine decay to 0.

  `lr(t) = peak * t / warmup` for `t <= warmup`, then
  `peak * (1 + cos(pi * (t - warmup) / (total - warmup))) / 2`, and 0 from
  `total_steps` on. This is the reference's `WarmupCosineDecay` (start 0,
  min 0) and `optax.warmup_cosine_decay_schedule`. Warmup given in epochs or
  examples: convert it with `duration_to_steps` first.
  """
  if total_steps <= 0:
    raise UserError(f"total_steps must be positive, got {total_steps}.")
  if not 0 <= warmup_steps < total_steps:
    raise UserError(f"warmup_steps must be in [0, total_steps={total_steps}),"
                     f" got {warmup_steps}: shorten the warmup or lengthen the "
                     "run.")
  if warmup_steps == 0:
    return optax.cosine_decay_schedule(peak_value, total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_value, warmup_steps=warmup_steps,
      decay_steps=total_steps, end_value=0.0)


def duration_to_steps(*, steps: int | None = None, epochs: float | None = None,
                      examples: int | None = None, batch_size: int,
                      num_examples: int | None = None, name: str = "duration",
                      default: int | None = None) -> int:
  """One duration given as steps, epochs or examples -> optimizer steps.

  Exactly one of `steps`, `epochs`, `examples` may be set; with none set,
  `default` is returned (an error if there is no default). Epochs need the
  dataset size `num_examples`. Fractions of a step are dropped:
  360 epochs of ImageNet (1,281,167 images) at batch 4096 are 112,602 steps.
  `name` prefixes the config fields in errors (`total` -> total_steps, ...).

      duration_to_steps(epochs=5, batch_size=4096, num_examples=1_281_167,
                        name="warmup")  # -> 1563
  """
  given = {f"{name}_steps": steps, f"{name}_epochs": epochs,
           f"{name}_examples": examples}
  set_fields = {k: v for k, v in given.items() if v is not None}
  if len(set_fields) > 1:
    listed = ", ".join(f"{k}={v}" for k, v in set_fields.items())
    raise UserError(f"Set only one of {', '.join(given)}; got {listed}.")
  if not set_fields:
    if default is None:
      raise UserError(f"Set one of {', '.join(given)}.")
    return default
  (field, value), = set_fields.items()
  if value < 0:
    raise UserError(f"{field} must be >= 0, got {value}.")
  if batch_size <= 0:
    raise UserError(f"batch_size must be positive, got {batch_size}.")
  if steps is not None:
    if int(steps) != steps:
      raise UserError(f"{field} must be a whole number, got {steps}.")
    return int(steps)
  if examples is not None:
    return int(examples // batch_size)
  if not num_examples:
    raise UserError(f"{field} needs the dataset size (num_examples) to "
                     "convert epochs to steps.")
  # Rounding to 6 decimals first keeps float error (0.3 * 10 ==
  # 2.9999999999999996) from costing a step.
  return int(math.floor(round(epochs * num_examples / batch_size, 6)))


# ----------------------------------------------------------------------------
# EMA of parameters
# ----------------------------------------------------------------------------

def ema_decay(step: jax.Array | int, decay: float) -> jax.Array:
  """The reference's warmed-up decay, `min(decay, (1 + t) / (10 + t))`.

  `t` is the optimizer step that has just been applied, counted from 0, so the
  first update averages with weight 0.1 on the old EMA (the initial weights).
  """
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + t) / (10.0 + t))


def update_ema(ema_params: Params, params: Params, step: jax.Array | int,
               decay: float) -> Params:
  """`ema = d * ema + (1 - d) * params` with `d = ema_decay(step, decay)`.

  Call after every optimizer step with that step's index (the step counter
  before it is incremented) and the freshly updated params. The result is
  float32 whatever the parameters' dtype.
  """
  d = ema_decay(step, decay)
  # Not `optax.incremental_update(params, ema, 1 - d)`: that weighs the EMA
  # by `1 - (1 - d)`, which in float32 is not always `d` (it differs at some
  # of the first warm-up steps, where d = (1 + t) / (10 + t) < 0.5), so the
  # average would no longer be the reference's bit for bit.
  return jax.tree_util.tree_map(
      lambda e, p: (d * e.astype(jnp.float32)
                    + (1.0 - d) * p.astype(jnp.float32)),
      ema_params, params)
