"""Record parsing and the four source kinds (ArrayRecord, TFRecord, TFDS, folders)."""

import io
import json
import os

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from data import dataset_info
from data import sources
from data import synthetic
from data import tf_example
from data import tfrecord


def _jpeg(seed: int, size=(24, 32)) -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
  return simplejpeg.encode_jpeg(pixels, quality=90)


def _example(i: int, labels) -> bytes:
  return tf_example.serialize_example({
      "image/encoded": _jpeg(i), "image/class/label": np.asarray(labels, np.int64),
      "image/id": f"img-{i}"})


def _write_shards(directory, file_format, records_per_shard, make=_example, prefix="train"):
  """Writes shards of ``make(i, [i % 7])`` records; returns their paths."""
  paths, i = [], 0
  os.makedirs(directory, exist_ok=True)
  for shard, count in enumerate(records_per_shard):
    path = os.path.join(directory, f"{prefix}-{shard:05d}{synthetic.FORMATS[file_format]}")
    writer = synthetic.open_writer(path, file_format)
    for _ in range(count):
      writer.write(make(i, [i % 7]))
      i += 1
    writer.close()
    paths.append(path)
  return paths


# -------------------------------------------------------------- tf.train.Example


def test_example_parser_reads_what_tensorflow_writes():
  from tensorflow.core.example import example_pb2
  proto = example_pb2.Example()
  image = _jpeg(0)
  proto.features.feature["image/encoded"].bytes_list.value.append(image)
  proto.features.feature["image/class/label"].int64_list.value.extend([3, 2**40, -5])
  proto.features.feature["other"].float_list.value.extend([0.5, 2.0])
  parsed = tf_example.parse_example(
      proto.SerializeToString(), ["image/encoded", "image/class/label", "other", "missing"])
  assert bytes(parsed["image/encoded"][0]) == image
  np.testing.assert_array_equal(parsed["image/class/label"], [3, 2**40, -5])
  np.testing.assert_array_equal(parsed["other"], [0.5, 2.0])
  assert "missing" not in parsed


def test_example_writer_is_read_back_by_tensorflow():
  from tensorflow.core.example import example_pb2
  serialized = tf_example.serialize_example({
      "image/encoded": b"\x00\x01bytes", "image/class/label": np.asarray([9, 0, 70000]),
      "image/id": "abc", "empty": np.zeros(0, np.int64), "score": np.asarray([1.5], np.float32)})
  feature = example_pb2.Example.FromString(serialized).features.feature
  assert feature["image/encoded"].bytes_list.value == [b"\x00\x01bytes"]
  assert list(feature["image/class/label"].int64_list.value) == [9, 0, 70000]
  assert feature["image/id"].bytes_list.value == [b"abc"]
  assert feature["empty"].HasField("int64_list") and not feature["empty"].int64_list.value
  assert list(feature["score"].float_list.value) == [1.5]


@pytest.mark.parametrize("bad", [b"\xff\xff\xff", b"\x0a\x50abc", b"\x0a\x05\x0a\x03\x0a\x09x"])
def test_example_parser_rejects_malformed_bytes(bad):
  with pytest.raises(tf_example.ExampleParseError):
    tf_example.parse_example(bad, ["image/encoded"])


def test_a_flipped_bit_that_turns_a_label_list_into_floats_is_malformed():
  # 0x1a -> 0x12 makes Feature{int64_list{3, 7}} read as a packed float_list
  # of 2 bytes, which used to escape as a bare ValueError (no file or record
  # index; skip_corrupt did not skip it).
  record = bytearray(tf_example.serialize_example(
      {"image/encoded": b"x", "image/class/label": np.asarray([3, 7], np.int64)}))
  where = record.index(bytes([0x1a, 0x04, 0x0a, 0x02, 0x03, 0x07]))
  record[where] ^= 0x08
  with pytest.raises(tf_example.ExampleParseError):
    tf_example.parse_example(bytes(record), ["image/class/label"])


# ----------------------------------------------------------------------- TFRecord


def test_tfrecord_index_matches_sequential_reading(tmp_path):
  import tensorflow as tf
  # Varied record sizes (tiny to 100 kB) so offsets are not regular.
  rng = np.random.default_rng(0)
  records = [rng.bytes(int(n)) for n in rng.integers(0, 100_000, size=40)] + [b""]
  path = str(tmp_path / "data.tfrecord")
  with tfrecord.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
  sequential = [r.numpy() for r in tf.data.TFRecordDataset(path)]
  assert sequential == records
  offsets = tfrecord.load_index(path)
  assert os.path.exists(path + tfrecord.INDEX_SUFFIX)  # stored beside the shard
  assert len(offsets) == len(records) + 1 and offsets[-1] == os.path.getsize(path)
  with open(path, "rb") as f:
    for i in rng.permutation(len(records)):  # random order
      for verify in (False, True):
        data = tfrecord.read_record(f.fileno(), int(offsets[i]), int(offsets[i + 1]), verify)
        assert data == sequential[i]


def test_tfrecord_pure_python_framing_is_readable_by_tensorflow(tmp_path):
  import tensorflow as tf
  path = str(tmp_path / "framed.tfrecord")
  with open(path, "wb") as f:
    for data in (b"first", b"", b"x" * 1000):
      f.write(tfrecord.frame(data))
  assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == [b"first", b"", b"x" * 1000]
  assert tfrecord.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
  assert tfrecord._crc32c_python(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_tfrecord_source_random_access_and_locations(tmp_path):
  paths = _write_shards(str(tmp_path), "tfrecord", [5, 3, 4])
  source = sources.open_source(f"tfrecord:{tmp_path}/train-*", num_classes=7)
  assert len(source) == 12
  for i in [11, 0, 7, 5, 4]:
    record = source[i]
    assert record.id == f"img-{i}" and record.labels.tolist() == [i % 7]
    assert bytes(record.image) == _jpeg(i)
  assert source.locate(5) == sources.RecordLocation(paths[1], 0)
  assert str(source.locate(11)) == f"{paths[2]} [record 3]"



def _open_descriptors() -> int:
  return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("offsets_in_memory", [True, False])
def test_tfrecord_source_keeps_few_shards_open(tmp_path, monkeypatch,
                                               offsets_in_memory):
  # Holding every shard (and its index's map) open ran out of descriptors at
  # about 500 shards under `ulimit -n 1024`, which read as corrupt records.
  import concurrent.futures
  monkeypatch.setattr(sources, "OPEN_SHARDS_PER_THREAD", 3)
  if not offsets_in_memory:  # a set too large to hold its offsets
    monkeypatch.setattr(sources, "OFFSETS_IN_MEMORY_MAX_RECORDS", 0)
  _write_shards(str(tmp_path), "tfrecord", [1] * 20)
  source = sources.open_source(f"tfrecord:{tmp_path}/train-*", num_classes=7)
  before = _open_descriptors()
  order = np.random.default_rng(0).permutation(np.tile(np.arange(20), 3))
  for i in order:
    assert source[int(i)].id == f"img-{i}"
  # One descriptor a shard with the offsets in memory, else two.
  assert _open_descriptors() - before <= (3 if offsets_in_memory else 2 * 3)
  # Two reading threads each keep their own few, and read the right records.
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    ids = list(pool.map(lambda i: source[int(i)].id, order))
  assert ids == [f"img-{i}" for i in order]
  del source


def test_running_out_of_descriptors_is_not_a_corrupt_record(tmp_path,
                                                            monkeypatch):
  import errno
  _write_shards(str(tmp_path), "tfrecord", [2])
  source = sources.open_source(f"tfrecord:{tmp_path}/train-*", num_classes=7)
  def out_of_descriptors(*args, **kwargs):
    raise OSError(errno.EMFILE, "Too many open files")
  monkeypatch.setattr(sources.tfrecord, "read_record", out_of_descriptors)
  with pytest.raises(OSError) as raised:
    source[1]
  assert not isinstance(raised.value, sources.CorruptRecordError)

def test_tfrecord_index_in_cache_dir_and_stale_index_rebuilt(tmp_path):
  shard_dir, cache = tmp_path / "shards", tmp_path / "cache"
  (path,) = _write_shards(str(shard_dir), "tfrecord", [3])
  source = sources.open_source(f"tfrecord:{path}", num_classes=7, index_dir=str(cache))
  assert len(source) == 3 and not os.path.exists(path + tfrecord.INDEX_SUFFIX)
  assert len(os.listdir(cache)) == 1
  # The shard grows: the index no longer matches its size and is rebuilt.
  with open(path, "ab") as f:
    f.write(tfrecord.frame(_example(3, [1])))
  assert len(sources.open_source(f"tfrecord:{path}", num_classes=7, index_dir=str(cache))) == 4


def test_an_index_being_written_is_not_read_as_a_shard(tmp_path, monkeypatch):
  # Another host building the same index (or one killed while writing it)
  # leaves a temporary file beside the shards; the glob must skip it.
  paths = _write_shards(str(tmp_path), "tfrecord", [2, 2])
  written = []
  real_replace = os.replace
  def record_and_replace(src, dst):
    written.append(src)
    real_replace(src, dst)
  monkeypatch.setattr(tfrecord.os, "replace", record_and_replace)
  tfrecord.write_index(paths[0])
  [temporary] = written
  with open(temporary, "wb") as f:  # as if still being written
    f.write(b"\x93NUMPY partial")
  with open(paths[1] + tfrecord.INDEX_SUFFIX + ".tmp4242", "wb") as f:
    f.write(b"left by an older version")
  assert sources.expand_glob(f"{tmp_path}/train-*") == paths
  assert len(sources.open_source(f"tfrecord:{tmp_path}/train-*",
                                 num_classes=7)) == 4


def test_tfrecord_crc_check_names_the_damaged_record(tmp_path):
  (path,) = _write_shards(str(tmp_path), "tfrecord", [4])
  offsets = tfrecord.load_index(path)
  with open(path, "r+b") as f:  # flip one byte inside record 2's data
    f.seek(int(offsets[2]) + 12 + 30)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  source = sources.open_source(f"tfrecord:{path}", num_classes=7, verify_crc=True)
  source[1]  # intact
  with pytest.raises(sources.CorruptRecordError, match=r"record 2\].*checksum"):
    source[2]


def test_truncated_tfrecord_is_reported_when_indexing(tmp_path):
  (path,) = _write_shards(str(tmp_path), "tfrecord", [3])
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 10)
  with pytest.raises(tfrecord.TFRecordError, match="record 2 .* truncated"):
    tfrecord.scan_offsets(path)


# -------------------------------------------------------------------- ArrayRecord


def test_arrayrecord_source_with_dataset_info(tmp_path):
  paths = _write_shards(str(tmp_path), "arrayrecord", [4, 6])
  dataset_info.write_info(str(tmp_path), {"num_classes": 7, "multi_label": False,
                                          "label_names": list("abcdefg")})
  source = sources.open_source(f"arrayrecord:{tmp_path}/train-*.array_record")
  assert (len(source), source.num_classes, source.multi_label) == (10, 7, False)
  assert source.label_names[3] == "d"
  assert source[6].labels.tolist() == [6] and source[6].id == "img-6"
  assert source.locate(6) == sources.RecordLocation(paths[1], 2)
  # Options override the info file.
  assert sources.open_source(f"arrayrecord:{tmp_path}/*.array_record",
                             num_classes=9).num_classes == 9


def test_custom_label_key_and_multi_label(tmp_path):
  def make(i, _):
    return tf_example.serialize_example({"jpeg": _jpeg(i), "tags": np.arange(i % 3 + 1)})
  _write_shards(str(tmp_path), "arrayrecord", [6], make=make)
  source = sources.open_source(f"arrayrecord:{tmp_path}/*", image_key="jpeg", label_key="tags",
                               num_classes=3, multi_label=True)
  assert source.multi_label and source[4].labels.tolist() == [0, 1]
  assert bytes(source[4].image) == _jpeg(4) and source[4].id is None
  with pytest.raises(sources.CorruptRecordError, match=r"image/class/label.*label_key"):
    sources.open_source(f"arrayrecord:{tmp_path}/*", image_key="jpeg")[0]


def test_unparseable_record_names_file_and_index(tmp_path):
  def make(i, labels):
    return b"\xff\xfe garbage" if i == 3 else _example(i, labels)
  paths = _write_shards(str(tmp_path), "arrayrecord", [2, 3], make=make)
  source = sources.open_source(f"arrayrecord:{tmp_path}/*", num_classes=7)
  with pytest.raises(sources.CorruptRecordError) as error:
    source[3]
  assert error.value.location == sources.RecordLocation(paths[1], 1)
  assert f"{paths[1]} [record 1]" in str(error.value) and "skip_corrupt" in str(error.value)


# ------------------------------------------------------------------------ folders


def test_options_for_keeps_what_each_kind_reads():
  options = dict(label_key="my/label", index_dir="/idx", data_dir=None,
                 num_classes=5)
  assert sources.options_for("folder:/x", **options) == {"num_classes": 5}
  assert sources.options_for("tfrecord:/x/*", **options) == {
      "label_key": "my/label", "index_dir": "/idx", "num_classes": 5}
  assert sources.options_for("arrayrecord:/x/*", **options) == {
      "label_key": "my/label", "num_classes": 5}


def test_folder_source_sorted_classes(tmp_path):
  for name, count in (("zebra", 2), ("ant", 3), ("mole", 1)):
    (tmp_path / name).mkdir()
    for k in range(count):
      Image.fromarray(np.full((8, 8, 3), k, np.uint8)).save(tmp_path / name / f"{k}.png")
  (tmp_path / "ant" / "notes.txt").write_text("not an image")
  source = sources.open_source(f"folder:{tmp_path}")
  assert source.label_names == ["ant", "mole", "zebra"] and source.num_classes == 3
  assert [int(source[i].labels[0]) for i in range(len(source))] == [0, 0, 0, 1, 2, 2]
  assert source[3].id == os.path.join("mole", "0.png")
  assert source.locate(4).path == str(tmp_path / "zebra" / "0.png")
  assert np.asarray(Image.open(io.BytesIO(source[1].image))).max() == 1


# ---------------------------------------------------------------- specs and errors


def test_bad_specs_and_missing_files_have_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="must be one of"):
    sources.open_source("s3://bucket/x")
  with pytest.raises(FileNotFoundError, match="No files match"):
    sources.open_source(f"arrayrecord:{tmp_path}/none-*")
  with pytest.raises(TypeError, match="unexpected keyword"):
    sources.open_source(f"folder:{tmp_path}", index_dir="x")
  with pytest.raises(ValueError, match="NAME"):
    sources.parse_tfds_spec("imagenet2012")
  assert sources.parse_tfds_spec("foo/bar:1.0.0/train[:99%]") == ("foo/bar:1.0.0", "train[:99%]")


def test_source_existence_is_checked_locally_and_left_to_the_loader_remotely(
    tmp_path, monkeypatch):
  (tmp_path / "train-0.tfrecord").write_bytes(b"")
  sources.check_source_exists(f"tfrecord:{tmp_path}/train-*")
  sources.check_source_exists(f"folder:{tmp_path}")
  monkeypatch.setenv("HOME", str(tmp_path))  # the shell leaves folder:~ as is
  sources.check_source_exists("folder:~")
  sources.check_source_exists("tfrecord:~/train-*")
  with pytest.raises(FileNotFoundError, match="no file matches"):
    sources.check_source_exists(f"arrayrecord:{tmp_path}/none-*")
  with pytest.raises(FileNotFoundError, match="is not a directory"):
    sources.check_source_exists(f"folder:{tmp_path}/none")
  with pytest.raises(FileNotFoundError, match="no TFDS dataset 'imagenet2012'"):
    sources.check_source_exists("tfds:imagenet2012/train", data_dir=str(tmp_path))
  # Remote shards, or TFDS data kept in a bucket: nothing to check here.
  sources.check_source_exists("arrayrecord:gs://bucket/train-*")
  monkeypatch.setenv("TFDS_DATA_DIR", "gs://bucket/tensorflow_datasets")
  sources.check_source_exists("tfds:imagenet2012/train")


def test_conflicting_dataset_infos_are_refused(tmp_path):
  for name, classes in (("a", 5), ("b", 6)):
    _write_shards(str(tmp_path / name), "arrayrecord", [2])
    dataset_info.write_info(str(tmp_path / name), {"num_classes": classes})
  with pytest.raises(ValueError, match="disagree on 'num_classes'"):
    sources.open_source(f"arrayrecord:{tmp_path}/*/train-*")


# --------------------------------------------------------------------------- TFDS


# Each image's objects in tiny_colours, by index mod 4.
OBJECT_LABELS = ([0], [1, 2], [2], [0, 1, 2])


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory):
  """A 3-class TFDS dataset built offline in array_record format; returns its data_dir."""
  import tensorflow_datasets as tfds

  class TinyColours(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3)),
          "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
          # Labels nested in a Sequence, as VOC's and COCO's objects.
          "objects": tfds.features.Sequence({
              "label": tfds.features.ClassLabel(names=["circle", "square", "star"]),
              "area": tfds.features.Tensor(shape=(), dtype=np.float32)}),
          "file_name": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(12), "test": self._generate_examples(5)}

    def _generate_examples(self, n):
      for i in range(n):
        image = np.zeros((20, 30, 3), np.uint8)
        image[..., i % 3] = 200
        yield i, {"image": image, "label": i % 3, "file_name": f"f{i}.png",
                  "objects": {"label": OBJECT_LABELS[i % 4],
                              "area": [0.5] * len(OBJECT_LABELS[i % 4])}}

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  TinyColours(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir


def test_tfds_source_from_a_locally_prepared_dataset(tiny_tfds_dir):
  from data import loader  # pylint: disable=import-outside-toplevel
  source = sources.open_source("tfds:tiny_colours/train", data_dir=tiny_tfds_dir)
  assert (len(source), source.num_classes, source.multi_label) == (12, 3, False)
  assert source.label_names == ["red", "green", "blue"]
  half = sources.open_source("tfds:tiny_colours:1.0.0/train[50%:]", data_dir=tiny_tfds_dir)
  assert len(half) == 6 and half[0].id == source[6].id
  location = half.locate(0)
  assert "tiny_colours-train.array_record" in location.path and location.index == 6
  # The label is the dominant colour channel of the image: check through the loader.
  batches = loader.make_eval_loader(source, global_batch_size=8, resolution=16)
  for batch in batches:
    real = batch["mask"]
    channels = batch["image"][real].mean(axis=(1, 2)).argmax(axis=-1)
    np.testing.assert_array_equal(channels, batch["label"][real])
  train_batch = next(loader.make_train_loader(
      "tfds:tiny_colours/test", global_batch_size=4, resolution=16, seed=0,
      source_options={"data_dir": tiny_tfds_dir}))
  assert train_batch["image"].shape == (4, 16, 16, 3)
  with pytest.raises(FileNotFoundError, match="Prepare it first"):
    sources.open_source("tfds:no_such_dataset/train", data_dir=tiny_tfds_dir)


def test_tfds_labels_nested_in_a_sequence_are_multi_label(tiny_tfds_dir):
  """label_key=objects/label: a ClassLabel inside a Sequence of objects gives
  each image the labels of all its objects."""
  source = sources.open_source("tfds:tiny_colours/train", data_dir=tiny_tfds_dir,
                               label_key="objects/label")
  assert (source.num_classes, source.multi_label) == (3, True)
  assert source.label_names == ["circle", "square", "star"]
  for index in range(len(source)):
    record = source[index]
    example = int(record.id[1:-len(".png")])
    assert sorted(record.labels.tolist()) == OBJECT_LABELS[example % 4]


def test_inspect_checks_a_tfds_source(tiny_tfds_dir, capsys):
  from data import inspect as inspect_tool  # pylint: disable=import-outside-toplevel
  assert inspect_tool.main(["tfds:tiny_colours/test", "--data-dir", tiny_tfds_dir, "--json",
                            "--check", "--workers", "1"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert (report["num_examples"], report["num_classes"], report["corrupt"]) == (5, 3, [])


def test_dataset_info_round_trip(tmp_path):
  dataset_info.write_info(str(tmp_path), {"num_classes": 4, "multi_label": True})
  assert json.loads((tmp_path / dataset_info.INFO_FILENAME).read_text())["num_classes"] == 4
  with pytest.raises(ValueError, match="num_classes"):
    dataset_info.write_info(str(tmp_path), {"multi_label": True})


def test_class_names_differ_compares_names_as_strings_and_in_order():
  # A checkpoint records str(name); a dataset_info.json may hold integers.
  assert sources.class_names_differ(["0", "1"], [0, 1]) is None
  assert sources.class_names_differ(None, ["a"]) is None
  assert sources.class_names_differ(["a", "b"], ["b", "a"]) == (
      "(the same names in another order)")
  assert sources.class_names_differ(["a", "b"], ["a", "c"]) == (
      "(missing: ['b']; not in the reference: ['c'])")
