"""Baseline per-example image transforms (the paper's reference pipeline).

Training (:func:`train_image`): Inception crop -> bicubic resize to S x S ->
random horizontal flip.

- The crop box is drawn exactly as the reference draws it, with
  ``tf.image.sample_distorted_bounding_box(min_object_covered=0.1,
  aspect_ratio_range=(3/4, 4/3), area_range=(0.08, 1), max_attempts=10)`` on
  the whole-image box, re-implemented here on NumPy (:func:`sample_distorted_box`):
  the aspect ratio is uniform, the crop height uniform over the pixel sizes
  the area range allows, and a crop must cover 10% of the image. When the
  sampler gives back the whole image (every attempt failed, or it drew the
  whole image), the reference falls back to a centre crop: a centred square
  whose side is the eval crop's fraction (``S / (S + 32)`` by default) of the
  shorter side.
- Only what the crop needs is decoded: for a JPEG the crop box is chosen from
  the header alone, then the image is decoded at the smallest DCT scale (1/8
  steps) that still gives the crop at least S pixels each way
  (:mod:`data.decode`). ``dct_scaled_decode=False`` turns this off.

Evaluation (:func:`eval_image`): full decode, bicubic resize of the whole
image to ``(S + 32) x (S + 32)`` (aspect ratio not kept; the paper's margin,
capped below 224 px so that at least 87.5% of each side is kept, or
``round(S / eval_crop_fraction)`` when set), then the centre S x S crop.

Resizing is OpenCV's bicubic interpolation (``cv2.INTER_CUBIC``), which,
like the reference's ``tf.image.resize(method="bicubic")``, is not
antialiased: measured on a 500x375 photo-like image, its output is 0.7 grey
levels from TensorFlow's on average, against 2.3 for PIL's antialiased
bicubic, and it is 4x faster than PIL (0.19 ms against 0.82 ms for a 224 px
output in ``benchmarks/input_pipeline.py``), which is what lets the loader
keep up with tf.data per core. Because the DCT-scaled decode leaves at
most 2x more pixels than the output needs, the missing antialiasing matters
only when that decode is off or the image is not a JPEG, exactly as in the
reference.

Every function takes the image bytes and returns uint8 ``[S, S, 3]``; all
randomness comes from the ``np.random.Generator`` argument, so an output is a
pure function of (bytes, generator state).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from data import decode
from data.errors import DataError

# The loader parallelises over examples (threads and processes); OpenCV's own
# thread pool on top of that would only oversubscribe the cores.
cv2.setNumThreads(1)

EVAL_RESIZE_MARGIN = 32
# The default eval crop never keeps less than this fraction of each side: the
# paper's S / (S + 32) is 0.875 at 224 px and more above, but would keep only
# half of a 32 px image.
MIN_DEFAULT_EVAL_CROP_FRACTION = 0.875


@dataclasses.dataclass(frozen=True)
class TransformConfig:
  """Geometry of the baseline transforms. Plain data.

  Attributes:
    resolution: output side S in pixels.
    area_range: Inception crop area, as fractions of the image area.
    aspect_range: Inception crop width / height range.
    min_object_covered: a sampled crop must cover at least this fraction of
      the image (TensorFlow's ``min_object_covered`` on the whole-image box).
    attempts: Inception crop draws before the centre-crop fallback.
    flip: random horizontal flip (probability 1/2) in training.
    dct_scaled_decode: decode training JPEGs at a reduced DCT scale when the
      crop allows it (evaluation always decodes at full size).
    eval_crop_fraction: evaluation keeps this fraction of each side: it
      resizes the whole image to ``round(S / fraction)`` and centre-crops S.
      None is the paper's ``S / (S + 32)`` from 224 px up (0.875 at 224,
      0.923 at 384) and 0.875 below, where the paper's margin would throw
      most of the image away (it keeps 0.5 at 32 px). The training crop's
      centre-crop fallback keeps the same fraction.
  """

  resolution: int
  area_range: tuple[float, float] = (0.08, 1.0)
  aspect_range: tuple[float, float] = (3 / 4, 4 / 3)
  min_object_covered: float = 0.1
  attempts: int = 10
  flip: bool = True
  dct_scaled_decode: bool = True
  eval_crop_fraction: float | None = None

  def __post_init__(self):
    if self.resolution <= 0:
      raise DataError(f"resolution must be positive, got {self.resolution}.")
    low, high = self.area_range
    if not 0 < low <= high <= 1:
      raise DataError(f"area_range must satisfy 0 < low <= high <= 1, got {self.area_range}.")
    low, high = self.aspect_range
    if not 0 < low <= high:
      raise DataError(f"aspect_range must satisfy 0 < low <= high, got {self.aspect_range}.")
    if self.eval_crop_fraction is not None and not 0 < self.eval_crop_fraction <= 1:
      raise DataError(
          f"eval_crop_fraction must be in (0, 1], got {self.eval_crop_fraction}.")

  def eval_resize_side(self) -> int:
    """The side the whole image is resized to before the eval centre crop."""
    if self.eval_crop_fraction is None:
      return min(self.resolution + EVAL_RESIZE_MARGIN,
                 int(round(self.resolution / MIN_DEFAULT_EVAL_CROP_FRACTION)))
    return max(self.resolution, int(round(self.resolution / self.eval_crop_fraction)))

  def eval_crop_fraction_for(self) -> float:
    """The fraction of each side the eval crop keeps (resolved default)."""
    return self.resolution / self.eval_resize_side()


# A crop box in pixels of the stored image: (top, left, height, width).
Box = tuple[int, int, int, int]


def center_crop_box(height: int, width: int, fraction: float) -> Box:
  """A centred square whose side is ``fraction`` of the image's shorter side."""
  side = max(1, int(round(fraction * min(height, width))))
  return (height - side) // 2, (width - side) // 2, side, side


def _lrintf(value) -> int:
  """C's ``lrintf``: float32 rounded half to even, as TensorFlow's kernel rounds."""
  return int(np.rint(np.float32(value)))


def _crop_for_aspect(height: int, width: int, area_range: tuple[float, float],
                     aspect: np.float32, rng: np.random.Generator) -> Box | None:
  """One attempt of TensorFlow's ``GenerateRandomCrop``, in float32 like the kernel.

  For the drawn aspect ratio the crop *height* is uniform over the whole
  pixel sizes whose area lies in ``area_range`` (so area is not uniform: it
  grows with the square of a uniform side), the width is
  ``round(height * aspect)``, and the top-left corner is uniform over
  ``[0, H - h) x [0, W - w)``. Returns None when the constraints cannot hold.
  """
  f32 = np.float32
  min_area = f32(area_range[0]) * f32(width) * f32(height)
  max_area = f32(area_range[1]) * f32(width) * f32(height)
  crop_h = _lrintf(np.sqrt(min_area / aspect, dtype=f32))
  max_h = _lrintf(np.sqrt(max_area / aspect, dtype=f32))
  if _lrintf(f32(max_h) * aspect) > width:
    # The largest height whose rounded width still fits.
    max_h = int((f32(width) + f32(0.5) - f32(1e-7)) / aspect)
    if _lrintf(f32(max_h) * aspect) > width:
      max_h -= 1
  max_h = min(max_h, height)
  crop_h = min(crop_h, max_h)
  if crop_h < max_h:
    crop_h += int(rng.integers(0, max_h - crop_h + 1))
  crop_w = _lrintf(f32(crop_h) * aspect)
  area = f32(crop_w * crop_h)
  if area < min_area:  # rounding made it too small: one pixel taller
    crop_h += 1
    crop_w = _lrintf(f32(crop_h) * aspect)
    area = f32(crop_w * crop_h)
  if area > max_area:  # or too large: one pixel shorter
    crop_h -= 1
    crop_w = _lrintf(f32(crop_h) * aspect)
    area = f32(crop_w * crop_h)
  if (area < min_area or area > max_area or crop_w > width or crop_h > height
      or crop_w <= 0 or crop_h <= 0):
    return None
  top = int(rng.integers(0, height - crop_h)) if crop_h < height else 0
  left = int(rng.integers(0, width - crop_w)) if crop_w < width else 0
  return top, left, crop_h, crop_w


def sample_distorted_box(height: int, width: int, rng: np.random.Generator,
                         config: TransformConfig) -> Box:
  """``tf.image.sample_distorted_bounding_box`` on the whole-image box.

  Up to ``config.attempts`` draws: an aspect ratio uniform in
  ``aspect_range`` (not log-uniform), a crop for it (:func:`_crop_for_aspect`),
  accepted when it covers at least ``min_object_covered`` of the image.
  When every attempt fails the whole image is returned, as TensorFlow does.
  """
  low, high = np.float32(config.aspect_range[0]), np.float32(config.aspect_range[1])
  for _ in range(config.attempts):
    aspect = np.float32(np.float32(rng.random()) * (high - low) + low)
    box = _crop_for_aspect(height, width, config.area_range, aspect, rng)
    if box is not None and box[2] * box[3] >= max(1.0, config.min_object_covered * height * width):
      return box
  return 0, 0, height, width


def sample_inception_crop(height: int, width: int, rng: np.random.Generator,
                          config: TransformConfig) -> tuple[Box, bool]:
  """The reference's Inception crop: TensorFlow's sampler, centre-crop fallback.

  Returns:
    ``(box, sampled)``: ``sampled`` is False when the sampler returned the
    whole image (every attempt failed, or it drew the whole image) and
    ``box`` is then the centre crop the reference falls back to (the eval
    crop's fraction of the shorter side).
  """
  box = sample_distorted_box(height, width, rng, config)
  if box[2:] == (height, width):
    return center_crop_box(height, width, config.eval_crop_fraction_for()), False
  return box, True


def dct_min_size(image_hw: tuple[int, int], needed_hw: tuple[int, int]) -> tuple[int, int]:
  """The min_height/min_width that make libjpeg-turbo decode at 1/1, 1/2, 1/4 or 1/8.

  It would otherwise pick any M/8 scale; measured here, the odd ones (3/8,
  5/8, ...) are both slower and less faithful (mean abs difference to a full
  decode + resize of 4.5 grey levels at 3/8 against 2.6 at 1/4), so only
  power-of-two scales are used: the smallest one that keeps ``needed_hw``.
  """
  height, width = image_hw
  factor = 8
  while factor > 1 and (height // factor < needed_hw[0] or width // factor < needed_hw[1]):
    factor //= 2
  return math.ceil(height / factor), math.ceil(width / factor)


def _decode_crop(data, box: Box, image_hw: tuple[int, int], out_hw: tuple[int, int],
                 dct_scaled: bool) -> np.ndarray:
  """Decodes just enough pixels for ``box`` to yield ``out_hw`` and returns the box's pixels.

  After a DCT-scaled decode the box's edges are rounded to whole decoded
  pixels: a shift of at most half a decoded pixel, far below the crop's own
  randomness, that lets a plain separable resize do the rest where an exact
  sub-pixel warp would cost 7x as much.
  """
  height, width = image_hw
  top, left, box_h, box_w = box
  min_height = min_width = 0
  if dct_scaled:
    # The box must keep at least out_hw pixels after scaling the whole image.
    min_height, min_width = dct_min_size(
        (height, width), (math.ceil(height * out_hw[0] / box_h), math.ceil(width * out_hw[1] / box_w)))
  pixels = decode.decode_rgb(data, min_height=min_height, min_width=min_width)
  # Scale from the decoded size, not the requested one: it also absorbs a
  # header that disagrees with the pixels.
  rows = _scaled_span(top, box_h, pixels.shape[0] / height, pixels.shape[0])
  cols = _scaled_span(left, box_w, pixels.shape[1] / width, pixels.shape[1])
  return pixels[rows, cols]


def _scaled_span(start: int, length: int, scale: float, limit: int) -> slice:
  """``[start, start + length)`` scaled and rounded to whole pixels, at least one, inside ``limit``."""
  begin = min(int(round(start * scale)), limit - 1)
  end = min(max(int(round((start + length) * scale)), begin + 1), limit)
  return slice(begin, end)


def resize_bicubic(pixels: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
  """The pipeline's resize (see the module docstring): uint8 ``[H, W, 3]`` to ``out_hw``."""
  return cv2.resize(pixels, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_CUBIC)


def train_image(data, rng: np.random.Generator, config: TransformConfig) -> np.ndarray:
  """Inception crop, bicubic resize to S x S, random flip: uint8 ``[S, S, 3]``."""
  size = config.resolution
  image_hw = decode.image_size(data)
  box, _ = sample_inception_crop(*image_hw, rng, config)
  crop = _decode_crop(data, box, image_hw, (size, size), config.dct_scaled_decode)
  out = resize_bicubic(crop, (size, size))
  if config.flip and rng.random() < 0.5:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def eval_image(data, config: TransformConfig) -> np.ndarray:
  """Full decode, bicubic resize of the whole image to R x R, centre S x S: uint8.

  ``R = config.eval_resize_side()`` (the paper's S + 32 from 224 px up). The
  image is decoded at full size, as the reference does, whatever
  ``dct_scaled_decode`` says: evaluation numbers must not depend on it.
  """
  size = config.resolution
  resized_side = config.eval_resize_side()
  resized = resize_bicubic(decode.decode_rgb(data), (resized_side, resized_side))
  offset = (resized_side - size) // 2
  return np.ascontiguousarray(resized[offset:offset + size, offset:offset + size])
