"""Multiply-accumulate counts read off the traced model, never from a table.

The model is traced to a jaxpr with abstract inputs (no memory, no compute),
and every convolution and matrix product in it is counted with the
reference's convention:
  conv:   out_ch * out_h * out_w * (in_ch / groups) * kh * kw
  dense:  in_features * out_features (per example; 1x1 convs that run as
          matmuls count the same)
Element-wise work (activations, weight standardization, pooling) is not
counted, as in the paper's "#FLOPs" column.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
from jax.extend import core as jax_core


def _conv_macs(eqn) -> int:
  out_shape = eqn.outvars[0].aval.shape
  rhs_shape = eqn.invars[1].aval.shape
  dn = eqn.params["dimension_numbers"]
  # rhs_spec = (out_feature_dim, in_feature_dim, *spatial_dims)
  rhs_in = rhs_shape[dn.rhs_spec[1]]
  rhs_spatial = math.prod(rhs_shape[d] for d in dn.rhs_spec[2:])
  # Output elements already include the groups' output channels, and the
  # kernel's input dimension is in_ch / groups.
  return math.prod(out_shape) * rhs_in * rhs_spatial


def _dot_macs(eqn) -> int:
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs_shape = eqn.invars[0].aval.shape
  contracted = math.prod(lhs_shape[d] for d in lhs_contract)
  return math.prod(eqn.outvars[0].aval.shape) * contracted


def _sub_jaxprs(eqn):
  for param in eqn.params.values():
    candidates = param if isinstance(param, (tuple, list)) else (param,)
    for candidate in candidates:
      if isinstance(candidate, jax_core.ClosedJaxpr):
        yield candidate.jaxpr
      elif isinstance(candidate, jax_core.Jaxpr):
        yield candidate


def jaxpr_macs(jaxpr) -> int:
  """Sums conv and dot_general MACs over a jaxpr and every jaxpr nested in it."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      total += _conv_macs(eqn)
    elif eqn.primitive.name == "dot_general" and min(
        v.aval.ndim for v in eqn.invars[:2]) > 1:
      # Matrix-vector products are weight standardization's statistics
      # (layers._column_mean): element-wise-scale work, not counted.
      total += _dot_macs(eqn)
    for sub in _sub_jaxprs(eqn):
      total += jaxpr_macs(sub)
  return total


def count_macs(fn: Callable[..., Any], *args: Any) -> int:
  """MACs of `fn(*args)`; args may be arrays or jax.ShapeDtypeStructs."""
  return jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr)


def model_macs_per_image(model, params, resolution: int) -> int:
  """MACs of one forward pass of one image at `resolution` (eval mode)."""
  images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jax.numpy.float32)
  return count_macs(
      lambda p, x: model.apply({"params": p}, x, is_training=False), params,
      images)
