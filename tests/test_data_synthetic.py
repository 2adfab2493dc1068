"""The synthetic corpus: determinism, label statistics, info files, distinguishable factors."""

import itertools
import json
import os

import numpy as np
import pytest

from data import sources
from data import synthetic


def _records(spec):
  source = sources.open_source(spec)
  return source, [(bytes(source[i].image), source[i].labels.tolist()) for i in range(len(source))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synth"))
  specs = synthetic.generate(out, seed=7, num_train=600, num_eval=60,
                             downstream_train_per_class=5, downstream_eval_per_class=2,
                             num_shards=3)
  return out, specs


def test_generation_is_deterministic_and_independent_of_sharding(corpus, tmp_path):
  out, specs = corpus
  again = synthetic.generate(str(tmp_path / "a"), seed=7, num_train=600, num_eval=60,
                             downstream_train_per_class=5, downstream_eval_per_class=2,
                             num_shards=1, file_format="tfrecord")
  for name in ("pretrain/train", "downstream/eval"):
    assert _records(specs[name])[1] == _records(again[name])[1]
  other = synthetic.generate(str(tmp_path / "b"), seed=8, num_train=20, num_eval=2,
                             downstream_train_per_class=1, downstream_eval_per_class=1)
  first = _records(specs["pretrain/train"])[1][:20]
  assert all(a[0] != b[0] for a, b in zip(first, _records(other["pretrain/train"])[1]))


def test_pretrain_label_statistics(corpus):
  _, specs = corpus
  source, records = _records(specs["pretrain/train"])
  assert source.num_classes == 1000 and source.multi_label
  counts = np.asarray([len(labels) for _, labels in records])
  # 2-4 objects per image (uniform), each with one of 1000 classes: ~3 labels.
  assert counts.min() >= 1 and counts.max() == 4 and abs(counts.mean() - 3.0) < 0.1
  labels = np.concatenate([l for _, l in records])
  assert labels.min() >= 0 and labels.max() < 1000
  # Each factor is uniform over its 10 values: 1800 draws, expected 180 each.
  shapes, rest = np.divmod(labels, 100)
  colours, patterns = np.divmod(rest, 10)
  for factor in (shapes, colours, patterns):
    assert np.bincount(factor, minlength=10).min() > 120
    assert np.bincount(factor, minlength=10).max() < 240


def test_downstream_is_balanced_single_label_over_shape_and_pattern(corpus):
  _, specs = corpus
  train, records = _records(specs["downstream/train"])
  assert (train.num_classes, train.multi_label, len(train)) == (16, False, 80)
  labels = [l for _, (l,) in records]
  assert np.bincount(labels, minlength=16).tolist() == [5] * 16
  assert train.label_names[5] == "square/hstripes"
  assert len(sources.open_source(specs["downstream/eval"])) == 32


def test_dataset_info_beside_the_shards(corpus):
  out, _ = corpus
  info = json.loads(open(os.path.join(out, "pretrain", "dataset_info.json")).read())
  assert info["num_classes"] == 1000 and len(info["label_names"]) == 1000
  # class = (shape * 10 + colour) * 10 + pattern: 123 is shape 1, colour 2, pattern 3.
  assert info["label_names"][123] == "square/blue/diagonal"
  assert info["splits"]["train"]["num_examples"] == 600
  assert info["splits"]["eval"]["num_examples"] == 60
  down = json.loads(open(os.path.join(out, "downstream", "dataset_info.json")).read())
  assert down["num_classes"] == 16 and not down["multi_label"]


def test_class_ids_and_names_agree():
  config = synthetic.pretrain_config()
  names = config.label_names()
  for shape, colour, pattern in [(0, 0, 0), (1, 2, 3), (9, 9, 9)]:
    name = names[config.class_id(shape, colour, pattern)]
    assert name == "/".join((config.shapes[shape], config.colours[colour],
                             config.patterns[pattern]))


def test_factors_are_distinguishable_at_32_pixels():
  # Objects are ~14 px at 32 px (0.34-0.48 of the side): every pair of shapes and
  # every pair of patterns must differ on a sizeable fraction of such an object.
  size = 14
  coords = (np.arange(size) + 0.5) / size * 2 - 1
  u, v = coords[None, :], coords[:, None]
  masks = {s: synthetic._shape_mask(s, u, v) for s in synthetic.SHAPES}
  for a, b in itertools.combinations(synthetic.SHAPES, 2):
    assert (masks[a] != masks[b]).mean() > 0.08, (a, b)
  pixels = np.arange(28, dtype=np.float32)  # patterns drawn at 64 px, then halved
  shades = {}
  for p in synthetic.PATTERNS:
    shade = np.broadcast_to(synthetic._pattern(p, pixels[None, :], pixels[:, None], 7.0), (28, 28))
    shades[p] = shade.reshape(14, 2, 14, 2).mean(axis=(1, 3))  # 2x2 average = downscale
  for a, b in itertools.combinations(synthetic.PATTERNS, 2):
    assert np.abs(shades[a] - shades[b]).mean() > 0.08, (a, b)


def test_command_line_prints_the_source_specs(tmp_path, capsys):
  synthetic.main(["--out", str(tmp_path), "--num-train", "8", "--num-eval", "4",
                  "--downstream-train-per-class", "1", "--downstream-eval-per-class", "1",
                  "--num-shards", "2"])
  lines = capsys.readouterr().out.strip().splitlines()
  specs = dict(line.split("\t") for line in lines)
  assert specs["pretrain/train"] == f"arrayrecord:{tmp_path}/pretrain/train-*.array_record"
  assert len(sources.open_source(specs["pretrain/train"])) == 8
  assert len(sources.open_source(specs["downstream/train"])) == 16
