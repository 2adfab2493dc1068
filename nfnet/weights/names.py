"""Parameter names and layouts: DeepMind's Haiku and timm's, against ours.

Our parameter paths ("nf_block_3/conv1/kernel") are the hub; for each source
there is a function giving the source's name of one of our paths, and the
forward translation keeps a key only when that function gives back exactly
the key it came from.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from nfnet.model import CLASSIFIER

_DENSE_MODULES = (CLASSIFIER, "fc0", "fc1")
_BLOCK = re.compile(r"nf_block_(\d+)")


def _is_dense(path: str) -> bool:
  return path.split("/")[-2] in _DENSE_MODULES


def haiku_name(path: str) -> str:
  """Our path -> the DeepMind Haiku name "module/~/path:leaf".

  >>> haiku_name("nf_block_0/squeeze_excite/fc1/bias")
  'NFNet/~/nf_block/~/squeeze_excite/~/linear_1:b'
  """
  *modules, leaf = path.split("/")
  parts = ["NFNet"]
  for module in modules:
    block = _BLOCK.fullmatch(module)
    if block:  # Haiku names the first instance without a suffix.
      index = int(block.group(1))
      module = "nf_block" if index == 0 else f"nf_block_{index}"
    module = {CLASSIFIER: "linear", "fc0": "linear", "fc1": "linear_1"}.get(
        module, module)
    parts.append(module)
  leaf = {"kernel": "w", "bias": "b" if _is_dense(path) else "bias"}.get(
      leaf, leaf)
  return "/~/".join(parts) + ":" + leaf


def _path_from_haiku(module: str, leaf: str) -> str | None:
  """The Haiku key -> our path, or None when it names nothing of ours."""
  parts = module.split("/~/")
  if parts[0] != "NFNet":
    return None
  ours = []
  for part in parts[1:]:
    if part == "nf_block":
      part = "nf_block_0"
    elif part in ("linear", "linear_1"):
      in_se = ours[-1:] == ["squeeze_excite"]
      part = {"linear": "fc0", "linear_1": "fc1"}[part] if in_se else (
          CLASSIFIER if part == "linear" else part)
    ours.append(part)
  ours.append({"w": "kernel", "b": "bias"}.get(leaf, leaf))
  path = "/".join(ours)
  return path if haiku_name(path) == f"{module}:{leaf}" else None


def haiku_to_flat(haiku_params: Mapping[str, Mapping[str, Any]]):
  """Haiku {module: {leaf: array}} -> ({our path: array}, {our path: source
  name}, [source names that map to nothing]). Layouts already agree."""
  flat, names, unmapped = {}, {}, []
  for module, leaves in haiku_params.items():
    for leaf, value in leaves.items():
      path = _path_from_haiku(module, leaf)
      if path is None:
        unmapped.append(f"{module}:{leaf}")
      else:
        flat[path], names[path] = value, f"{module}:{leaf}"
  return flat, names, unmapped


# Our block sub-module -> timm's (timm/models/nfnet.py NormFreeBlock).
_TIMM_BLOCK_MODULES = {
    "conv0": "conv1",
    "conv1": "conv2",
    "conv1b": "conv2b",
    "conv2": "conv3",
    "conv_shortcut": "downsample.conv",
    "squeeze_excite/fc0": "attn_last.fc1",
    "squeeze_excite/fc1": "attn_last.fc2",
}
_TIMM_MODULES_TO_OURS = {v: k for k, v in _TIMM_BLOCK_MODULES.items()}
_TIMM_STAGE_KEY = re.compile(r"stages\.(\d+)\.(\d+)\.(.+)")


def timm_name(path: str, stage_depths: Sequence[int]) -> str:
  """Our path -> the timm state-dict key; blocks are numbered per stage.

  >>> timm_name("nf_block_1/conv1b/kernel", (1, 2, 6, 3))
  'stages.1.0.conv2b.weight'
  """
  *modules, leaf = path.split("/")
  leaf = {"kernel": "weight"}.get(leaf, leaf)
  head, rest = modules[0], "/".join(modules[1:])
  if head.startswith("stem_conv") and head[9:].isdigit():
    return f"stem.conv{int(head[9:]) + 1}.{leaf}"
  if head == CLASSIFIER:
    return f"head.fc.{leaf}"
  block = _BLOCK.fullmatch(head)
  if block:
    stage, index = _stage_and_index(int(block.group(1)), stage_depths)
    if not rest and leaf == "skip_gain":
      return f"stages.{stage}.{index}.skipinit_gain"
    return f"stages.{stage}.{index}.{_TIMM_BLOCK_MODULES.get(rest, rest)}.{leaf}"
  return ".".join(modules + [leaf])


def _stage_and_index(block: int, stage_depths: Sequence[int]) -> tuple[int, int]:
  for stage, depth in enumerate(stage_depths):
    if block < depth:
      return stage, block
    block -= depth
  return len(stage_depths), block  # Past the model: shows up as unexpected.


def _path_from_timm(key: str, stage_offsets: Sequence[int]) -> str | None:
  """The timm key -> our path, or None when it names nothing of ours."""
  module, _, leaf = key.rpartition(".")
  leaf = {"weight": "kernel"}.get(leaf, leaf)
  stem = re.fullmatch(r"stem\.conv(\d+)", module)
  stage = _TIMM_STAGE_KEY.fullmatch(key)
  if stem:
    path = f"stem_conv{int(stem.group(1)) - 1}/{leaf}"
  elif module == "final_conv":
    path = f"final_conv/{leaf}"
  elif module == "head.fc":
    path = f"{CLASSIFIER}/{leaf}"
  elif stage and int(stage.group(1)) < len(stage_offsets):
    block = stage_offsets[int(stage.group(1))] + int(stage.group(2))
    rest = stage.group(3)
    if rest == "skipinit_gain":
      path = f"nf_block_{block}/skip_gain"
    else:
      sub, _, _ = rest.rpartition(".")
      ours = _TIMM_MODULES_TO_OURS.get(sub)
      if ours is None:
        return None
      path = f"nf_block_{block}/{ours}/{leaf}"
  else:
    return None
  depths = np.diff(list(stage_offsets) + [10**9]).tolist()
  return path if timm_name(path, depths) == key else None


def _timm_stage_depths(keys) -> list[int]:
  """Blocks per stage, from the largest block index seen in each stage."""
  depths: dict[int, int] = {}
  for key in keys:
    match = _TIMM_STAGE_KEY.fullmatch(key)
    if match:
      stage, index = int(match.group(1)), int(match.group(2))
      depths[stage] = max(depths.get(stage, 0), index + 1)
  return [depths.get(s, 0) for s in range(max(depths, default=-1) + 1)]


def _from_timm_layout(path: str, value: np.ndarray) -> np.ndarray:
  """timm tensor layout -> ours; shapes that are not timm's pass unchanged so
  that the shape check reports them."""
  leaf = path.split("/")[-1]
  if _is_dense(path) and leaf == "kernel":
    if value.ndim == 4 and value.shape[2:] == (1, 1):  # SE: 1x1 conv [O,I,1,1].
      value = value[:, :, 0, 0]
    return value.T if value.ndim == 2 else value  # [O, I] -> [I, O].
  if leaf == "kernel" and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
  if leaf == "gain" and value.ndim == 4 and value.shape[1:] == (1, 1, 1):
    return value.reshape(-1)  # [O, 1, 1, 1] -> [O].
  return value


def timm_to_flat(state_dict: Mapping[str, Any]):
  """timm {key: array} -> ({our path: array in our layout}, {our path: key},
  [keys that map to nothing])."""
  offsets = np.cumsum([0] + _timm_stage_depths(state_dict)).tolist()[:-1]
  flat, names, unmapped = {}, {}, []
  for key, value in state_dict.items():
    path = _path_from_timm(key, offsets)
    if path is None:
      unmapped.append(key)
    else:
      flat[path], names[path] = _from_timm_layout(path, value), key
  return flat, names, unmapped
