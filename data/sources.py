"""Random-access image-classification sources, each named by one string.

``open_source(spec, **options)`` returns a source for any of::

    arrayrecord:GLOB               ArrayRecord shards of serialized tf.train.Example
    tfrecord:GLOB                  TFRecord shards, random access through an offset
                                   index (data/tfrecord.py; built on first use or by
                                   `python -m data.index GLOB`)
    tfds:NAME[:VERSION]/SPLIT      a TFDS dataset prepared in array_record format,
                                   e.g. tfds:imagenet2012/train[:99%] (NAME may hold a
                                   config: tfds:foo/bar:1.0.0/test); never downloads
    folder:PATH                    PATH/<class>/*.jpg|jpeg|png|..., classes indexed in
                                   sorted name order

Every source is a grain random-access data source (``len(source)``,
``source[i]``), so ``grain.MapDataset.source(source)`` works, and has:

- ``source[i] -> Record``: ``image`` (encoded bytes or a memoryview of them),
  ``labels`` (int64 array: one entry for single-label data, any number for
  multi-label data) and ``id`` (str or None). A record that cannot be parsed
  raises :class:`CorruptRecordError`, which names the file and record index.
- ``num_classes`` (int, or None when nothing says; the loaders then ask for
  it), ``multi_label`` (bool), ``label_names`` (list or None), ``spec``.
- ``locate(i) -> RecordLocation``: the file and the record's index in it, for
  messages (``str(location)`` reads ``path [record 17]``).

Record format options (tf.train.Example sources): ``image_key`` (default
``image/encoded``), ``label_key`` (default ``image/class/label``, an int64 list
of one or many labels), ``id_key`` (default: ``image/id`` else
``image/filename`` when present). For ``tfds:`` the defaults are ``image`` and
``label``. Label-space options: ``num_classes``, ``multi_label``,
``label_names``; when not given they come from ``dataset_info.json`` beside the
shards (data/dataset_info.py), from TFDS metadata, or from the folder names.
Other options: ``index_dir``, ``verify_crc`` (tfrecord), ``data_dir`` (tfds).

Sources hold no open files when pickled; each process opens what it reads.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import glob as glob_lib
import os
import threading
from typing import Any, Optional

import numpy as np

from data import dataset_info
from data import tf_example
from data import tfrecord
from data.errors import DataError

DEFAULT_IMAGE_KEY = "image/encoded"
DEFAULT_LABEL_KEY = "image/class/label"
DEFAULT_ID_KEYS = ("image/id", "image/filename")
TFDS_IMAGE_KEY = "image"
TFDS_LABEL_KEY = "label"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SOURCE_KINDS = ("arrayrecord", "tfrecord", "tfds", "folder")
# TFRecord shards a reading thread keeps open (see TFRecordSource._open_shard).
OPEN_SHARDS_PER_THREAD = 64
# Up to this many records, a process holds every shard's offsets in memory
# (8 bytes a record) and reopening an evicted shard is one open(); above it,
# the offsets are memory-mapped with their shard, a second descriptor each.
OFFSETS_IN_MEMORY_MAX_RECORDS = 1 << 23


class CorruptRecordError(DataError):
  """A record that cannot be read, parsed or decoded; names file and index."""

  def __init__(self, location: "RecordLocation", reason: str):
    self.location = location
    self.reason = reason
    super().__init__(
        f"Corrupt record {location}: {reason}. List every corrupt record with "
        f"`python -m data.inspect SPEC --check`; fix or drop them, or pass "
        f"skip_corrupt=True to skip and count them.")


@dataclasses.dataclass(frozen=True)
class RecordLocation:
  path: str
  index: int  # the record's index inside `path` (0 for one-file-per-image sources)

  def __str__(self) -> str:
    return f"{self.path} [record {self.index}]"


@dataclasses.dataclass
class Record:
  image: Any  # encoded image: bytes or a memoryview of them
  labels: np.ndarray  # int64 [num_labels]
  id: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class LabelSpace:
  num_classes: Optional[int]
  multi_label: bool = False
  label_names: Optional[list] = None


# ------------------------------------------------------------------ helpers


def expand_glob(pattern: str) -> list[str]:
  """Sorted files matching ``pattern``, without index or info files."""
  paths = sorted(
      p for p in glob_lib.glob(os.path.expanduser(pattern))
      if os.path.isfile(p) and tfrecord.INDEX_SUFFIX not in os.path.basename(p)
      and os.path.basename(p) != dataset_info.INFO_FILENAME and not p.endswith(".tmp"))
  if not paths:
    raise FileNotFoundError(f"No files match {pattern!r}; check the path and the glob.")
  return paths


_LABEL_OPTIONS = ("num_classes", "multi_label", "label_names")


def _check_label_options(options: dict[str, Any]) -> None:
  unknown = sorted(set(options) - set(_LABEL_OPTIONS))
  if unknown:
    raise TypeError(f"unexpected keyword argument(s) {unknown}")


def _label_space(options: dict[str, Any], info: Optional[dict[str, Any]],
                 fallback: Optional[LabelSpace] = None) -> LabelSpace:
  info = info or {}
  fallback = fallback or LabelSpace(None)
  def pick(key, default):
    if options.get(key) is not None:
      return options[key]
    if info.get(key) is not None:
      return info[key]
    return default
  return LabelSpace(
      num_classes=pick("num_classes", fallback.num_classes),
      multi_label=bool(pick("multi_label", fallback.multi_label)),
      label_names=pick("label_names", fallback.label_names))


def _id_string(value) -> Optional[str]:
  if not value:
    return None
  return bytes(value[0]).decode("utf-8", "replace")


# ------------------------------------------------------------------ sources


class Source:
  """Shared behaviour; subclasses implement ``__len__``, ``__getitem__``, ``locate``."""

  spec: str = ""
  label_space: LabelSpace = LabelSpace(None)

  @property
  def num_classes(self) -> Optional[int]:
    return self.label_space.num_classes

  @property
  def multi_label(self) -> bool:
    return self.label_space.multi_label

  @property
  def label_names(self) -> Optional[list]:
    return self.label_space.label_names

  def locate(self, index: int) -> RecordLocation:
    raise NotImplementedError

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.spec!r}, {len(self)} records)"


class ExampleSource(Source):
  """A source whose records are serialized tf.train.Example; subclasses read bytes."""

  def __init__(self, image_key: str, label_key: str, id_key: Optional[str]):
    self.image_key = image_key
    self.label_key = label_key
    self._id_keys = (id_key,) if id_key else DEFAULT_ID_KEYS
    self._keys = (image_key, label_key) + self._id_keys

  def read_serialized(self, index: int) -> bytes:
    raise NotImplementedError

  def parse(self, serialized, index: int) -> Record:
    try:
      features = tf_example.parse_example(serialized, self._keys)
    except tf_example.ExampleParseError as e:
      raise CorruptRecordError(self.locate(index), f"not a tf.train.Example ({e})") from None
    images = features.get(self.image_key)
    if not images:
      raise CorruptRecordError(
          self.locate(index), f"no {self.image_key!r} bytes feature (pass image_key=...)")
    labels = features.get(self.label_key)
    if labels is None or not isinstance(labels, np.ndarray) or labels.dtype != np.int64:
      raise CorruptRecordError(
          self.locate(index), f"no {self.label_key!r} int64 feature (pass label_key=...)")
    record_id = None
    for key in self._id_keys:
      if key in features:
        record_id = _id_string(features[key])
        break
    return Record(image=images[0], labels=labels, id=record_id)

  def __getitem__(self, index: int) -> Record:
    index = int(index)
    try:
      serialized = self.read_serialized(index)
    except (OSError, ValueError, RuntimeError) as e:
      if isinstance(e, CorruptRecordError) or _out_of_descriptors(e):
        raise
      raise CorruptRecordError(self.locate(index), f"unreadable ({e})") from None
    return self.parse(serialized, index)


def _out_of_descriptors(error: Exception) -> bool:
  """The process ran out of file descriptors: the machine's limit, not the
  record, so never counted (or skipped) as a corrupt record."""
  return isinstance(error, OSError) and error.errno in (errno.EMFILE,
                                                        errno.ENFILE)


def _array_record_location(ar_source, index: int) -> RecordLocation:
  # array_record's ArrayRecordDataSource maps a global key to (file, position);
  # its helper is private, so keep the one use here.
  reader_idx, position = ar_source._reader_idx_and_position(index)  # pylint: disable=protected-access
  path = ar_source._read_instructions[reader_idx].filename  # pylint: disable=protected-access
  return RecordLocation(str(path), int(position))


class ArrayRecordSource(ExampleSource):
  """ArrayRecord shards (``arrayrecord:GLOB``)."""

  def __init__(self, pattern: str, *, image_key: Optional[str] = None,
               label_key: Optional[str] = None, id_key: Optional[str] = None, **label_options):
    import grain  # pylint: disable=import-outside-toplevel
    _check_label_options(label_options)
    self.paths = expand_glob(pattern)
    info = dataset_info.read_info_for_files(self.paths) or {}
    super().__init__(image_key or info.get("image_key") or DEFAULT_IMAGE_KEY,
                     label_key or info.get("label_key") or DEFAULT_LABEL_KEY, id_key)
    self.spec = f"arrayrecord:{pattern}"
    self.label_space = _label_space(label_options, info)
    self._source = grain.sources.ArrayRecordDataSource(self.paths)

  def __len__(self) -> int:
    return len(self._source)

  def read_serialized(self, index: int) -> bytes:
    return self._source[index]

  def locate(self, index: int) -> RecordLocation:
    return _array_record_location(self._source, index)


class TFRecordSource(ExampleSource):
  """TFRecord shards (``tfrecord:GLOB``), random access through offset indexes."""

  def __init__(self, pattern: str, *, image_key: Optional[str] = None,
               label_key: Optional[str] = None, id_key: Optional[str] = None,
               index_dir: Optional[str] = None, verify_crc: bool = False,
               build_index: bool = True, **label_options):
    _check_label_options(label_options)
    self.paths = expand_glob(pattern)
    info = dataset_info.read_info_for_files(self.paths) or {}
    super().__init__(image_key or info.get("image_key") or DEFAULT_IMAGE_KEY,
                     label_key or info.get("label_key") or DEFAULT_LABEL_KEY, id_key)
    self.spec = f"tfrecord:{pattern}"
    self.label_space = _label_space(label_options, info)
    self.index_dir = index_dir
    self.verify_crc = verify_crc
    counts = [len(tfrecord.load_index(p, index_dir, build=build_index)) - 1 for p in self.paths]
    self._ends = np.cumsum(counts)
    self._local = threading.local()  # each reading thread's open shards
    self._offsets: Optional[list] = None  # in memory, loaded per process

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_local"], state["_offsets"] = None, None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._local = threading.local()

  def __len__(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def _file_and_position(self, index: int) -> tuple[int, int]:
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range for {len(self)} records")
    file_index = int(np.searchsorted(self._ends, index, side="right"))
    start = int(self._ends[file_index - 1]) if file_index else 0
    return file_index, index - start

  def locate(self, index: int) -> RecordLocation:
    file_index, position = self._file_and_position(index)
    return RecordLocation(self.paths[file_index], position)

  def read_serialized(self, index: int) -> bytes:
    file_index, position = self._file_and_position(index)
    shard, offsets = self._open_shard(file_index)
    return tfrecord.read_record(shard.fileno(), int(offsets[position]),
                                int(offsets[position + 1]), self.verify_crc,
                                self.paths[file_index], position)

  def _open_shard(self, file_index: int):
    """(open file, offsets) of a shard, from this thread's least-recently-
    used cache: a global shuffle touches every shard, and keeping them all
    open (with their indexes' memory maps, two descriptors a shard) ran out
    of descriptors at about 500 shards under `ulimit -n 1024`. Per thread,
    so no thread closes a file another is reading."""
    cache = getattr(self._local, "shards", None)
    if cache is None:
      cache = self._local.shards = collections.OrderedDict()
    shard = cache.pop(file_index, None)
    if shard is None:
      if len(cache) >= OPEN_SHARDS_PER_THREAD:
        _, (evicted, _) = cache.popitem(last=False)
        evicted.close()
      shard = (open(self.paths[file_index], "rb", buffering=0),
               self._shard_offsets(file_index))
    cache[file_index] = shard
    return shard

  def _shard_offsets(self, file_index: int) -> np.ndarray:
    if self._offsets is None and len(self) <= OFFSETS_IN_MEMORY_MAX_RECORDS:
      self._offsets = [np.array(tfrecord.load_index(p, self.index_dir, build=False))
                       for p in self.paths]
    if self._offsets is not None:
      return self._offsets[file_index]
    return tfrecord.load_index(self.paths[file_index], self.index_dir, build=False)


def parse_tfds_spec(rest: str) -> tuple[str, str]:
  """``NAME[/CONFIG][:VERSION]/SPLIT`` -> (name for tfds, split)."""
  name, sep, split = rest.rpartition("/")
  if not sep or not name or not split:
    raise DataError(
        f"tfds source {rest!r} must look like NAME[:VERSION]/SPLIT, e.g. "
        "tfds:imagenet2012/train or tfds:imagenet2012:5.1.0/validation[:50%].")
  return name, split


def _tfds_feature(features, key: str):
  """(the feature at `key`, whether it holds several values per example).
  A `/`-path walks nested features: `objects/label` of a Sequence of
  {label, bbox} (VOC's, COCO's objects) is a ClassLabel inside a Sequence,
  so each image has as many labels as objects."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  feature, repeated = features, False
  for part in key.split("/"):
    feature = feature[part]
    while isinstance(feature, tfds.features.Sequence):
      repeated, feature = True, feature.feature
  return feature, repeated


class TFDSSource(ExampleSource):
  """A TFDS dataset prepared in array_record format (``tfds:NAME[:VERSION]/SPLIT``).

  Reads raw records through ``tfds.data_source`` (never downloads) and parses
  them here, so TensorFlow decodes nothing. The image and label keys are the
  feature names of the builder (defaults ``image`` and ``label``).
  """

  def __init__(self, rest: str, *, data_dir: Optional[str] = None,
               image_key: Optional[str] = None, label_key: Optional[str] = None,
               id_key: Optional[str] = None, **label_options):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    _check_label_options(label_options)
    name, split = parse_tfds_spec(rest)
    super().__init__(image_key or TFDS_IMAGE_KEY, label_key or TFDS_LABEL_KEY,
                     id_key or "file_name")
    self.spec = f"tfds:{rest}"
    try:
      self._source = tfds.data_source(
          name, split=split, data_dir=data_dir, download=False,
          deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    except Exception as e:  # tfds raises many types for a missing dataset.
      raise FileNotFoundError(
          f"Cannot open TFDS dataset {name!r} split {split!r} (data_dir={data_dir!r}): "
          f"{type(e).__name__}: {e}. Prepare it first in array_record format, e.g. "
          f"`tfds build {name.split(':')[0]} --file_format=array_record`.") from None
    info = self._source.dataset_info
    if info.file_format is not None and info.file_format.value != "array_record":
      raise DataError(
          f"TFDS dataset {name!r} is prepared as {info.file_format}; random access needs "
          "array_record. Re-prepare it with --file_format=array_record.")
    self.label_space = _label_space(label_options, None, self._tfds_label_space(info))

  def _tfds_label_space(self, info) -> LabelSpace:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    try:
      feature, multi_label = _tfds_feature(info.features, self.label_key)
    except KeyError:
      raise DataError(
          f"TFDS dataset {info.name} has no feature {self.label_key!r}; its features are "
          f"{list(info.features.keys())}. Pass label_key=...") from None
    if not isinstance(feature, tfds.features.ClassLabel):
      return LabelSpace(None, multi_label)
    return LabelSpace(feature.num_classes, multi_label, list(feature.names))

  def __len__(self) -> int:
    return len(self._source)

  def read_serialized(self, index: int) -> bytes:
    return self._source[index]

  def locate(self, index: int) -> RecordLocation:
    return _array_record_location(self._source.data_source, index)


class FolderSource(Source):
  """``folder:PATH`` with ``PATH/<class>/<image>``; classes in sorted name order."""

  def __init__(self, root: str, **label_options):
    _check_label_options(label_options)
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
      raise FileNotFoundError(f"Image folder {root!r} does not exist.")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    files, labels = [], []
    for label, name in enumerate(classes):
      for dirpath, _, filenames in sorted(os.walk(os.path.join(root, name))):
        for filename in sorted(filenames):
          if filename.lower().endswith(IMAGE_EXTENSIONS):
            files.append(os.path.relpath(os.path.join(dirpath, filename), root))
            labels.append(label)
    if not files:
      raise FileNotFoundError(
          f"No images under {root!r}; expected {root}/<class>/<image> with extensions "
          f"{', '.join(IMAGE_EXTENSIONS)}.")
    self.root = root
    self.spec = f"folder:{root}"
    # Fixed-width byte strings pickle compactly into every worker process.
    self._files = np.asarray([f.encode() for f in files], dtype=bytes)
    self._labels = np.asarray(labels, np.int64)
    self.label_space = _label_space(label_options, None,
                                    LabelSpace(len(classes), False, classes))

  def __len__(self) -> int:
    return len(self._files)

  def path(self, index: int) -> str:
    return os.path.join(self.root, self._files[int(index)].decode())

  def locate(self, index: int) -> RecordLocation:
    return RecordLocation(self.path(index), 0)

  def __getitem__(self, index: int) -> Record:
    index = int(index)
    try:
      with open(self.path(index), "rb") as f:
        data = f.read()
    except OSError as e:
      raise CorruptRecordError(self.locate(index), f"unreadable ({e})") from None
    return Record(image=data, labels=self._labels[index:index + 1],
                  id=self._files[index].decode())


# ------------------------------------------------------------------ opening


def split_spec(spec: str) -> tuple[str, str]:
  kind, sep, rest = spec.partition(":")
  if not sep or kind not in SOURCE_KINDS or not rest:
    raise DataError(
        f"Source {spec!r} must be one of arrayrecord:GLOB, tfrecord:GLOB, "
        "tfds:NAME[:VERSION]/SPLIT, folder:PATH.")
  return kind, rest


def as_spec(location: str, shard_split: Optional[str] = None) -> str:
  """A location as a user gives it -> a source spec: ``kind:...`` as given; a
  plain directory as its ``shard_split`` shards (``python -m data.convert``
  output: ``arrayrecord:DIR/SPLIT-*.array_record``) when that is given, else
  as ``folder:DIR`` (class sub-folders). Directories become absolute paths."""
  kind, sep, _ = location.partition(":")
  if sep and kind in SOURCE_KINDS:
    return location
  directory = os.path.abspath(os.path.expanduser(location))
  if shard_split is not None:
    return f"arrayrecord:{directory}/{shard_split}-*.array_record"
  return f"folder:{directory}"


def tfds_data_dir(data_dir: Optional[str] = None) -> str:
  """Where TFDS looks for prepared datasets: ``data_dir``, else
  ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
  return data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      "~/tensorflow_datasets")


def check_source_exists(spec: str, data_dir: Optional[str] = None) -> None:
  """Fails now, not hours into a run, when a local source cannot exist: no
  shard matches the glob, no such folder, no prepared TFDS dataset. Opens and
  reads nothing; remote paths (``gs://...``) are left to the loader."""
  kind, rest = split_spec(spec)
  if "://" in rest:
    return
  if kind in ("arrayrecord", "tfrecord"):
    if not glob_lib.glob(os.path.expanduser(rest)):
      raise FileNotFoundError(f"no file matches {rest} (from {spec}).")
  elif kind == "folder":
    if not os.path.isdir(os.path.expanduser(rest)):
      raise FileNotFoundError(f"{rest} is not a directory (from {spec}).")
  else:  # tfds: NAME[/CONFIG][:VERSION]/SPLIT, prepared under data_dir/NAME.
    name = parse_tfds_spec(rest)[0].split("/")[0].split(":")[0]
    root = tfds_data_dir(data_dir)
    if "://" in root:  # TFDS_DATA_DIR=gs://...: left to the loader too.
      return
    if not os.path.isdir(os.path.join(root, name)):
      raise FileNotFoundError(
          f"no TFDS dataset '{name}' in {root}. Prepare it once with: tfds build "
          f"{name} --data_dir {root} --file_format=array_record.")


# Options only some kinds read; the label space (num_classes, multi_label,
# label_names) applies to every kind.
_KIND_OPTIONS = {
    "image_key": ("arrayrecord", "tfrecord", "tfds"),
    "label_key": ("arrayrecord", "tfrecord", "tfds"),
    "id_key": ("arrayrecord", "tfrecord", "tfds"),
    "index_dir": ("tfrecord",),
    "verify_crc": ("tfrecord",),
    "build_index": ("tfrecord",),
    "data_dir": ("tfds",),
}


def class_names_differ(reference: Optional[list], names: Optional[list]
                       ) -> Optional[str]:
  """None when the two lists name the same classes in the same order (or
  either is unknown); else '(missing: [...]; not in the reference: [...])'.
  Names compare as strings (a checkpoint records `str(name)`; a
  dataset_info.json may hold integers).

  A folder numbers its classes by its sorted folder names, so one set missing
  a class, or naming them otherwise, would give its labels other meanings.
  """
  if reference is None or names is None:
    return None
  reference, names = [str(n) for n in reference], [str(n) for n in names]
  if reference == names:
    return None
  missing = sorted(set(reference) - set(names))
  extra = sorted(set(names) - set(reference))
  if not missing and not extra:
    return "(the same names in another order)"
  return f"(missing: {missing or 'none'}; not in the reference: {extra or 'none'})"


def options_for(spec: str, **options) -> dict[str, Any]:
  """``options`` less the None values and those ``spec``'s kind does not
  read (a folder's labels are its subfolders, so it has no ``label_key``):
  one set of options, a run's say, opens its training and eval sources
  whatever their kinds."""
  kind = split_spec(spec)[0]
  return {key: value for key, value in options.items() if value is not None
          and kind in _KIND_OPTIONS.get(key, (kind,))}


def open_source(spec: str, **options) -> Source:
  """Opens the source named by ``spec`` (see the module docstring for specs and options)."""
  kind, rest = split_spec(spec)
  constructor = {"arrayrecord": ArrayRecordSource, "tfrecord": TFRecordSource,
                 "tfds": TFDSSource, "folder": FolderSource}[kind]
  try:
    return constructor(rest, **options)
  except TypeError as e:
    if "unexpected keyword" in str(e):
      raise TypeError(f"{spec}: {e}; see data/sources.py for the options of each kind.") from None
    raise
