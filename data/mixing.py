"""MixUp / CutMix on halves of a batch, and label smoothing (docs/reference.md section 3).

The training recipe mixes every output image from two *distinct* source
images: the batch transform is handed ``2B`` examples and emits ``B``. Output
``i`` mixes source ``i`` (its "primary" image, weight ``w``) with source
``B + i`` (its partner, weight ``1 - w``). The first ``ceil(B / 2)`` outputs
are MixUp, the rest CutMix:

- MixUp: ``w ~ Beta(0.2, 0.2)`` per example; ``image = w * a + (1 - w) * b``,
  rounded to uint8.
- CutMix: a box whose sides are ``sqrt(1 - U)`` times the image's
  (``U ~ Uniform(0, 1)``) around a uniform random centre, clipped at the
  border, is pasted from the partner; ``1 - w`` is the fraction of pixels
  inside the box, so the label weights are exactly the pixel proportions.

Targets (one-hot from integer labels, or multi-hot rows) are mixed with the
same weights. Label smoothing is applied after mixing by the caller
(:func:`smooth_labels`). All randomness comes from the ``rng`` argument, so a
batch is a pure function of its inputs and its generator's state.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from data.errors import DataError

MIXUP_ALPHA = 0.2


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """int labels ``[N]`` -> float32 ``[N, num_classes]``."""
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise DataError(
        f"Label out of range [0, {num_classes}): got min {labels.min()}, "
        f"max {labels.max()}. Check num_classes against the dataset.")
  out = np.zeros((labels.shape[0], num_classes), np.float32)
  out[np.arange(labels.shape[0]), labels] = 1.0
  return out


def smooth_labels(targets: np.ndarray, smoothing: float) -> np.ndarray:
  """``(1 - s) * targets + s / C``: moves mass ``s`` to the uniform distribution."""
  if not 0.0 <= smoothing < 1.0:
    raise DataError(f"label_smoothing must be in [0, 1), got {smoothing}.")
  num_classes = targets.shape[-1]
  return (targets * (1.0 - smoothing) + smoothing / num_classes).astype(np.float32)


def split_mixup_cutmix(batch_size: int) -> tuple[int, int]:
  """How many outputs get MixUp and how many CutMix (MixUp takes the odd one)."""
  num_mixup = (batch_size + 1) // 2
  return num_mixup, batch_size - num_mixup


def mixup(images_a: np.ndarray, images_b: np.ndarray,
          weights_a: np.ndarray) -> np.ndarray:
  """Per-example ``w * a + (1 - w) * b`` on uint8 ``[N, H, W, C]``, rounded to uint8."""
  w = weights_a.astype(np.float32)[:, None, None, None]
  b = images_b.astype(np.float32)
  mixed = images_a.astype(np.float32)
  # b + w * (a - b), computed in place to keep the float temporaries to two.
  np.subtract(mixed, b, out=mixed)
  np.multiply(mixed, w, out=mixed)
  np.add(mixed, b, out=mixed)
  np.rint(mixed, out=mixed)
  return mixed.astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Boxes:
  """Per-example half-open boxes ``[top, bottom) x [left, right)``, int arrays ``[N]``."""

  top: np.ndarray
  bottom: np.ndarray
  left: np.ndarray
  right: np.ndarray

  def area_fraction(self, height: int, width: int) -> np.ndarray:
    area = (self.bottom - self.top) * (self.right - self.left)
    return (area / (height * width)).astype(np.float32)

  def masks(self, height: int, width: int) -> np.ndarray:
    """bool ``[N, H, W]``, True inside each box."""
    rows = np.arange(height)[None, :]
    cols = np.arange(width)[None, :]
    in_rows = (rows >= self.top[:, None]) & (rows < self.bottom[:, None])
    in_cols = (cols >= self.left[:, None]) & (cols < self.right[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


def cutmix_boxes(
    side_ratio: np.ndarray,
    center_y: np.ndarray,
    center_x: np.ndarray,
    height: int,
    width: int,
) -> Boxes:
  """Boxes ``int(side_ratio * H) x int(side_ratio * W)`` around the centres, clipped."""
  box_h = (height * side_ratio).astype(np.int64)
  box_w = (width * side_ratio).astype(np.int64)
  top = center_y - box_h // 2
  left = center_x - box_w // 2
  return Boxes(
      top=np.clip(top, 0, height),
      bottom=np.clip(top + box_h, 0, height),
      left=np.clip(left, 0, width),
      right=np.clip(left + box_w, 0, width),
  )


def sample_cutmix_params(
    rng: np.random.Generator, n: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(side_ratio = sqrt(1 - U), centre_y, centre_x)``, centres uniform over pixels."""
  side_ratio = np.sqrt(1.0 - rng.uniform(size=n))
  center_y = rng.integers(height, size=n)
  center_x = rng.integers(width, size=n)
  return side_ratio, center_y, center_x


def sample_cutmix_boxes(rng: np.random.Generator, n: int, height: int,
                        width: int) -> Boxes:
  return cutmix_boxes(*sample_cutmix_params(rng, n, height, width), height, width)


def cutmix(images_a: np.ndarray, images_b: np.ndarray, boxes: Boxes) -> np.ndarray:
  """Pastes each box of ``images_b`` into a copy of ``images_a``."""
  out = images_a.copy()
  for i in range(len(out)):
    rows = slice(boxes.top[i], boxes.bottom[i])
    cols = slice(boxes.left[i], boxes.right[i])
    out[i, rows, cols] = images_b[i, rows, cols]
  return out


def mix_halves(images: np.ndarray, targets: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mixes ``2B`` examples into ``B``: MixUp on the first half, CutMix on the rest.

  Args:
    images: uint8 ``[2B, H, W, C]``.
    targets: float ``[2B, K]`` (one-hot or multi-hot).
    rng: the batch's generator.

  Returns:
    ``(images [B, H, W, C] uint8, targets [B, K] float32, weights [B])`` where
    ``weights[i]`` is the share of output ``i`` that comes from source ``i``.
  """
  if len(images) % 2 or len(images) != len(targets):
    raise DataError(
        "Mixing needs an even number of source images with one target row each, got "
        f"{len(images)} images and {len(targets)} targets (the loader must batch 2B "
        "examples for B outputs: set input_multiplier=2)."
    )
  batch_size = len(images) // 2
  height, width = images.shape[1:3]
  primary, partner = images[:batch_size], images[batch_size:]
  num_mixup, num_cutmix = split_mixup_cutmix(batch_size)

  mix_weights = rng.beta(MIXUP_ALPHA, MIXUP_ALPHA, size=num_mixup).astype(np.float32)
  boxes = sample_cutmix_boxes(rng, num_cutmix, height, width)
  cut_weights = 1.0 - boxes.area_fraction(height, width)

  out_images = np.concatenate([
      mixup(primary[:num_mixup], partner[:num_mixup], mix_weights),
      cutmix(primary[num_mixup:], partner[num_mixup:], boxes),
  ])
  weights = np.concatenate([mix_weights, cut_weights]).astype(np.float32)
  targets = targets.astype(np.float32)
  w = weights[:, None]
  out_targets = w * targets[:batch_size] + (1.0 - w) * targets[batch_size:]
  return out_images, out_targets.astype(np.float32), weights
