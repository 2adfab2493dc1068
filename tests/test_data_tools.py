"""The data command lines: inspect, convert and index."""

import json
import os

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from data import convert
from data import index
from data import inspect as inspect_tool
from data import sources
from data import synthetic
from data import tf_example
from data import tfrecord
from data.errors import DataError


def _jpeg(i: int) -> bytes:
  pixels = np.random.default_rng(i).integers(0, 256, (16, 20, 3), dtype=np.uint8)
  return simplejpeg.encode_jpeg(pixels, quality=85)


def _write(directory, file_format, counts, bad=(), labels_of=lambda i: [i % 3]):
  """Shards of records whose image is corrupt for the indices in ``bad``."""
  os.makedirs(directory, exist_ok=True)
  paths, i = [], 0
  for shard, count in enumerate(counts):
    path = os.path.join(directory, f"train-{shard:05d}{synthetic.FORMATS[file_format]}")
    writer = synthetic.open_writer(path, file_format)
    for _ in range(count):
      image = _jpeg(i)[:60] if i in bad else _jpeg(i)
      writer.write(tf_example.serialize_example({
          "image/encoded": image, "image/class/label": np.asarray(labels_of(i), np.int64),
          "image/id": f"id{i}"}))
      i += 1
    writer.close()
    paths.append(path)
  return paths


def test_inspect_json_lists_every_corrupt_record(tmp_path, capsys):
  paths = _write(str(tmp_path), "arrayrecord", [4, 5], bad={2, 6})
  rc = inspect_tool.main([f"arrayrecord:{tmp_path}/*", "--num-classes", "3", "--check",
                          "--json", "--workers", "1"])
  report = json.loads(capsys.readouterr().out)
  assert rc == 1
  assert (report["num_examples"], report["num_classes"]) == (9, 3)
  assert report["labels_per_example"] == {"min": 1, "mean": 1.0, "max": 1,
                                          "histogram": {"1": 9}}
  assert [(c["file"], c["index"], c["position"]) for c in report["corrupt"]] == [
      (paths[0], 2, 2), (paths[1], 2, 6)]


def test_inspect_parallel_check_and_text_output(tmp_path, capsys):
  _write(str(tmp_path), "tfrecord", [600, 500], bad={1000})
  rc = inspect_tool.main([f"tfrecord:{tmp_path}/*", "--num-classes", "3", "--check",
                          "--workers", "2"])
  text = capsys.readouterr().out
  assert rc == 1
  assert "examples:            1100" in text and "corrupt records:     1" in text
  assert "train-00001.tfrecord [record 400] (position 1000)" in text


def test_inspect_without_check_names_the_labels_that_do_not_fit(tmp_path, capsys):
  """Labels 0-2 read as a 2-class source: the records with label 2 are
  listed (and make the status 1) even without --check."""
  paths = _write(str(tmp_path), "tfrecord", [6])
  rc = inspect_tool.main([f"tfrecord:{tmp_path}/*", "--num-classes", "2",
                          "--workers", "1"])
  text = capsys.readouterr().out
  assert rc == 1
  assert "corrupt records:     2 (in the 6 scanned)" in text
  assert f"{paths[0]} [record 2] (position 2)" in text
  assert f"{paths[0]} [record 5] (position 5)" in text


def test_inspect_without_check_and_write_info(tmp_path, capsys):
  _write(str(tmp_path), "arrayrecord", [6], labels_of=lambda i: list(range(i % 4)))
  assert inspect_tool.main([f"arrayrecord:{tmp_path}/*", "--json", "--write-info",
                            "--workers", "1"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert (report["num_classes"], report["num_classes_from"], report["max_label"]) == (3, "labels", 2)
  assert report["labels_per_example"]["histogram"] == {"0": 2, "1": 2, "2": 1, "3": 1}
  # No metadata: the report's label kind is what the labels show, as written.
  assert (report["multi_label"], report["multi_label_from"]) == (True, "labels")
  source = sources.open_source(f"arrayrecord:{tmp_path}/*")
  assert source.num_classes == 3 and source.multi_label
  assert inspect_tool.main([f"arrayrecord:{tmp_path}/nothing*"]) == 2


def test_write_info_without_any_label_is_one_error_line(tmp_path, capsys):
  _write(str(tmp_path), "arrayrecord", [3], labels_of=lambda i: [])
  assert inspect_tool.main([f"arrayrecord:{tmp_path}/*", "--write-info",
                            "--workers", "1"]) == 2
  err = capsys.readouterr().err
  assert "no labels found in the 3 records scanned" in err and "Traceback" not in err
  assert not os.path.exists(tmp_path / "dataset_info.json")


def test_convert_tfrecord_to_arrayrecord_is_faithful_and_restartable(tmp_path):
  _write(str(tmp_path / "tf"), "tfrecord", [7, 6])
  source = sources.open_source(f"tfrecord:{tmp_path}/tf/*", num_classes=3)
  out = str(tmp_path / "ar")
  result = convert.convert(source, out, num_shards=4, workers=2, show_progress=False)
  assert result["written"] == 13 and result["reused_shards"] == 0
  converted = sources.open_source(f"arrayrecord:{out}/train-*")
  assert converted.num_classes == 3 and len(converted) == 13
  for i in range(13):
    assert bytes(converted[i].image) == bytes(source[i].image)
    assert converted[i].labels.tolist() == source[i].labels.tolist()
    assert converted[i].id == f"id{i}"
  # An interrupted run: one shard is missing, one left half-written under its
  # temporary name. A re-run redoes exactly the missing shard.
  missing = result["shards"][2]
  os.replace(missing, missing + ".tmp")
  with open(missing + ".tmp", "r+b") as f:
    f.truncate(10)
  again = convert.convert(source, out, num_shards=4, workers=1, show_progress=False)
  assert again["reused_shards"] == 3 and again["written"] == 3
  assert [converted[i].id for i in range(13)] == [
      sources.open_source(f"arrayrecord:{out}/train-*")[i].id for i in range(13)]
  info = json.loads(open(os.path.join(out, "dataset_info.json")).read())
  assert info["splits"]["train"]["num_examples"] == 13


def test_convert_refuses_shards_of_another_count_and_another_label_space(
    tmp_path, capsys):
  """Both before any record is written: the split's pattern would read the
  earlier shards too, and a split with other classes would mislabel them."""
  _write(str(tmp_path / "tf"), "tfrecord", [7, 6])
  spec = f"tfrecord:{tmp_path}/tf/*"
  out = tmp_path / "ar"
  assert convert.main([spec, "--num-classes", "3", "--out", str(out),
                       "--num-shards", "2", "--workers", "1"]) == 0
  before = sorted(os.listdir(out))
  assert convert.main([spec, "--num-classes", "3", "--out", str(out),
                       "--num-shards", "4", "--workers", "1"]) == 1
  assert "already holds 2 'train' shards" in capsys.readouterr().err
  assert convert.main([spec, "--num-classes", "4", "--out", str(out), "--split", "val",
                       "--num-shards", "2", "--workers", "1"]) == 1
  assert "says 3 classes" in capsys.readouterr().err
  assert sorted(os.listdir(out)) == before  # nothing written by either
  assert len(sources.open_source(f"arrayrecord:{out}/train-*")) == 13
  # A split named 'train-small' would be read by train's pattern train-*:
  # refused, whichever of the two is written first.
  assert convert.main([spec, "--num-classes", "3", "--out", str(out),
                       "--split", "train-small", "--workers", "1"]) == 1
  assert "split 'train' would read 'train-small' as its own" in capsys.readouterr().err
  other = tmp_path / "ar2"
  assert convert.main([spec, "--num-classes", "3", "--out", str(other),
                       "--split", "val-a", "--workers", "1"]) == 0
  assert convert.main([spec, "--num-classes", "3", "--out", str(other),
                       "--split", "val", "--workers", "1"]) == 1
  assert "'val_a'" in capsys.readouterr().err
  assert len(sources.open_source(f"arrayrecord:{out}/train-*")) == 13


def test_synthetic_refuses_to_mix_shard_counts(tmp_path):
  kwargs = dict(seed=0, num_train=8, num_eval=4, downstream_train_per_class=1,
                downstream_eval_per_class=1, image_size=16)
  synthetic.generate(str(tmp_path), num_shards=2, **kwargs)
  synthetic.generate(str(tmp_path), num_shards=2, **kwargs)  # the same: fine
  with pytest.raises(DataError, match="already holds 2 'train' shards"):
    synthetic.generate(str(tmp_path), num_shards=4, **kwargs)


def test_convert_folder_and_command_line(tmp_path, capsys):
  for name in ("cat", "ant"):
    (tmp_path / "images" / name).mkdir(parents=True)
    for k in range(3):
      Image.fromarray(np.full((6, 6, 3), k * 40, np.uint8)).save(
          tmp_path / "images" / name / f"{k}.jpg")
  out = tmp_path / "ar"
  assert convert.main([f"folder:{tmp_path}/images", "--out", str(out), "--split", "val",
                       "--num-shards", "2", "--workers", "1"]) == 0
  assert "Wrote 6 records" in capsys.readouterr().out
  converted = sources.open_source(f"arrayrecord:{out}/val-*")
  assert converted.label_names == ["ant", "cat"] and converted.num_classes == 2
  assert [converted[i].id for i in range(6)][:2] == ["ant/0.jpg", "ant/1.jpg"]
  assert converted[4].labels.tolist() == [1]


def test_convert_skip_corrupt_reports_unparseable_records(tmp_path, capsys):
  directory = tmp_path / "tf"
  directory.mkdir()
  path = str(directory / "data.tfrecord")
  with tfrecord.TFRecordWriter(path) as writer:
    for i in range(5):
      writer.write(b"\x0a\x99 not an example" if i == 3 else tf_example.serialize_example(
          {"image/encoded": _jpeg(i), "image/class/label": [1]}))
  spec = f"tfrecord:{path}"
  assert convert.main([spec, "--out", str(tmp_path / "a"), "--num-classes", "2",
                       "--workers", "1"]) == 1
  assert "record 3" in capsys.readouterr().err
  assert convert.main([spec, "--out", str(tmp_path / "b"), "--num-classes", "2",
                       "--workers", "1", "--skip-corrupt"]) == 0
  output = capsys.readouterr().out
  assert "Wrote 4 records" in output and f"skipped corrupt record {path} [record 3]" in output


def test_convert_skip_corrupt_restarts_where_it_stopped(tmp_path):
  """A shard that skipped a record holds fewer records than its range: the
  recorded count, not the range, says it is finished."""
  path = str(tmp_path / "data.tfrecord")
  with tfrecord.TFRecordWriter(path) as writer:
    for i in range(12):
      writer.write(b"\x0a\x99 not an example" if i == 2 else tf_example.serialize_example(
          {"image/encoded": _jpeg(i), "image/class/label": [i % 3]}))
  source = sources.open_source(f"tfrecord:{path}", num_classes=3)
  out = str(tmp_path / "ar")
  first = convert.convert(source, out, num_shards=3, skip_corrupt=True, show_progress=False)
  assert first["written"] == 11 and len(first["skipped"]) == 1
  os.remove(first["shards"][2])  # interrupted before the last shard
  again = convert.convert(source, out, num_shards=3, skip_corrupt=True, show_progress=False)
  assert again["reused_shards"] == 2 and again["written"] == 4
  assert again["skipped"] == first["skipped"]  # still reported, from the record
  assert len(sources.open_source(f"arrayrecord:{out}/train-*")) == 11
  info = json.loads(open(os.path.join(out, "dataset_info.json")).read())
  assert info["splits"]["train"]["num_examples"] == 11


def test_index_command_line_builds_indexes_and_checks_crcs(tmp_path, capsys):
  paths = _write(str(tmp_path), "tfrecord", [3, 4])
  assert index.main([f"tfrecord:{tmp_path}/*.tfrecord", "--workers", "1"]) == 0
  assert "Indexed 2 shards, 7 records" in capsys.readouterr().out
  for path in paths:
    assert len(np.load(path + tfrecord.INDEX_SUFFIX)) == len(tfrecord.scan_offsets(path))
  offsets = np.load(paths[1] + tfrecord.INDEX_SUFFIX)
  with open(paths[1], "r+b") as f:
    f.seek(int(offsets[1]) + 20)
    f.write(b"\x00\x00\x00")
  assert index.main([f"{tmp_path}/*.tfrecord", "--workers", "1", "--check-crc"]) == 1
  assert f"{paths[1]}: record 1 has a bad data checksum" in capsys.readouterr().out


def test_index_command_line_reports_missing_files(tmp_path, capsys):
  assert index.main([f"{tmp_path}/none-*"]) == 2
  assert "No files match" in capsys.readouterr().err
