"""Batch-level training augmentation: MixUp/CutMix -> RandAugment -> label smoothing.

:class:`BatchAugment` is the ``batch_transform`` the training loader runs
inside its grain pipeline, after decoding, Inception crop, flip and resize
(the per-example transforms). It follows the loader's batch-transform
contract:

- ``input_multiplier``: how many source examples make one output (2 when
  mixing: the loader batches ``2B`` and this emits ``B``; else 1);
- ``__call__(batch, rng) -> batch`` where ``rng`` is a ``np.random.Generator``
  derived from the run's seed and the batch index, so the output is
  deterministic and a resumed stream equals the unbroken one.

Input batches hold ``image`` uint8 ``[N, H, W, 3]`` and either ``label`` int
``[N]`` (single-label sources) or ``targets`` float32 ``[N, C]`` (multi-hot).
The output holds uint8 ``image`` and float32 ``targets`` ``[B, C]`` (soft:
mixed, then smoothed) and drops ``label``; any other key keeps the rows of
each output's primary source (the first ``B`` rows).

Per program (``AugmentConfig`` / :func:`make_batch_augment`):

- pre-training (docs/reference.md section 4): crop + flip only, so no batch transform
  at all (``make_batch_augment`` returns None);
- ImageNet training (section 3): :func:`imagenet_recipe` -- mixing on,
  RandAugment with the variant's (layers, magnitude), label smoothing 0.1.

Order, as in the reference recipe: mix, then RandAugment each mixed image
(with its own child generator), then smooth the mixed targets.

Mixed rows are handed out interleaved (MixUp, CutMix, MixUp, ...), not as
two halves: the host batch is split into contiguous per-device slices (and
those into micro-batches, and SAM computes its ascent on the first 20% of
each), so only an interleaved batch gives every slice both kinds of mixing,
as the reference, which mixes within each device's batch, does.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from data import mixing
from data.randaugment import RandAugment, randaugment_for_variant
from data.errors import DataError

PAPER_LABEL_SMOOTHING = 0.1


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """What batch-level augmentation a program wants. Plain data, no behaviour.

  Attributes:
      mixup_cutmix: MixUp on half of each batch and CutMix on the other half.
      randaugment_layers: RandAugment layers per image; 0 disables RandAugment.
      randaugment_magnitude: the fixed RandAugment magnitude (0..10 scale;
    the paper uses up to 15). Take it from the variant with
    :func:`data.randaugment.randaugment_for_variant`.
      randaugment_reference_side: the image side at which Translate's and
    Cutout's pixel amounts are the reference's; other sides scale them
    (None: absolute pixels, as the reference; see data/randaugment.py).
      label_smoothing: mass moved to the uniform distribution after mixing.
  """

  mixup_cutmix: bool = False
  randaugment_layers: int = 0
  randaugment_magnitude: float = 0.0
  randaugment_reference_side: Optional[int] = None
  label_smoothing: float = 0.0

  @property
  def is_identity(self) -> bool:
    return (not self.mixup_cutmix and self.randaugment_layers == 0
            and self.label_smoothing == 0.0)


CROP_FLIP_ONLY = AugmentConfig()


def imagenet_recipe(variant: str) -> AugmentConfig:
  """The paper's ImageNet training augmentation for a variant ("F0".."F7", "F4+")."""
  layers, magnitude = randaugment_for_variant(variant)
  return AugmentConfig(
      mixup_cutmix=True,
      randaugment_layers=layers,
      randaugment_magnitude=magnitude,
      label_smoothing=PAPER_LABEL_SMOOTHING,
  )


@dataclasses.dataclass(frozen=True)
class BatchAugment:
  """The batch transform described in the module docstring."""

  config: AugmentConfig
  num_classes: int

  def __post_init__(self):
    layers, magnitude = self.config.randaugment_layers, self.config.randaugment_magnitude
    if layers < 0:
      raise DataError(f"randaugment_layers must be >= 0, got {layers}.")
    if layers and magnitude <= 0:
      raise DataError(
          "RandAugment is on but randaugment_magnitude is not positive; set it, e.g. "
          "from data.randaugment.randaugment_for_variant(variant).")
    if not 0.0 <= self.config.label_smoothing < 1.0:
      raise DataError(
          f"label_smoothing must be in [0, 1), got {self.config.label_smoothing}.")

  @property
  def input_multiplier(self) -> int:
    return 2 if self.config.mixup_cutmix else 1

  def targets_of(self, batch: dict[str, np.ndarray]) -> np.ndarray:
    """float32 ``[N, C]`` targets from ``targets`` (multi-hot) or ``label`` (int)."""
    if "targets" in batch:
      targets = np.asarray(batch["targets"], np.float32)
      if targets.shape[-1] != self.num_classes:
        raise DataError(
            f"Batch targets have {targets.shape[-1]} classes but the augmentation was "
            f"built for num_classes={self.num_classes}.")
      return targets
    if "label" in batch:
      return mixing.one_hot(batch["label"], self.num_classes)
    raise DataError(
        f"A training batch needs 'label' or 'targets'; got keys {sorted(batch)}.")

  def __call__(self, batch: dict[str, np.ndarray],
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    images = batch["image"]
    targets = self.targets_of(batch)
    out_size = len(images) // self.input_multiplier
    order = np.arange(out_size)
    if self.config.mixup_cutmix:
      images, targets, _ = mixing.mix_halves(images, targets, rng)
      order = interleaved_halves(out_size)
      images, targets = images[order], targets[order]
    if self.config.randaugment_layers:
      randaugment = RandAugment(self.config.randaugment_layers,
                                self.config.randaugment_magnitude,
                                self.config.randaugment_reference_side)
      images = randaugment(images, rng)
    if self.config.label_smoothing:
      targets = mixing.smooth_labels(targets, self.config.label_smoothing)
    out = {k: v[:out_size][order] for k, v in batch.items()
           if k not in ("image", "label", "targets")}
    out["image"] = images
    out["targets"] = targets
    return out


def interleaved_halves(batch_size: int) -> np.ndarray:
  """Row order that alternates the MixUp half and the CutMix half.

  >>> interleaved_halves(5).tolist()   # MixUp rows 0-2, CutMix rows 3-4
  [0, 3, 1, 4, 2]
  """
  num_mixup, _ = mixing.split_mixup_cutmix(batch_size)
  position = np.arange(batch_size)
  return np.where(position % 2 == 0, position // 2, num_mixup + position // 2)


def make_batch_augment(config: AugmentConfig,
                       num_classes: int) -> Optional[BatchAugment]:
  """The loader's ``batch_transform`` for ``config``; None when there is nothing to do."""
  if config.is_identity:
    return None
  return BatchAugment(config, num_classes)
