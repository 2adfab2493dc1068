"""Baseline per-example image transforms (REFERENCE.md section 3).

Training (:func:`train_image`): Inception crop -> bicubic resize to S x S ->
random horizontal flip.

- The crop covers a uniform fraction of the image area in ``[0.08, 1]`` with
  an aspect ratio (width / height) log-uniform in ``[3/4, 4/3]``; up to 10
  draws are tried and the first that fits inside the image is used. If none
  fits, the fallback is the reference's centre crop: a centred square whose
  side is ``S / (S + 32)`` of the image's shorter side.
- Only what the crop needs is decoded: for a JPEG the crop box is chosen from
  the header alone, then the image is decoded at the smallest DCT scale (1/8
  steps) that still gives the crop at least S pixels each way
  (:mod:`data.decode`). ``dct_scaled_decode=False`` turns this off.

Evaluation (:func:`eval_image`): bicubic resize of the whole image to
``(S + 32) x (S + 32)`` (aspect ratio not kept), then the centre S x S crop.

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

# The loader parallelises over examples (threads and processes); OpenCV's own
# thread pool on top of that would only oversubscribe the cores.
cv2.setNumThreads(1)

EVAL_RESIZE_MARGIN = 32


@dataclasses.dataclass(frozen=True)
class TransformConfig:
  """Geometry of the baseline transforms. Plain data.

  Attributes:
    resolution: output side S in pixels.
    area_range: Inception crop area, as fractions of the image area.
    aspect_range: Inception crop width / height range.
    attempts: Inception crop draws before the centre-crop fallback.
    flip: random horizontal flip (probability 1/2) in training.
    dct_scaled_decode: decode JPEGs at a reduced DCT scale when the crop (or
      the eval resize) allows it.
    eval_resize_margin: eval resizes to ``S + margin`` then centre-crops S.
  """

  resolution: int
  area_range: tuple[float, float] = (0.08, 1.0)
  aspect_range: tuple[float, float] = (3 / 4, 4 / 3)
  attempts: int = 10
  flip: bool = True
  dct_scaled_decode: bool = True
  eval_resize_margin: int = EVAL_RESIZE_MARGIN

  def __post_init__(self):
    if self.resolution <= 0:
      raise ValueError(f"resolution must be positive, got {self.resolution}.")
    low, high = self.area_range
    if not 0 < low <= high <= 1:
      raise ValueError(f"area_range must satisfy 0 < low <= high <= 1, got {self.area_range}.")
    low, high = self.aspect_range
    if not 0 < low <= high:
      raise ValueError(f"aspect_range must satisfy 0 < low <= high, got {self.aspect_range}.")


# A crop box in pixels of the stored image: (top, left, height, width).
Box = tuple[int, int, int, int]


def center_crop_box(height: int, width: int, resolution: int,
                    margin: int = EVAL_RESIZE_MARGIN) -> Box:
  """The reference's fallback: a centred square, ``S / (S + margin)`` of the shorter side."""
  side = max(1, int(round(resolution / (resolution + margin) * min(height, width))))
  return (height - side) // 2, (width - side) // 2, side, side


def sample_inception_crop(height: int, width: int, rng: np.random.Generator,
                          config: TransformConfig) -> tuple[Box, bool]:
  """Draws an Inception crop box.

  Returns:
    ``(box, sampled)``: ``sampled`` is False when every attempt failed and
    ``box`` is the centre-crop fallback.
  """
  area = height * width
  log_low, log_high = math.log(config.aspect_range[0]), math.log(config.aspect_range[1])
  for _ in range(config.attempts):
    target_area = area * rng.uniform(*config.area_range)
    aspect = math.exp(rng.uniform(log_low, log_high))
    crop_w = int(round(math.sqrt(target_area * aspect)))
    crop_h = int(round(math.sqrt(target_area / aspect)))
    if 0 < crop_w <= width and 0 < crop_h <= height:
      top = int(rng.integers(0, height - crop_h + 1))
      left = int(rng.integers(0, width - crop_w + 1))
      return (top, left, crop_h, crop_w), True
  return center_crop_box(height, width, config.resolution, config.eval_resize_margin), False


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
  """Bicubic resize of the whole image to (S + 32)^2, then the centre S x S: uint8."""
  size = config.resolution
  resized_side = size + config.eval_resize_margin
  min_height = min_width = 0
  if config.dct_scaled_decode:
    min_height, min_width = dct_min_size(decode.image_size(data), (resized_side, resized_side))
  pixels = decode.decode_rgb(data, min_height=min_height, min_width=min_width)
  resized = resize_bicubic(pixels, (resized_side, resized_side))
  offset = config.eval_resize_margin // 2
  return np.ascontiguousarray(resized[offset:offset + size, offset:offset + size])
