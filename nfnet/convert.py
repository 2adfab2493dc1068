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

The readers, the name mapping and the architecture inference are the modules
of `nfnet/weights/`; this module assembles them and is the command line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from flax import traverse_util

from nfnet.errors import WeightImportError
from nfnet.info import abstract_params
from nfnet.model import NFNet, count_params
from nfnet.weights.architecture import infer_model_kwargs
from nfnet.weights.description import (describe_model, model_from_description,
                                       model_to_description)
from nfnet.weights.haiku_pickle import read_haiku_pickle
from nfnet.weights.names import haiku_name, haiku_to_flat, timm_name, timm_to_flat
from nfnet.weights.timm_file import read_timm_state_dict

# The timm `dm_nfnet_*` numerics (timm/models/nfnet.py `_dm_nfnet_cfg`:
# gamma_in_act, std_conv_eps=1e-5, act_layer='gelu' = torch's exact erf GELU).
TIMM_NUMERICS = dict(activation="gelu_exact", ws_eps_mode="add", ws_eps=1e-5)
# DeepMind's reference numerics (the model's defaults), written out so that a
# converted checkpoint's model.json records them whatever the defaults become.
DEEPMIND_NUMERICS = dict(activation="gelu", ws_eps_mode="floor", ws_eps=1e-4)

MODEL_DESCRIPTION_FILE = "model.json"


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
  """Reads a timm `dm_nfnet_*` state dict (.safetensors, .pth or .bin)
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
