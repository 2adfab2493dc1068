"""Random access to TFRecord shards through an index of record offsets.

A TFRecord file is a sequence of frames::

    uint64 length | uint32 masked_crc32c(length) | data[length] | uint32 masked_crc32c(data)

so record ``i`` can be read with one ``pread`` once its offset is known. The
index of a shard is a ``.npy`` int64 array of ``N + 1`` frame start offsets
(the last one is the file size, which also detects a stale index). It is
built once by one sequential pass over the frame headers (no data is read):

    python -m data.index 'gs-mounted/or/local/train-*.tfrecord'

and stored beside the shard as ``<shard>.index.npy``, or, where that
directory is not writable (or ``index_dir`` / ``$NFNET_DATA_INDEX_DIR`` asks
for it), in a cache directory under a name derived from the shard's absolute
path. Readers memory-map the index, so worker processes share its pages.

CRC checks are optional (``verify_crc=True``): they use ``google_crc32c`` or
``crc32c`` when installed and a pure-Python table otherwise (correct but slow,
~10 MB/s). ``python -m data.index --check-crc`` verifies every record the
same way while it builds the indexes.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Optional

import numpy as np
from data.errors import DataError

INDEX_SUFFIX = ".index.npy"
INDEX_DIR_ENV = "NFNET_DATA_INDEX_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "nfnet_toolkit", "tfrecord_index")
_HEADER = struct.Struct("<QI")
_FOOTER_SIZE = 4
_FRAME_OVERHEAD = _HEADER.size + _FOOTER_SIZE


class TFRecordError(DataError):
  """A TFRecord file is truncated or its checksums do not match."""


# ------------------------------------------------------------------- crc32c


def _make_crc32c_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_CRC32C_TABLE = _make_crc32c_table()


def _crc32c_python(data) -> int:
  crc = 0xFFFFFFFF
  table = _CRC32C_TABLE
  for byte in bytes(data):
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _pick_crc32c():
  try:
    import google_crc32c  # pylint: disable=import-outside-toplevel
    return lambda data: google_crc32c.value(bytes(data))
  except ImportError:
    pass
  try:
    import crc32c  # pylint: disable=import-outside-toplevel
    return lambda data: crc32c.crc32c(bytes(data))
  except ImportError:
    return _crc32c_python


crc32c = _pick_crc32c()


def masked_crc32c(data) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# -------------------------------------------------------------------- index


def scan_offsets(path: str) -> np.ndarray:
  """Frame start offsets of every record in ``path``, plus the file size (N + 1)."""
  size = os.path.getsize(path)
  offsets = []
  with open(path, "rb", buffering=0) as f:
    offset = 0
    while offset < size:
      header = os.pread(f.fileno(), _HEADER.size, offset)
      if len(header) < _HEADER.size:
        raise TFRecordError(
            f"{path}: truncated record header at byte {offset} (record {len(offsets)}); "
            "the file is incomplete. Re-copy or regenerate it.")
      length, _ = _HEADER.unpack(header)
      end = offset + _FRAME_OVERHEAD + length
      if end > size:
        raise TFRecordError(
            f"{path}: record {len(offsets)} at byte {offset} claims {length} bytes but the "
            "file ends first; the file is truncated or not a TFRecord. Re-copy or "
            "regenerate it.")
      offsets.append(offset)
      offset = end
  offsets.append(size)
  return np.asarray(offsets, np.int64)


def _cache_dir(index_dir: Optional[str]) -> str:
  return os.path.expanduser(index_dir or os.environ.get(INDEX_DIR_ENV) or DEFAULT_CACHE_DIR)


def _cached_index_path(path: str, index_dir: Optional[str]) -> str:
  absolute = os.path.abspath(path)
  digest = hashlib.sha1(absolute.encode()).hexdigest()[:16]
  return os.path.join(_cache_dir(index_dir), f"{digest}-{os.path.basename(path)}{INDEX_SUFFIX}")


def index_candidates(path: str, index_dir: Optional[str] = None) -> list[str]:
  """Where an index of ``path`` may live, in lookup order."""
  beside = path + INDEX_SUFFIX
  cached = _cached_index_path(path, index_dir)
  return [cached, beside] if index_dir else [beside, cached]


def _is_current(offsets: np.ndarray, path: str) -> bool:
  return offsets.ndim == 1 and len(offsets) >= 1 and int(offsets[-1]) == os.path.getsize(path)


def _save_atomically(index_path: str, offsets: np.ndarray) -> None:
  os.makedirs(os.path.dirname(index_path) or ".", exist_ok=True)
  # Ends in .tmp, which source globs skip: another host may be writing it.
  tmp = f"{index_path}.{os.getpid()}.tmp"
  with open(tmp, "wb") as f:
    np.save(f, offsets)
  os.replace(tmp, index_path)


def write_index(path: str, index_dir: Optional[str] = None) -> str:
  """Builds the index of ``path`` and stores it; returns where.

  Stored beside the shard unless ``index_dir`` is given or the shard's
  directory is not writable, then in the cache directory.
  """
  offsets = scan_offsets(path)
  targets = index_candidates(path, index_dir)
  last_error = None
  for index_path in targets:
    try:
      _save_atomically(index_path, offsets)
      return index_path
    except OSError as e:
      last_error = e
  raise OSError(f"cannot write an index for {path} to any of {targets}: {last_error}")


def load_index(path: str, index_dir: Optional[str] = None, build: bool = True) -> np.ndarray:
  """The (memory-mapped) offsets of ``path``; builds and stores them when missing or stale."""
  for index_path in index_candidates(path, index_dir):
    if os.path.exists(index_path):
      offsets = np.load(index_path, mmap_mode="r")
      if _is_current(offsets, path):
        return offsets
  if not build:
    raise FileNotFoundError(
        f"no current index for {path}; build it with `python -m data.index '{path}'`.")
  return np.load(write_index(path, index_dir), mmap_mode="r")


# ------------------------------------------------------------- read / write


def read_record(fd: int, start: int, end: int, verify_crc: bool = False,
                path: str = "", index: int = -1) -> bytes:
  """The data of the frame spanning bytes ``[start, end)`` of the open file ``fd``."""
  if not verify_crc:
    data = os.pread(fd, end - start - _FRAME_OVERHEAD, start + _HEADER.size)
    if len(data) != end - start - _FRAME_OVERHEAD:
      raise TFRecordError(f"{path}: record {index} is truncated.")
    return data
  frame = os.pread(fd, end - start, start)
  length, length_crc = _HEADER.unpack_from(frame)
  if length != end - start - _FRAME_OVERHEAD or len(frame) != end - start:
    raise TFRecordError(f"{path}: record {index} does not match the index; rebuild it with "
                        f"`python -m data.index '{path}'`.")
  if masked_crc32c(frame[:8]) != length_crc:
    raise TFRecordError(f"{path}: record {index} has a bad length checksum.")
  data = frame[_HEADER.size:_HEADER.size + length]
  (data_crc,) = struct.unpack_from("<I", frame, _HEADER.size + length)
  if masked_crc32c(data) != data_crc:
    raise TFRecordError(f"{path}: record {index} has a bad data checksum.")
  return data


def frame(data: bytes) -> bytes:
  """One TFRecord frame holding ``data``."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data +
          struct.pack("<I", masked_crc32c(data)))


class TFRecordWriter:
  """Writes TFRecord files readable by TensorFlow (and :func:`scan_offsets`).

  Uses TensorFlow's C++ writer when TensorFlow is importable (fast CRCs), else
  the framing above.
  """

  def __init__(self, path: str):
    self._path = path
    try:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      self._tf_writer = tf.io.TFRecordWriter(path)
      self._file = None
    except ImportError:
      self._tf_writer = None
      self._file = open(path, "wb")

  def write(self, data: bytes) -> None:
    if self._tf_writer is not None:
      self._tf_writer.write(data)
    else:
      self._file.write(frame(data))

  def close(self) -> None:
    if self._tf_writer is not None:
      self._tf_writer.close()
    else:
      self._file.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
