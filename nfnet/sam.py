"""Sharpness-Aware Minimization as the NFNet paper ran it (appendix A.4).

    grad_fn = sam_value_and_grad(loss_fn, rho=0.05, ascent_fraction=0.2)
    loss, grads = grad_fn(params, batch)         # then tx.update(grads, ...)

One SAM step on a batch of B examples:

  1. ascent: `g = grad loss(params, first ceil(ascent_fraction * B) examples)`
  2. perturb: `params' = params + rho * g / (||g||_2 + 1e-12)`, the norm global
     over all parameters
  3. descent: `loss, grads = value_and_grad loss(params', whole batch)`

The returned loss is the descent pass's own value (the full-batch loss at the
perturbed weights): SAM costs no extra forward pass for the metric. The
gradient is then handed to `sgd_agc` unchanged, so AGC clips the descent
gradient against the unperturbed weights.

Data parallelism, the way the paper found essential: every replica takes the
ascent step from its *own* examples and perturbs its own copy of the weights;
only the descent gradients are averaged. Call the function inside the train
step's `shard_map`'d per-device function with `axis_name` set to the mesh's
data axis; it `pmean`s the descent gradients over that axis and nothing else.
On one device, `micro_batches=k` gives the same result as k replicas: the
batch is split into k consecutive micro-batches, each does ascent, perturb and
descent on its own, and the descent gradients are averaged.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from nfnet.errors import UserError

# Added to the ascent gradient's norm, as in the reference.
NORM_EPS = 1e-12


def ascent_batch_size(batch_size: int, ascent_fraction: float) -> int:
  """`ceil(ascent_fraction * batch_size)`, at least 1.

  Rounded to 6 decimals before the ceiling so that float error
  (0.2 * 15 == 3.0000000000000004) does not add an example.
  """
  return max(1, math.ceil(round(ascent_fraction * batch_size, 6)))


def _is_number(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _leading_batch_size(batch) -> int:
  sizes = {x.shape[0] if x.ndim else None
           for x in jax.tree_util.tree_leaves(batch)}
  if len(sizes) != 1 or None in sizes:
    raise UserError("SAM needs every array of the batch to share a leading "
                     f"batch axis; got leading sizes {sorted(map(str, sizes))}.")
  return sizes.pop()


def split_micro_batches(batch, micro_batches: int):
  """[B, ...] leaves -> [micro_batches, B / micro_batches, ...]: consecutive
  slices, to `lax.scan` over. Shared by SAM and the train step's gradient
  accumulation, so both cut a batch into the same micro-batches (and each
  example keeps its virtual replica id)."""
  return jax.tree_util.tree_map(
      lambda x: x.reshape((micro_batches, -1) + x.shape[1:]), batch)


def _take_first(batch, n: int):
  return jax.tree_util.tree_map(lambda x: x[:n], batch)


def _as_replica_local(params, axis_name: str):
  """Marks replicated params as varying over `axis_name` (shard_map vma).

  Under `shard_map(..., check_vma=True)`, the gradient with respect to a
  replicated (invariant) input is implicitly summed over the axis: the ascent
  gradient would silently become the global one. Differentiating with respect
  to a varying copy keeps each replica's gradient its own. With
  `check_vma=False` this cast is a no-op.
  """
  def cast(leaf):
    aval = jax.typeof(leaf)
    varying = getattr(getattr(aval, "mat", None), "varying", frozenset())
    if axis_name in varying:
      return leaf
    return jax.lax.pcast(leaf, axis_name, to="varying")
  return jax.tree_util.tree_map(cast, params)


def _average_aux(stacked_aux, micro_batches: int):
  """Per-micro-batch aux [k, ...] -> the full batch's: scalars are averaged,
  per-example arrays [k, b, ...] are put back in batch order [k * b, ...]."""
  def merge(x):
    if x.ndim == 1:
      return jnp.mean(x, axis=0)
    return x.reshape((micro_batches * x.shape[1],) + x.shape[2:])
  return jax.tree_util.tree_map(merge, stacked_aux)


def sam_value_and_grad(loss_fn: Callable[..., Any], *, rho: float = 0.05,
                       ascent_fraction: float = 0.2, has_aux: bool = False,
                       axis_name: str | None = None, micro_batches: int = 1
                       ) -> Callable[..., tuple[Any, Any]]:
  """SAM's gradient of `loss_fn`, in the spirit of `jax.value_and_grad`.

  Args:
    loss_fn: `loss_fn(params, batch, *args)` -> mean loss over the batch, or
      `(loss, aux)` with `has_aux=True`. `batch` is any pytree whose arrays
      share a leading batch axis; `args` (rngs, flags) pass through unchanged
      to every forward pass.
    rho: the neighbourhood radius (> 0); 0.05 in the paper's fine-tuning.
    ascent_fraction: share of the (per-replica, per-micro-batch) batch whose
      gradient sets the perturbation, in (0, 1]; the first
      `ceil(ascent_fraction * b)` examples are used. 1.0 is the original SAM.
    has_aux: as in `jax.value_and_grad`. The aux returned is the descent
      pass's (at the perturbed weights, on the whole batch). With micro-batches,
      scalar aux leaves are averaged and per-example aux leaves (leading axis
      = micro-batch size) are concatenated back into batch order.
    axis_name: the data axis when called inside `shard_map`: descent gradients
      are `pmean`ed over it, ascent gradients stay per replica. The returned
      loss and aux are this replica's own (average them as metrics yourself).
      None: no collective (one device, or a per-shard computation).
    micro_batches: split this replica's batch into that many consecutive
      micro-batches, each with its own ascent, perturbation and descent; the
      descent gradients (and losses) are averaged. Mimics `micro_batches`
      replicas on one device, and bounds activation memory.

  Returns:
    `f(params, batch, *args) -> (loss, grads)`, or `((loss, aux), grads)`.
  """
  if not (_is_number(rho) and math.isfinite(rho) and rho > 0):
    raise UserError(f"SAM rho must be a finite number > 0, got {rho!r}; "
                     "for plain training use jax.value_and_grad instead.")
  if not (_is_number(ascent_fraction) and 0 < ascent_fraction <= 1):
    raise UserError("SAM ascent_fraction must be in (0, 1], got "
                     f"{ascent_fraction!r}.")
  if not (isinstance(micro_batches, numbers.Integral)
          and not isinstance(micro_batches, bool) and micro_batches >= 1):
    raise UserError(
        f"micro_batches must be a positive int, got {micro_batches!r}.")

  def ascent_loss(params, batch, *args):
    out = loss_fn(params, batch, *args)
    return out[0] if has_aux else out

  descent_value_and_grad = jax.value_and_grad(loss_fn, has_aux=has_aux)

  def one_replica(params, batch, *args):
    """Ascent on the first examples, perturb, descent on the whole batch."""
    n_ascent = ascent_batch_size(_leading_batch_size(batch), ascent_fraction)
    ascent_grads = jax.grad(ascent_loss)(params, _take_first(batch, n_ascent),
                                         *args)
    scale = rho / (optax.global_norm(ascent_grads) + NORM_EPS)
    perturbed = jax.tree_util.tree_map(
        lambda p, g: (p + scale * g).astype(p.dtype), params, ascent_grads)
    return descent_value_and_grad(perturbed, batch, *args)

  def sam_fn(params, batch, *args):
    batch_size = _leading_batch_size(batch)
    if batch_size % micro_batches:
      raise UserError(f"The batch ({batch_size} examples here) must split "
                       f"evenly into micro_batches={micro_batches}.")
    if axis_name is not None:
      params = _as_replica_local(params, axis_name)

    if micro_batches == 1:
      value, grads = one_replica(params, batch, *args)
    else:
      split = split_micro_batches(batch, micro_batches)

      def body(grad_sum, micro_batch):
        value, grads = one_replica(params, micro_batch, *args)
        return jax.tree_util.tree_map(
            lambda s, g: s + g.astype(jnp.float32), grad_sum, grads), value

      # scan traces the model once however many micro-batches there are; the
      # gradients are summed in a float32 carry (one params-sized buffer),
      # only the small per-micro-batch values are stacked.
      zeros = jax.tree_util.tree_map(
          lambda p: jnp.zeros_like(p, jnp.float32), params)
      grad_sum, values = jax.lax.scan(body, zeros, split)
      grads = jax.tree_util.tree_map(
          lambda s, p: (s / micro_batches).astype(p.dtype), grad_sum, params)
      if has_aux:
        losses, aux = values
        value = (jnp.mean(losses, axis=0), _average_aux(aux, micro_batches))
      else:
        value = jnp.mean(values, axis=0)

    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
    return value, grads

  return sam_fn
