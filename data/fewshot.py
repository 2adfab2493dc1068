"""Inputs of the few-shot probes run during pre-training (pretrain/fewshot.py).

For each downstream set named in ``config.fewshot.datasets``
(``name -> {"train": SOURCE, "test": SOURCE}``, single-label sources):

- the *pool*: from the first ``config.fewshot.scan_examples`` records of the
  train split (only their labels are read, once, at start-up), a seeded random
  choice of ``max(shots) + heldout_per_class`` examples per class, laid out
  class by class; the probe takes the first k of each class as its k shots and
  the rest to choose the ridge regularisation;
- the *test* split, read whole.

Both are :func:`data.loader.make_eval_loader` passes with the run's eval
transform (the whole image resized, the centre S x S crop keeping
``config.eval_crop_fraction`` of each side; padded, masked; each process reads
its share), so the probe sees images as eval does and its feature extraction
is sharded over hosts and devices exactly like eval.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import numpy as np

from data import loader, sources, transforms
from data.errors import DataError


class SubsetSource(sources.Source):
  """The records ``indices`` of ``source``, in that order. Picklable."""

  def __init__(self, source: sources.Source, indices: np.ndarray, what: str):
    self._source = source
    self._indices = np.asarray(indices, np.int64)
    self.spec = f"{source.spec} ({what})"
    self.label_space = source.label_space

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> sources.Record:
    return self._source[int(self._indices[int(index)])]

  def locate(self, index: int) -> sources.RecordLocation:
    return self._source.locate(int(self._indices[int(index)]))


@dataclasses.dataclass
class FewShotData:
  """What ``pretrain.fewshot.run_probes`` reads for one downstream set."""

  name: str
  num_classes: int
  pool: loader.EvalLoader
  test: loader.EvalLoader


def read_labels(source: sources.Source, limit: int, skip_corrupt: bool) -> np.ndarray:
  """The single label of each of the first ``limit`` records (-1: skipped corrupt)."""
  if source.multi_label:
    raise DataError(f"{source.spec} is multi-label; few-shot probes need one label "
                     "per image.")
  count = min(len(source), limit) if limit else len(source)
  labels = np.full(count, -1, np.int64)
  for i in range(count):
    try:
      record_labels = source[i].labels
    except sources.CorruptRecordError:
      if not skip_corrupt:
        raise
      continue
    if record_labels.size != 1:
      raise sources.CorruptRecordError(source.locate(i), f"{record_labels.size} labels "
                                       "in a source used for single-label few-shot probes")
    labels[i] = record_labels[0]
  return labels


def choose_pool(labels: np.ndarray, num_classes: int, per_class: int,
                seed: int) -> np.ndarray:
  """Indices of ``per_class`` randomly chosen examples of every class, class by class.

  >>> choose_pool(np.array([1, 0, 1, 0, 0]), 2, 2, seed=0).reshape(2, 2).shape
  (2, 2)
  """
  rng = np.random.default_rng(seed)
  chosen = []
  for c in range(num_classes):
    rows = np.flatnonzero(labels == c)
    if len(rows) < per_class:
      raise DataError(
          f"class {c} has {len(rows)} examples among the records scanned, the "
          f"few-shot probes need {per_class} (the largest shot count + "
          "heldout_per_class); lower config.fewshot.shots or raise "
          "config.fewshot.scan_examples.")
    chosen.append(rng.choice(rows, size=per_class, replace=False))
  return np.concatenate(chosen)


def _open(spec: str, entry: Any) -> sources.Source:
  label_key = entry.get("label_key") if hasattr(entry, "get") else None
  return sources.open_source(spec, **({"label_key": label_key} if label_key else {}))


def make_fewshot_sets(config, process_index: int, process_count: int) -> list[FewShotData]:
  """One :class:`FewShotData` per ``config.fewshot.datasets`` entry (none when empty)."""
  fewshot = config.fewshot
  batch_size = fewshot.batch_size or config.batch_size
  resolution = fewshot.resolution or config.eval_resolution or config.resolution
  per_class = max(fewshot.shots) + fewshot.heldout_per_class
  if fewshot.datasets and fewshot.heldout_per_class < 1:
    raise DataError("config.fewshot.heldout_per_class must be at least 1: the "
                    "held-out images choose the probes' regularisation.")
  sets = []
  for name, entry in sorted(fewshot.datasets.items()):
    if not entry.get("train") or not entry.get("test"):
      raise DataError(f"config.fewshot.datasets.{name} needs both 'train' and "
                       "'test' source strings.")
    train, test = _open(entry["train"], entry), _open(entry["test"], entry)
    for source in (train, test):
      if not source.num_classes:
        raise DataError(f"{source.spec}: the number of classes is unknown; write a "
                         "dataset_info.json beside the shards.")
    if train.num_classes != test.num_classes:
      raise DataError(f"config.fewshot.datasets.{name}: train has {train.num_classes} "
                       f"classes, test {test.num_classes}; they must share one label space.")
    differs = sources.class_names_differ(train.label_names, test.label_names)
    if differs:
      raise DataError(f"config.fewshot.datasets.{name}: test does not name train's "
                      f"classes in their order {differs}; they must share one "
                      "label space.")
    print(f"Few-shot {name}: reading the labels of {entry['train']} ...",
          file=sys.stderr, flush=True)
    labels = read_labels(train, fewshot.scan_examples, config.data.skip_corrupt)
    pool = SubsetSource(train, choose_pool(labels, train.num_classes, per_class,
                                           seed=config.seed), "few-shot pool")
    make = lambda source: loader.make_eval_loader(
        source, global_batch_size=batch_size, resolution=resolution,
        transform_config=transforms.TransformConfig(
            resolution, eval_crop_fraction=config.eval_crop_fraction),
        process_index=process_index, process_count=process_count,
        num_workers=config.data.num_workers, skip_corrupt=config.data.skip_corrupt)
    sets.append(FewShotData(name, int(train.num_classes), make(pool), make(test)))
  return sets
