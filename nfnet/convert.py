"""Import the NFNet weights people already have: DeepMind's and timm's.

    model, params = load_deepmind("F0_haiku.npz")           # Haiku release
    model, params = load_timm("dm_nfnet_f0.safetensors")     # timm port
    logits = model.apply({"params": params}, images, is_training=False)

    python -m nfnet.convert deepmind F0_haiku.npz ckpts/f0_deepmind
    python -m nfnet.convert timm model.safetensors ckpts/f0_timm

Each loader returns an `NFNet` configured for the file (stage widths, depths,
group width, classes: all inferred from the tensor shapes; keyword overrides
win) and its parameters as a nested dict of float32 numpy arrays in our layout
(model.py's docstring). The model also carries the source's numerics:

* DeepMind: the reference numerics, our defaults (tanh-GELU, variance floor
  1e-4 in the weight standardization).
* timm `dm_nfnet_*`: exact-erf GELU and an additive 1e-5 epsilon
  (`activation="gelu_exact", ws_eps_mode="add", ws_eps=1e-5`). Everything
  else timm does at inference is the reference architecture: TF-style SAME
  padding (its ScaledStdConv2dSame), gamma applied after each activation,
  SE on the block output scaled by 2, SkipInit gain, a 2x2 ceil-mode average
  pool that ignores padding on the transition shortcuts, and the same betas.

Every mismatch between a file and the model it describes (missing tensors,
unexpected ones, wrong shapes) is reported in ONE `WeightImportError` that
names each tensor as the file names it.

DeepMind's `*_haiku.npz` files are dill pickles, and unpickling can run any
code the file asks for. `read_haiku_pickle` admits only numpy arrays and plain
containers and refuses everything else before it is called.
"""
from __future__ import annotations

import argparse
import codecs
import collections
import dataclasses
import json
import os
import pickle
import re
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from nfnet import variants as variants_lib
from nfnet.errors import UserError
from nfnet.info import abstract_params
from nfnet.model import CLASSIFIER, NFNet, count_params

# The timm `dm_nfnet_*` numerics (timm/models/nfnet.py `_dm_nfnet_cfg`:
# gamma_in_act, std_conv_eps=1e-5, act_layer='gelu' = torch's exact erf GELU).
TIMM_NUMERICS = dict(activation="gelu_exact", ws_eps_mode="add", ws_eps=1e-5)
# DeepMind's reference numerics (the model's defaults), written out so that a
# converted checkpoint's model.json records them whatever the defaults become.
DEEPMIND_NUMERICS = dict(activation="gelu", ws_eps_mode="floor", ws_eps=1e-4)

MODEL_DESCRIPTION_FILE = "model.json"


class WeightImportError(UserError):
  """A weight file that cannot be read, or does not match the model."""


# ----------------------------------------------------------------------------
# Model description: the constructor kwargs of an NFNet, as JSON-able data.
# ----------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------
# Reading DeepMind's Haiku pickles, safely.
# ----------------------------------------------------------------------------


def _reconstruct_array(f, args, state, npdict=None):
  """dill's `_create_array` (how dill pickles an ndarray), restricted.

  dill calls `f(*args)` then `__setstate__(state)`; here `f` must be numpy's
  array constructor, and extra instance attributes (`npdict`) are refused.
  """
  if f is not np._core.multiarray._reconstruct or npdict:
    raise pickle.UnpicklingError(
        "refusing a dill array record that is not a plain numpy array")
  array = f(*args)
  array.__setstate__(state)
  return array


# (module, name) in the pickle stream -> the object it may resolve to.
_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    # Protocol-2 pickles store bytes (an array's raw data) as latin-1 text.
    ("_codecs", "encode"): codecs.encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("dill._dill", "_create_array"): _reconstruct_array,
    # Older Haiku versions returned (and pickled) parameters as FlatMapping /
    # frozendict, whose pickles are `cls(plain_dict)`: read them as dicts.
    ("haiku._src.data_structures", "FlatMapping"): dict,
    ("haiku._src.data_structures", "FlatMap"): dict,
    ("haiku._src.data_structures", "frozendict"): dict,
}
for _numpy_core in ("numpy.core", "numpy._core"):  # numpy 1.x / 2.x names
  _PICKLE_ALLOWED.update({
      (f"{_numpy_core}.multiarray", "_reconstruct"):
          np._core.multiarray._reconstruct,
      (f"{_numpy_core}.multiarray", "scalar"): np._core.multiarray.scalar,
      (f"{_numpy_core}.numeric", "_frombuffer"): np._core.numeric._frombuffer,
  })


class _ArraysOnlyUnpickler(pickle.Unpickler):
  """An unpickler that can build numpy arrays and containers, nothing else."""

  def find_class(self, module: str, name: str):
    try:
      return _PICKLE_ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f"refusing to load '{module}.{name}': a weight file may only hold "
          "numpy arrays in dicts/lists/tuples, and loading any other object "
          "would run code from the file.") from None


def read_haiku_pickle(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
  """Reads a DeepMind `*_haiku.npz` (a dill pickle of {module: {leaf: array}})."""
  with open(path, "rb") as f:
    if f.read(2) == b"PK":
      raise WeightImportError(
          f"{path} is a zip archive (an np.savez file), not the dill pickle "
          "of a Haiku parameter dict that DeepMind released. Pass the "
          "original F*_haiku.npz download.")
    f.seek(0)
    try:
      tree = _ArraysOnlyUnpickler(f).load()
    except pickle.UnpicklingError as e:
      raise WeightImportError(f"{path}: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
      raise WeightImportError(
          f"{path} is not a readable Haiku parameter pickle ({e!r}). Check "
          "the download is complete.") from None
  return _check_haiku_tree(tree, path)


def _check_haiku_tree(tree, path) -> dict[str, dict[str, np.ndarray]]:
  if not isinstance(tree, Mapping):
    raise WeightImportError(
        f"{path} holds a {type(tree).__name__}, not a Haiku parameter dict "
        "{module path: {name: array}}.")
  out, bad = {}, []
  for module, leaves in tree.items():
    if not isinstance(leaves, Mapping):
      bad.append(f"{module!r} holds a {type(leaves).__name__}, not a dict")
      continue
    out[module] = {}
    for leaf, value in leaves.items():
      if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in "fiu":
        out[module][leaf] = np.asarray(value, np.float32)
      else:
        bad.append(f"{module}/{leaf} is {type(value).__name__} "
                   f"{getattr(value, 'dtype', '')}, not a numeric array")
  if bad:
    raise WeightImportError(f"{path} is not a Haiku parameter dict:\n  - " +
                            "\n  - ".join(bad))
  return out


# ----------------------------------------------------------------------------
# Reading timm state dicts (.safetensors; .pth when PyTorch is installed).
# ----------------------------------------------------------------------------


def _is_safetensors(path) -> bool:
  """safetensors files start with a little-endian u64 header size, then '{'."""
  with open(path, "rb") as f:
    head = f.read(9)
  return len(head) == 9 and head[8:9] == b"{"


def read_timm_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a timm state dict as {name: float32 numpy array}."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No such weight file: {path}")
  if str(path).endswith(".safetensors") or _is_safetensors(path):
    from safetensors.numpy import load_file
    try:
      state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types.
      raise WeightImportError(f"{path} is not a readable safetensors file "
                              f"({e}).") from None
  else:
    state = _read_torch_state_dict(path)
  if state and all(k.startswith("module.") for k in state):  # DataParallel.
    state = {k[len("module."):]: v for k, v in state.items()}
  return {k: np.asarray(v, np.float32) for k, v in state.items()}


def _read_torch_state_dict(path) -> dict[str, np.ndarray]:
  try:
    import torch  # Optional: only .pth files need it.
  except ImportError:
    raise WeightImportError(
        f"{path} is a PyTorch file; reading it needs torch, which is not "
        "installed. Either `pip install torch`, or use the .safetensors file "
        "of the same weights (timm publishes one, e.g. model.safetensors in "
        "the Hugging Face repository timm/dm_nfnet_f0.dm_in1k; or convert with "
        "safetensors.torch.save_file on a machine that has torch).") from None
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for bad or unsafe files.
    raise WeightImportError(f"{path} could not be read by torch.load("
                            f"weights_only=True): {e}") from None
  for wrapper in ("state_dict", "model"):  # Training checkpoints nest it.
    if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
      state = state[wrapper]
  return {k: v.detach().float().numpy() for k, v in state.items()
          if torch.is_tensor(v)}


# ----------------------------------------------------------------------------
# Names and layouts. Our parameter paths ("nf_block_3/conv1/kernel") are the
# hub; for each source there is a function giving the source's name of one of
# our paths, and the forward translation keeps a key only when that function
# gives back exactly the key it came from.
# ----------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------
# Inferring the architecture from parameter shapes.
# ----------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------
# Conversion: translate, infer, build the model, check every tensor.
# ----------------------------------------------------------------------------


def _assemble(flat: Mapping[str, np.ndarray], names: Mapping[str, str],
              unmapped: Sequence[str], source: str,
              source_name: Callable[[str, NFNet], str],
              numerics: Mapping[str, Any],
              overrides: Mapping[str, Any]) -> tuple[NFNet, dict]:
  shapes = {path: tuple(np.shape(v)) for path, v in flat.items()}
  try:
    inferred = infer_model_kwargs(shapes)
  except WeightImportError as e:
    if not overrides:
      unrecognised = "".join(f"\n  - {k}" for k in sorted(unmapped)[:20])
      raise WeightImportError(
          f"{source}: {e}" + (f"\nKeys not recognised:{unrecognised}"
                              if unrecognised else "")) from None
    inferred = {}  # The caller described the model; check the file against it.
  model = NFNet(**{**inferred, **numerics, **overrides})
  expected = {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(
      abstract_params(model), sep="/").items()}

  problems = [f"unexpected {key} (no NFNet counterpart)" for key in unmapped]
  problems += [f"unexpected {names[p]} (would be {p}, which this model lacks)"
               for p in sorted(flat.keys() - expected.keys())]
  problems += [f"missing {source_name(p, model)} (our {p}, shape {expected[p]})"
               for p in sorted(expected.keys() - flat.keys())]
  problems += [f"wrong shape {names[p]}: {shapes[p]} in the file (after "
               f"layout conversion), {expected[p]} expected for our {p}"
               for p in sorted(flat.keys() & expected.keys())
               if shapes[p] != expected[p]]
  if problems:
    raise WeightImportError(
        f"{source} does not match {describe_model(model)}; "
        f"{len(problems)} problem(s):\n  - " + "\n  - ".join(problems) +
        "\nIf the architecture was inferred wrongly, pass the NFNet fields "
        "explicitly (e.g. load_timm(path, variant='F1')).")
  params = traverse_util.unflatten_dict(
      {tuple(p.split("/")): np.asarray(v, np.float32) for p, v in flat.items()})
  return model, params


def convert_haiku_params(haiku_params: Mapping[str, Mapping[str, Any]],
                         source: str = "Haiku parameters",
                         **model_overrides: Any) -> tuple[NFNet, dict]:
  """DeepMind Haiku {module: {leaf: array}} -> (NFNet, our params)."""
  flat, names, unmapped = haiku_to_flat(haiku_params)
  return _assemble(flat, names, unmapped, source,
                   lambda path, _: haiku_name(path), DEEPMIND_NUMERICS,
                   model_overrides)


def convert_timm_state_dict(state_dict: Mapping[str, Any],
                            source: str = "timm state dict",
                            **model_overrides: Any) -> tuple[NFNet, dict]:
  """timm `dm_nfnet_*` state dict -> (NFNet with timm numerics, our params)."""
  flat, names, unmapped = timm_to_flat(state_dict)
  return _assemble(flat, names, unmapped, source,
                   lambda path, model: timm_name(path, model.stage_depths()),
                   TIMM_NUMERICS, model_overrides)


def load_deepmind(path: str | os.PathLike,
                  **model_overrides: Any) -> tuple[NFNet, dict]:
  """Reads DeepMind's `F*_haiku.npz` -> (NFNet, params).

  `model_overrides` are NFNet fields that win over what the file implies
  (architecture fields when inference cannot work, or runtime ones such as
  `dtype`, `drop_rate`).
  """
  return convert_haiku_params(read_haiku_pickle(path), str(path),
                              **model_overrides)


def load_timm(path: str | os.PathLike,
              **model_overrides: Any) -> tuple[NFNet, dict]:
  """Reads a timm `dm_nfnet_*` state dict (.safetensors, or .pth with torch)
  -> (NFNet with timm's numerics, params)."""
  return convert_timm_state_dict(read_timm_state_dict(path), str(path),
                                 **model_overrides)


# ----------------------------------------------------------------------------
# Our converted checkpoint: an orbax PyTree checkpoint of {"params": params}
# with the model description in model.json inside the same directory.
# ----------------------------------------------------------------------------


def save_converted(directory: str | os.PathLike, model: NFNet, params) -> None:
  """Writes `directory` (must not exist) with params and model.json."""
  import orbax.checkpoint as ocp
  directory = os.path.abspath(directory)
  if os.path.exists(directory):
    raise WeightImportError(
        f"{directory} already exists; converted weights are never written "
        "over an existing path. Choose a new destination or remove it.")
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, {"params": params})
  with open(os.path.join(directory, MODEL_DESCRIPTION_FILE), "w") as f:
    json.dump(model_to_description(model), f, indent=2)
    f.write("\n")


def load_converted(directory: str | os.PathLike,
                   **model_overrides: Any) -> tuple[NFNet, dict]:
  """Reads what `save_converted` wrote -> (NFNet, params as numpy arrays)."""
  import orbax.checkpoint as ocp
  directory = os.path.abspath(directory)
  description_file = os.path.join(directory, MODEL_DESCRIPTION_FILE)
  if not os.path.isfile(description_file):
    raise WeightImportError(
        f"{directory} has no {MODEL_DESCRIPTION_FILE}; it is not a directory "
        "written by `python -m nfnet.convert`.")
  with open(description_file) as f:
    model = model_from_description(json.load(f), **model_overrides)
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(directory)["params"]
  return model, params


# ----------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------

_READERS = {
    "deepmind": ("DeepMind Haiku pickle", read_haiku_pickle,
                 convert_haiku_params),
    "timm": ("timm state dict", read_timm_state_dict, convert_timm_state_dict),
}


def _count_tensors(raw) -> int:
  if isinstance(next(iter(raw.values()), None), Mapping):  # Haiku: 2 levels.
    return sum(len(leaves) for leaves in raw.values())
  return len(raw)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m nfnet.convert",
      description="Convert released NFNet weights (DeepMind F*_haiku.npz or "
      "timm dm_nfnet_* .safetensors/.pth) into this toolkit's checkpoint: an "
      "orbax checkpoint of {'params': ...} plus model.json.")
  parser.add_argument("source", choices=sorted(_READERS))
  parser.add_argument("src", help="the weight file to read")
  parser.add_argument("dst", help="the checkpoint directory to create")
  args = parser.parse_args(argv)

  kind, read, convert = _READERS[args.source]
  try:
    if os.path.exists(args.dst):
      raise WeightImportError(f"{args.dst} already exists; choose a new "
                              "destination (nothing is overwritten).")
    if not os.path.isfile(args.src):
      raise WeightImportError(f"No such weight file: {args.src}")
    start = time.perf_counter()
    print(f"Reading {kind} {args.src} ...", flush=True)
    raw = read(args.src)
    print(f"  {_count_tensors(raw)} tensors read in "
          f"{time.perf_counter() - start:.1f}s", flush=True)
    model, params = convert(raw, args.src)
    leaves = traverse_util.flatten_dict(params)
    print(f"Inferred {describe_model(model)}")
    print(f"Mapped {len(leaves)} tensors, {count_params(params):,} parameters")
    print(f"Writing {args.dst} ...", flush=True)
    save_converted(args.dst, model, params)
    print(f"Wrote {args.dst} (orbax params + {MODEL_DESCRIPTION_FILE}) in "
          f"{time.perf_counter() - start:.1f}s total")
  except (WeightImportError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
