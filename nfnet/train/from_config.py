"""The programs' loaders, built from the shared run config.

Both programs describe their input with the same config keys (see
nfnet/train/config_base.py): `data.*`, `augment.*`, `batch_size`, `resolution`,
`eval_resolution`, `seed` and `model.variant` (for the RandAugment magnitude).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from data import augment, loader, sources, transforms
from data.randaugment import randaugment_for_variant
from nfnet.errors import UserError


@dataclasses.dataclass
class TrainData:
  """The training stream and what the programs need to know about its source."""

  iterator: loader.LoaderIterator
  num_examples: int
  num_classes: int
  multi_label: bool
  # index -> class name when the source names its classes (folder names, TFDS
  # label names, dataset_info.json); recorded in checkpoints for nfnet.load.
  label_names: Optional[list] = None


def _source_options(config, spec: str) -> dict[str, Any]:
  """What the config says about the records and label space of `spec`.

  `model.num_classes` and `data.multi_label` override (or stand in for) the
  source's own metadata, so raw shards from any writer train without a
  dataset_info.json. `data.label_key` names the shards' labels; a folder's
  are its subfolders.
  """
  return sources.options_for(spec, label_key=config.data.label_key,
                             num_classes=config.model.num_classes,
                             multi_label=config.data.multi_label)


def transform_config(config) -> transforms.TransformConfig:
  """Crop geometry of the training stream (and the eval crop's fraction)."""
  return transforms.TransformConfig(
      config.resolution, area_range=(config.augment.crop_area_min, 1.0),
      eval_crop_fraction=config.eval_crop_fraction)


def augment_config(config) -> augment.AugmentConfig:
  """Crop+flip only, or the paper's MixUp/CutMix + RandAugment + smoothing."""
  layers = config.augment.randaugment_layers
  magnitude = config.augment.randaugment_magnitude
  if layers and magnitude is None:
    magnitude = randaugment_for_variant(config.model.variant)[1]
  return augment.AugmentConfig(
      mixup_cutmix=config.augment.mixup_cutmix, randaugment_layers=layers,
      randaugment_magnitude=float(magnitude or 0),
      randaugment_reference_side=config.augment.randaugment_reference_side,
      label_smoothing=config.augment.label_smoothing)


def open_train_source(config) -> sources.Source:
  if not config.data.train:
    raise UserError("config.data.train is empty: point it at a source, e.g. "
                     "--config.data.train=arrayrecord:/data/train-*.array_record")
  source = sources.open_source(config.data.train,
                               **_source_options(config, config.data.train))
  if not source.num_classes:
    raise UserError(
        f"{config.data.train}: the number of classes is unknown (no dataset_info.json "
        "beside the shards): set --config.model.num_classes=N, and "
        "--config.data.multi_label=True if an image may carry several labels.")
  return source


def make_train_data(config, process_index: int, process_count: int) -> TrainData:
  source = open_train_source(config)
  num_classes = config.model.num_classes or source.num_classes
  iterator = loader.make_train_loader(
      source, global_batch_size=config.batch_size, resolution=config.resolution,
      transform_config=transform_config(config),
      seed=config.seed, process_index=process_index, process_count=process_count,
      num_workers=config.data.num_workers,
      batch_transform=augment.make_batch_augment(augment_config(config), num_classes),
      skip_corrupt=config.data.skip_corrupt)
  return TrainData(iterator, len(source), num_classes, source.multi_label,
                   source.label_names)


def check_eval_classes(config, eval_source: sources.Source,
                       train_label_names: Optional[list]) -> None:
  """Where both sets name their classes, they must name the same ones in the
  same order: a folder source numbers its classes by its own sorted folder
  names, so an eval folder missing one class would shift every later label
  and score against the wrong classes without any error."""
  differs = sources.class_names_differ(train_label_names, eval_source.label_names)
  if differs:
    raise UserError(
        f"{config.data.eval} does not name the classes of {config.data.train} "
        f"in the same order {differs}, so its labels would mean other classes. "
        "Give the eval set the training set's classes (an empty folder for a "
        "class with no eval images).")


def make_eval_data(config, process_index: int, process_count: int,
                   train_label_names: Optional[list] = None
                   ) -> Optional[loader.EvalLoader]:
  """One exact pass over `data.eval` per iteration; None when no eval source.
  `train_label_names`: the training source's class names, to check against."""
  if not config.data.eval:
    return None
  source = sources.open_source(config.data.eval,
                               **_source_options(config, config.data.eval))
  check_eval_classes(config, source, train_label_names)
  resolution = config.eval_resolution or config.resolution
  return loader.make_eval_loader(
      source, global_batch_size=config.batch_size, resolution=resolution,
      transform_config=transforms.TransformConfig(
          resolution, eval_crop_fraction=config.eval_crop_fraction),
      process_index=process_index, process_count=process_count,
      num_workers=config.data.num_workers, skip_corrupt=config.data.skip_corrupt)
