"""Inferring an NFNet's architecture from its parameter shapes alone."""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from nfnet import variants as variants_lib
from nfnet.model import CLASSIFIER, NFNet
from nfnet.errors import WeightImportError

def infer_model_kwargs(shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
  """NFNet constructor kwargs whose parameter tree has these shapes.

  `shapes` maps our flat paths ("nf_block_0/conv0/kernel") to shapes. Stage
  boundaries are the blocks with a shortcut conv (every NFNet stage starts
  with one), stage widths are the blocks' output channels, the group width is
  the input depth of the grouped conv's kernel. A named variant (F0..F7,
  F0+..F7+) is returned when widths and depths are exactly one; otherwise the
  F0 / F0+ topology with `width` and `depths` set. Only fields that differ
  from NFNet's defaults are returned, besides `variant` and `num_classes`.
  """
  blocks = sorted({int(m.group(1)) for key in shapes
                   if (m := re.match(r"nf_block_(\d+)/", key))})
  if not blocks:
    raise WeightImportError("No residual blocks (nf_block_*) found: this is "
                            "not an NFNet parameter set.")
  has = lambda block, module: any(
      k.startswith(f"nf_block_{block}/{module}/") for k in shapes)
  starts = [b for b in range(blocks[-1] + 1) if has(b, "conv_shortcut")]
  if not starts or starts[0] != 0:
    raise WeightImportError("Cannot find the stages: the first block has no "
                            "shortcut conv (nf_block_0/conv_shortcut).")
  depths = tuple(np.diff(starts + [blocks[-1] + 1]).tolist())
  widths = tuple(_out_channels(shapes, b) for b in starts)
  if None in widths:
    raise WeightImportError(
        f"Cannot read the width of stage {widths.index(None)}: its first "
        "block has neither conv2 nor conv_shortcut kernels.")

  kwargs: dict[str, Any] = {}
  suffix, width = _match_widths(widths)
  variant = next((name for name, v in variants_lib.VARIANTS.items()
                  if v.family == "nfnet" and name.endswith("+") == (suffix == "+")
                  and v.depths == depths), None)
  kwargs["variant"] = variant or f"F0{suffix}"
  if variant is None:
    kwargs["depths"] = depths
  if width != 1.0:
    kwargs["width"] = width

  conv1 = shapes.get("nf_block_0/conv1/kernel")
  if conv1 is not None and conv1[2] != NFNet.group_size:
    kwargs["group_size"] = int(conv1[2])
  fc0 = shapes.get("nf_block_0/squeeze_excite/fc0/kernel")
  if fc0 is not None and fc0[1] != int(widths[0] * NFNet.se_ratio):
    kwargs["se_ratio"] = fc0[1] / widths[0]
  if not any("/conv1b/" in k for k in shapes):
    kwargs["use_two_convs"] = False
  final = shapes.get("final_conv/kernel")
  if final is not None and final[-1] != int(NFNet.final_conv_mult * widths[-1]):
    kwargs["final_conv_mult"] = final[-1] / widths[-1]
  for key, axis in ((f"{CLASSIFIER}/kernel", -1), (f"{CLASSIFIER}/bias", 0)):
    if key in shapes and len(shapes[key]) > 0:
      kwargs["num_classes"] = int(shapes[key][axis])
      break
  return kwargs


def _out_channels(shapes, block: int) -> int | None:
  for module in ("conv2", "conv_shortcut"):
    shape = shapes.get(f"nf_block_{block}/{module}/kernel")
    if shape is not None and len(shape) == 4:
      return int(shape[-1])
  return None


def _match_widths(widths: tuple[int, ...]) -> tuple[str, float]:
  """('' or '+', width multiplier) such that int(base * m) == widths."""
  for suffix, base in (("", variants_lib.NFNET_WIDTHS),
                       ("+", variants_lib.NFNET_PLUS_WIDTHS)):
    for multiplier in sorted({w / b for w, b in zip(widths, base)}, reverse=True):
      if tuple(int(b * multiplier) for b in base) == widths:
        return suffix, multiplier
  raise WeightImportError(
      f"Stage widths {widths} are not an NFNet width pattern "
      f"({variants_lib.NFNET_WIDTHS} or {variants_lib.NFNET_PLUS_WIDTHS} "
      "times a multiplier). Pass the architecture explicitly, e.g. "
      "load_timm(path, variant=..., width=...).")
