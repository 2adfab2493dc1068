"""Reading PyTorch checkpoints without PyTorch.

`torch.save` (PyTorch 1.6 and later) writes a zip archive: `<name>/data.pkl`,
a pickle of the saved object in which every tensor names a raw storage
`<name>/data/<key>` by key, and `<name>/byteorder`. timm's `.pth` files and
Hugging Face's `pytorch_model.bin` are such archives. This module reads one
into the same object with numpy arrays in place of tensors, so a JAX machine
needs no PyTorch to import those weights.

The unpickler is restricted: the few torch functions a tensor pickle calls
(`torch._utils._rebuild_tensor_v2` and friends) and the storage and dtype
names are reimplemented here, `collections.OrderedDict` is allowed, and any
other class the pickle names becomes an inert `OpaqueObject` that only
records its arguments. Reading a file never runs code from it, which is the
safety `torch.load(weights_only=True)` gives, and a training checkpoint that
also pickles its optimizer or an `argparse.Namespace` still reads.
"""
from __future__ import annotations

import collections
import os
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from nfnet.errors import WeightImportError

# torch's storage classes and dtype names -> numpy dtypes (little-endian;
# the archive's byteorder record says otherwise for big-endian writers).
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "HalfStorage": np.float16, "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}
TORCH_DTYPES = {
    "float32": np.float32, "float": np.float32, "float64": np.float64,
    "double": np.float64, "float16": np.float16, "half": np.float16,
    "bfloat16": ml_dtypes.bfloat16, "int64": np.int64, "long": np.int64,
    "int32": np.int32, "int": np.int32, "int16": np.int16, "int8": np.int8,
    "uint8": np.uint8, "bool": np.bool_, "uint16": np.uint16,
    "uint32": np.uint32, "uint64": np.uint64,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2,
}


class OpaqueObject:
  """Stands for an object of a class this reader does not rebuild (an
  optimizer's state class, an argparse.Namespace, ...): it keeps the
  arguments and state the pickle gave it and nothing runs."""
  qualified_name = "?"
  # Class-level defaults: a pickle may create the object without calling
  # __init__ (NEWOBJ), then only set its state.
  args: tuple = ()
  state: Any = None

  def __init__(self, *args, **kwargs):
    self.args = args + tuple(kwargs.items())

  def __setstate__(self, state):
    self.state = state

  @property
  def items(self) -> list:
    """What the pickle appended or set as items (list or dict subclasses)."""
    return self.__dict__.setdefault("_items", [])

  def append(self, item):
    self.items.append(item)

  def extend(self, items):
    self.items.extend(items)

  def __setitem__(self, key, value):
    self.items.append((key, value))

  def __repr__(self):
    return f"<unread {self.qualified_name}>"


class _Dtype:
  """A torch dtype or storage class named by the pickle."""

  def __init__(self, name: str, dtype):
    self.name, self.dtype = name, np.dtype(dtype)


def _strided(flat: np.ndarray, offset: int, size, stride) -> np.ndarray:
  """The tensor `size` / `stride` / `offset` describe over `flat` (in
  elements), copied; refuses one that would read past the storage."""
  size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
  if len(size) != len(stride) or offset < 0 or any(s < 0 for s in stride):
    raise WeightImportError(f"a tensor of size {size}, stride {stride} and "
                            f"offset {offset} is not a valid view")
  if 0 in size:
    return np.zeros(size, flat.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= flat.size:
    raise WeightImportError(
        f"a tensor of size {size} reads element {last} of a storage of "
        f"{flat.size}: the file is damaged")
  return np.lib.stride_tricks.as_strided(
      flat[offset:], shape=size,
      strides=[s * flat.itemsize for s in stride]).copy()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                       backward_hooks, metadata=None):
  del requires_grad, backward_hooks, metadata
  return _strided(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad,
                       backward_hooks, dtype, metadata=None):
  """Tensors of the newer dtypes: an untyped (byte) storage viewed as `dtype`."""
  del requires_grad, backward_hooks, metadata
  if not isinstance(dtype, _Dtype):
    raise WeightImportError(f"a tensor of an unknown dtype ({dtype!r})")
  usable = storage.size - storage.size % dtype.dtype.itemsize
  typed = storage[:usable].view(dtype.dtype.newbyteorder(storage.dtype.byteorder))
  return _strided(typed, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
  del requires_grad, backward_hooks, state
  return data


REBUILDERS = {
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_tensor_v3": _rebuild_tensor_v3,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  """Resolves only the names listed above; storages come from the archive."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
    super().__init__(file)
    self._archive, self._prefix = archive, prefix
    self._byteorder = "<" if byteorder == "little" else ">"
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in REBUILDERS:
      return REBUILDERS[name]
    if module in ("torch", "torch.storage") and name in STORAGE_DTYPES:
      return _Dtype(name, STORAGE_DTYPES[name])
    if module == "torch" and name in TORCH_DTYPES:
      return _Dtype(name, TORCH_DTYPES[name])
    return type(name, (OpaqueObject,), {"qualified_name": f"{module}.{name}"})

  def persistent_load(self, pid):
    # ('storage', storage class, key, device, element count)
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise WeightImportError(f"an unknown persistent id in the pickle: {pid!r}")
    _, storage_type, key, _, count = pid
    if not isinstance(storage_type, _Dtype):
      raise WeightImportError(f"storage {key} has an unknown type "
                              f"({storage_type!r})")
    if key not in self._storages:
      dtype = storage_type.dtype.newbyteorder(self._byteorder)
      raw = self._archive.read(f"{self._prefix}data/{key}")
      if len(raw) < count * dtype.itemsize:
        raise WeightImportError(
            f"storage {key} holds {len(raw)} bytes, not the {count} "
            f"{dtype.name} values the pickle says: the file is damaged")
      self._storages[key] = np.frombuffer(raw, dtype, count)
    return self._storages[key]


def is_torch_zip(path: str | os.PathLike) -> bool:
  """True for a zip archive holding a torch.save pickle (`*/data.pkl`)."""
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    return _pickle_name(archive) is not None


def _pickle_name(archive: zipfile.ZipFile) -> str | None:
  names = [n for n in archive.namelist()
           if n.endswith("/data.pkl") and n.count("/") == 1]
  return names[0] if len(names) == 1 else None


def load(path: str | os.PathLike) -> Any:
  """The object torch.save wrote to `path`, tensors as numpy arrays (their
  own dtype; bfloat16 as ml_dtypes.bfloat16)."""
  with zipfile.ZipFile(path) as archive:
    pickle_name = _pickle_name(archive)
    if pickle_name is None:
      raise WeightImportError(f"{path} is a zip archive but not one written "
                              "by torch.save (no <name>/data.pkl inside)")
    prefix = pickle_name[:-len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
      byteorder = archive.read(f"{prefix}byteorder").decode().strip()
    with archive.open(pickle_name) as file:
      try:
        return _Unpickler(file, archive, prefix, byteorder).load()
      except WeightImportError as e:
        raise WeightImportError(f"{path}: {e}") from None
      except (pickle.UnpicklingError, EOFError, KeyError, TypeError,
              ValueError) as e:
        raise WeightImportError(f"{path} is not a readable torch.save "
                                f"archive ({type(e).__name__}: {e})") from None
