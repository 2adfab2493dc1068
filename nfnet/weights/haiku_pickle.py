"""Reading DeepMind's Haiku pickles (`F*_haiku.npz`), safely.

They are dill pickles, and unpickling can run any code the file asks for.
`read_haiku_pickle` admits only numpy arrays and plain containers and refuses
everything else before it is called.
"""
from __future__ import annotations

import codecs
import collections
import os
import pickle
from typing import Any, Mapping

import numpy as np

from nfnet.errors import WeightImportError

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
      if str(e).startswith("refusing to load"):
        raise WeightImportError(f"{path}: {e}") from None
      # Not a pickle at all (an HTML error page, a PNG, a cut-off download).
      raise WeightImportError(
          f"{path} is not a readable Haiku parameter pickle ({e}). Check "
          "that it is DeepMind's F*_haiku.npz and the download is "
          "complete.") from None
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
