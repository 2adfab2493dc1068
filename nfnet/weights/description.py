"""An NFNet's constructor fields as JSON-able data: what every checkpoint and
converted weights directory records (model.json), so that the weights alone
say which model they belong to.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from nfnet.errors import WeightImportError
from nfnet.model import NFNet

_NOT_CONSTRUCTOR_FIELDS = ("parent", "name")


def _constructor_fields() -> list[str]:
  return [f.name for f in dataclasses.fields(NFNet)
          if f.name not in _NOT_CONSTRUCTOR_FIELDS]


def model_to_description(model: NFNet) -> dict[str, Any]:
  """Every constructor field of `model` as JSON-able data.

  >>> model_to_description(NFNet(variant="F1"))["variant"]
  'F1'
  """
  description = {}
  for name in _constructor_fields():
    value = getattr(model, name)
    if name == "dtype":
      value = jnp.dtype(value).name
    elif isinstance(value, tuple):
      value = list(value)
    description[name] = value
  return description


def model_from_description(description: Mapping[str, Any],
                           **overrides: Any) -> NFNet:
  """Inverse of `model_to_description`; `overrides` replace fields (e.g. dtype)."""
  fields = {**description, **overrides}
  unknown = sorted(set(fields) - set(_constructor_fields()))
  if unknown:
    raise WeightImportError(
        f"Model description has unknown NFNet field(s) {unknown}; it was "
        "written by another version of this toolkit. Remove those fields or "
        "update the toolkit.")
  if isinstance(fields.get("dtype"), str):
    fields["dtype"] = getattr(jnp, jnp.dtype(fields["dtype"]).name)
  if fields.get("depths") is not None:
    fields["depths"] = tuple(fields["depths"])
  return NFNet(**fields)


def describe_model(model: NFNet) -> str:
  """One line naming the architecture, e.g. for progress output and errors."""
  return (f"NFNet-{model.spec.name}"
          f"{'' if model.width == 1.0 else f' x{model.width:g}'} "
          f"(widths {'/'.join(map(str, model.stage_widths()))}, "
          f"depths {'/'.join(map(str, model.stage_depths()))}, "
          f"group size {model.group_size}, {model.num_classes} classes)")
