"""The train and eval steps both programs share.

One `jax.jit` over a 1-D `data` mesh. Inside it, the model runs per device
under `shard_map` (each device sees only its own examples): XLA's SPMD
partitioner would otherwise all-gather the global batch around every grouped
convolution (docs/design.md), and SAM's per-replica ascent needs exactly this
per-device view anyway. Gradients are averaged with `pmean`; the optimizer
update, EMA and metrics then run on the replicated state.

Batches are dicts of global arrays: `image` uint8 [B, H, W, 3] (normalised on
device), `label` int32 [B] or `targets` float32 [B, C] (multi-hot or already
mixed and smoothed by the input pipeline), and for eval `mask` bool [B].
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

from nfnet import optim
from nfnet.model import NFNet, normalize_images
from nfnet.train.parallel import DATA_AXIS
from nfnet.sam import sam_value_and_grad, split_micro_batches
from nfnet.errors import UserError

LOSSES = ("softmax", "sigmoid")
# Training-health norms: a pass over every parameter each, so they can be
# computed on logging steps only (`diagnostics_every_steps`); the metric
# DIAGNOSTICS_FLAG (1.0 or 0.0) then says on which steps they were.
DIAGNOSTIC_METRICS = ("grad_norm", "param_norm", "update_norm", "clip_fraction")
DIAGNOSTICS_FLAG = "diagnostics"


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. `ema_params` is None when EMA is off."""

  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any = None


def create_train_state(params, tx: optax.GradientTransformation,
                       use_ema: bool) -> TrainState:
  params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params)
  # The EMA starts as a copy: the step donates the state, and one buffer may
  # not be donated twice.
  ema_params = (jax.tree_util.tree_map(lambda p: jnp.array(p, copy=True), params)
                if use_ema else None)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), ema_params=ema_params)


def batch_targets(batch: dict[str, jax.Array], num_classes: int) -> jax.Array:
  """Float targets [B, C]: the pipeline's `targets` as given (multi-hot, or
  mixed and smoothed by data/augment.py), else one-hot `label`s."""
  if "targets" in batch:
    return batch["targets"].astype(jnp.float32)
  return jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.float32)


def classification_loss(logits: jax.Array, targets: jax.Array,
                        kind: str) -> jax.Array:
  """Mean over the batch of softmax or sigmoid cross-entropy, in float32.

  softmax: targets are normalised to sum to 1, so an image with k labels puts
  1/k on each (one-hot, mixed and smoothed targets already sum to 1).
  sigmoid: every class is its own binary problem, summed over classes, as for
  multi-label corpora like JFT where an image carries several labels.
  """
  logits = logits.astype(jnp.float32)
  if kind == "softmax":
    total = jnp.sum(targets, axis=-1, keepdims=True)
    targets = targets / jnp.where(total > 0, total, 1.0)
    return optax.softmax_cross_entropy(logits, targets).mean()
  if kind == "sigmoid":
    return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1).mean()
  raise UserError(f"loss must be one of {LOSSES}, got {kind!r}.")


def top1_correct(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """1.0 where the top class is a label that carries the most target weight.

  On hard targets that is precision@1 (any true label of a multi-hot row
  counts); on soft training targets it is agreement with the argmax of the
  target: the larger share of a MixUp / CutMix pair (either at an even mix),
  the true class under label smoothing, which gives every class some weight.
  """
  top = jnp.argmax(logits, axis=-1)
  at_top = jnp.take_along_axis(targets, top[:, None], axis=-1)[:, 0]
  return ((at_top > 0) & (at_top >= jnp.max(targets, axis=-1))
          ).astype(jnp.float32)


def topk_correct(logits: jax.Array, targets: jax.Array, k: int) -> jax.Array:
  """1.0 where any of the top-k classes is a true label (top-k accuracy; on
  multi-label data a hit among the k best, not precision@k)."""
  _, top = jax.lax.top_k(logits, k)
  hits = jnp.take_along_axis(targets, top, axis=-1) > 0
  return jnp.any(hits, axis=-1).astype(jnp.float32)


# Batch key (added inside the step) carrying each example's virtual replica id.
REPLICA_ID = "_replica_id"


def _leading_size(batch) -> int:
  return next(iter(batch.values())).shape[0]


def virtual_replica_ids(batch_size: int, micro_batches: int, device_index) -> jax.Array:
  """int32 [B]: `device_index * micro_batches + j` for the rows of micro-batch j.

  Micro-batches (for SAM: virtual replicas) are consecutive slices, so the id
  travels with the rows through any split of the batch.
  """
  micro = jnp.arange(batch_size, dtype=jnp.int32) // (batch_size // micro_batches)
  return (device_index * micro_batches + micro).astype(jnp.int32)


def _accumulated_value_and_grad(loss_fn, params, batch, micro_batches: int):
  """Mean loss/aux and gradient over `micro_batches` sequential slices."""
  if micro_batches == 1:
    return jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
  split = split_micro_batches(batch, micro_batches)

  def body(carry, micro):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, micro)
    return jax.tree_util.tree_map(jnp.add, carry, (loss, aux, grads)), None

  first = jax.tree_util.tree_map(lambda x: x[0], split)
  rest = jax.tree_util.tree_map(lambda x: x[1:], split)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, first)
  (loss, aux, grads), _ = jax.lax.scan(body, (loss, aux, grads), rest)
  scale = lambda t: jax.tree_util.tree_map(lambda x: x / micro_batches, t)
  return (scale(loss), scale(aux)), scale(grads)


def make_train_step(model: NFNet, tx: optax.GradientTransformation, mesh: Mesh,
                    *, loss: str = "softmax", sam_rho: float = 0.0, sam_ascent_fraction: float = 0.2,
                    ema_decay: float | None = None, micro_batches: int = 1,
                    learning_rate_fn: Callable[[jax.Array], jax.Array] | None = None,
                    agc_clipping: float | None = None, seed: int = 0,
                    diagnostics_every_steps: int = 1):
  """Returns `train_step(state, batch) -> (state, metrics)`, jitted, state donated.

  `sam_rho > 0` turns on SAM with per-replica ascent: each device perturbs its
  own weights from its own examples' ascent gradient and only descent
  gradients are averaged. `micro_batches` splits each device's batch into
  sequential slices (gradient accumulation; for SAM, k virtual replicas).
  `diagnostics_every_steps` > 1 computes DIAGNOSTIC_METRICS only when the
  step just taken (counted from 1) is a multiple of it -- pass the logging
  interval -- and adds the DIAGNOSTICS_FLAG metric; other steps return zeros
  there, which `reporting.host_scalars` leaves out of the window's mean.
  """
  if diagnostics_every_steps < 1:
    raise ValueError("diagnostics_every_steps must be >= 1, got "
                     f"{diagnostics_every_steps}.")
  if loss not in LOSSES:
    raise UserError(f"loss must be one of {LOSSES}, got {loss!r}.")
  num_classes = model.num_classes
  base_rng = jax.random.PRNGKey(seed)

  def per_device(params, batch, step):
    step_rng = jax.random.fold_in(base_rng, step)
    batch = dict(batch, **{REPLICA_ID: virtual_replica_ids(
        _leading_size(batch), micro_batches, jax.lax.axis_index(DATA_AXIS))})

    def loss_fn(p, b):
      # Each (device, micro-batch) pair draws its own dropout and stochastic-
      # depth masks, keyed by its virtual replica id d * k + j: k micro-batches
      # on one device then draw exactly what k devices would.
      rng = jax.random.fold_in(step_rng, b[REPLICA_ID][0])
      logits = model.apply({"params": p}, normalize_images(b["image"], model.dtype),
                           is_training=True, rngs={"dropout": rng})
      targets = batch_targets(b, num_classes)
      return classification_loss(logits, targets, loss), top1_correct(
          logits, targets).mean()

    if sam_rho > 0:
      grad_fn = sam_value_and_grad(loss_fn, rho=sam_rho,
                                   ascent_fraction=sam_ascent_fraction,
                                   has_aux=True, axis_name=DATA_AXIS,
                                   micro_batches=micro_batches)
      (loss_value, accuracy), grads = grad_fn(params, batch)
    else:
      (loss_value, accuracy), grads = _accumulated_value_and_grad(
          loss_fn, params, batch, micro_batches)
      grads = jax.lax.pmean(grads, DATA_AXIS)
    metrics = {"loss": loss_value, "train_top1": accuracy}
    return grads, jax.lax.pmean(metrics, DATA_AXIS)

  sharded_grads = jax.shard_map(per_device, mesh=mesh,
                                in_specs=(P(), P(DATA_AXIS), P()),
                                out_specs=(P(), P()), check_vma=False)

  def diagnostics(grads, params, updates, old_params):
    out = {"grad_norm": optax.global_norm(grads),
           "param_norm": optax.global_norm(params),
           "update_norm": optax.global_norm(updates)}
    if agc_clipping:
      out["clip_fraction"] = optim.agc_clip_fraction(grads, old_params,
                                                     agc_clipping)
    return out

  def train_step(state: TrainState, batch):
    grads, metrics = sharded_grads(state.params, batch, state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_decay is not None:
      ema_params = optim.update_ema(ema_params, params, state.step, ema_decay)
    if diagnostics_every_steps == 1:
      metrics.update(diagnostics(grads, params, updates, state.params))
    else:
      computed = (state.step + 1) % diagnostics_every_steps == 0
      skipped = lambda *args: jax.tree_util.tree_map(
          jnp.zeros_like, jax.eval_shape(diagnostics, *args))
      metrics.update(jax.lax.cond(computed, diagnostics, skipped, grads,
                                  params, updates, state.params))
      metrics[DIAGNOSTICS_FLAG] = computed.astype(jnp.float32)
    if learning_rate_fn is not None:
      metrics["learning_rate"] = learning_rate_fn(state.step)
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state, ema_params=ema_params)
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=(0,))


def class_probabilities(logits: jax.Array, loss: str) -> jax.Array:
  """What the loss makes of the logits: a softmax over classes, or an
  independent sigmoid per class (multi-label)."""
  if loss == "sigmoid":
    return jax.nn.sigmoid(logits.astype(jnp.float32))
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def make_eval_step(model: NFNet, mesh: Mesh, *, topk: int = 5,
                   flip_average: bool = False, loss: str = "softmax"):
  """Returns `eval_step(params, batch) -> sums` of correct@1, correct@k and count.

  Padding examples (mask False) count nowhere, so every example of a split
  counts exactly once whatever the batch and process layout.

  flip_average: also score each image by the mean of its class probabilities
  (under `loss`) and its mirror image's, as `flip_top1` / `flip_top{k}`,
  beside the plain scores; it doubles the eval's compute.
  """
  topk = min(topk, model.num_classes)

  def apply(params, images):
    return model.apply({"params": params}, normalize_images(images, model.dtype),
                       is_training=False)

  def per_device(params, batch):
    logits = apply(params, batch["image"])
    targets = batch_targets(batch, model.num_classes)
    mask = batch["mask"].astype(jnp.float32)

    def correct_sums(scores, prefix=""):
      return {f"{prefix}top1": jnp.sum(top1_correct(scores, targets) * mask),
              f"{prefix}top{topk}": jnp.sum(
                  topk_correct(scores, targets, topk) * mask)}

    sums = {**correct_sums(logits), "count": jnp.sum(mask)}
    if flip_average:
      mirrored = apply(params, jnp.flip(batch["image"], axis=2))  # NHWC: W
      mean_probs = (class_probabilities(logits, loss)
                    + class_probabilities(mirrored, loss)) / 2
      sums.update(correct_sums(mean_probs, prefix="flip_"))
    return jax.lax.psum(sums, DATA_AXIS)

  return jax.jit(jax.shard_map(per_device, mesh=mesh,
                               in_specs=(P(), P(DATA_AXIS)), out_specs=P(),
                               check_vma=False))
