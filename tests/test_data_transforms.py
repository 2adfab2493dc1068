"""Baseline transforms: Inception crop bounds, flip, eval geometry, DCT-scaled decoding."""

import io
import math

import cv2
import numpy as np
import pytest
import simplejpeg
from PIL import Image

from data import decode
from data import transforms


def _png(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, "PNG")
  return buffer.getvalue()


def _photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
  """Smooth random image: JPEG-friendly, with structure at every position."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def test_inception_crop_area_and_aspect_bounds():
  config = transforms.TransformConfig(224)
  rng = np.random.default_rng(0)
  height, width = 375, 500
  areas, aspects, fallbacks = [], [], 0
  for _ in range(3000):
    (top, left, h, w), sampled = transforms.sample_inception_crop(height, width, rng, config)
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
    if not sampled:
      fallbacks += 1
      continue
    areas.append(h * w / (height * width))
    aspects.append(w / h)
  areas, aspects = np.asarray(areas), np.asarray(aspects)
  # Rounding the sides to whole pixels moves area and aspect by well under 2%.
  assert areas.min() >= 0.08 * 0.98 and areas.max() <= 1.0
  assert aspects.min() >= 0.75 * 0.98 and aspects.max() <= 4 / 3 * 1.02
  # Both ends of both ranges are reached, and log-aspect is centred on 1.
  assert areas.min() < 0.1 and areas.max() > 0.9
  assert aspects.min() < 0.78 and aspects.max() > 1.28
  # Draws that do not fit are retried: only big, elongated draws fail, rarely
  # 10 times in a row.
  assert fallbacks < 15


def test_inception_crop_aspect_is_log_uniform_on_a_square_image():
  config = transforms.TransformConfig(224)
  rng = np.random.default_rng(1)
  boxes = [transforms.sample_inception_crop(300, 300, rng, config)[0] for _ in range(4000)]
  log_aspects = np.log([w / h for _, _, h, w in boxes])
  # Symmetric around 0 and spread like Uniform(log 3/4, log 4/3) (std 0.166).
  assert abs(log_aspects.mean()) < 0.01
  assert abs(log_aspects.std() - math.log(4 / 3) / math.sqrt(3)) < 0.01


def test_inception_crop_falls_back_to_reference_centre_crop():
  config = transforms.TransformConfig(224)
  rng = np.random.default_rng(0)
  # A 1:20 strip: no crop with aspect >= 3/4 and area >= 8% fits.
  box, sampled = transforms.sample_inception_crop(20, 400, rng, config)
  assert not sampled
  side = round(224 / 256 * 20)
  assert box == ((20 - side) // 2, (400 - side) // 2, side, side)


def test_train_image_shape_dtype_and_crop_content():
  pixels = _photo_like(120, 160)
  config = transforms.TransformConfig(32, area_range=(1.0, 1.0), aspect_range=(4 / 3, 4 / 3),
                                      flip=False, dct_scaled_decode=False)
  out = transforms.train_image(_png(pixels), np.random.default_rng(0), config)
  assert out.shape == (32, 32, 3) and out.dtype == np.uint8
  # Area 1 and aspect 4/3 on a 4:3 image is the whole image: equal to a plain resize.
  expected = cv2.resize(pixels, (32, 32), interpolation=cv2.INTER_CUBIC)
  np.testing.assert_array_equal(out, expected)


def test_flip_is_a_fair_horizontal_mirror():
  pixels = np.zeros((64, 64, 3), np.uint8)
  pixels[:, :32, 0] = 255  # red left half
  pixels[:, 32:, 2] = 255  # blue right half
  data = _png(pixels)
  whole = dict(area_range=(1.0, 1.0), aspect_range=(1.0, 1.0), dct_scaled_decode=False)
  reference = transforms.train_image(data, np.random.default_rng(0),
                                     transforms.TransformConfig(16, flip=False, **whole))
  assert reference[:, 0, 0].min() == 255 and reference[:, -1, 2].min() == 255
  flips = 0
  for seed in range(200):
    out = transforms.train_image(data, np.random.default_rng(seed),
                                 transforms.TransformConfig(16, **whole))
    if np.array_equal(out, reference[:, ::-1]):
      flips += 1
    else:
      np.testing.assert_array_equal(out, reference)
  assert 70 < flips < 130  # Binomial(200, 1/2): 5 sigma is +-35.


def test_eval_geometry_resize_then_centre_crop():
  pixels = _photo_like(90, 200, seed=3)
  config = transforms.TransformConfig(64, dct_scaled_decode=False)
  out = transforms.eval_image(_png(pixels), config)
  resized = cv2.resize(pixels, (96, 96), interpolation=cv2.INTER_CUBIC)
  np.testing.assert_array_equal(out, resized[16:80, 16:80])


def test_resize_matches_the_references_tensorflow_bicubic():
  """The reference resizes with tf.image.resize(method="bicubic"), not antialiased."""
  tf = pytest.importorskip("tensorflow")
  pixels = _photo_like(120, 160, seed=4)
  config = transforms.TransformConfig(48, dct_scaled_decode=False)
  ours = transforms.eval_image(_png(pixels), config).astype(float)
  reference = tf.image.resize(pixels, [80, 80], method="bicubic").numpy()
  reference = np.clip(np.round(reference), 0, 255)[16:64, 16:64]
  # Same geometry and filter family (Keys cubic, a = -0.75 here and -0.5 in
  # TensorFlow): under a grey level apart on average, against 2+ for PIL's
  # antialiased bicubic.
  assert np.abs(ours - reference).mean() < 1.0


def test_eval_keeps_a_centred_square_centred_and_drops_the_margin():
  pixels = np.zeros((300, 300, 3), np.uint8)
  pixels[100:200, 100:200] = 255  # a centred white square, 1/3 of the side
  pixels[:, :10] = 255  # a white border stripe that the centre crop must cut off
  out = transforms.eval_image(_png(pixels), transforms.TransformConfig(224))
  white = out[..., 0] > 128
  rows, cols = np.nonzero(white[:, 20:])  # ignore what is left of the stripe
  cols = cols + 20
  # (S + 32) / 3 = 85.3 px square centred in the 256 resize, offset by 16.
  assert abs(rows.mean() - 111.5) < 1 and abs(cols.mean() - 111.5) < 1
  assert abs(math.sqrt(white[:, 20:].sum()) - 256 / 3) < 2
  assert not white[:, 8:12].any()  # stripe was 10/300 * 256 = 8.5 px, cropped by 16


def test_dct_scaled_decode_is_smaller_but_close():
  pixels = _photo_like(375, 500, seed=1)
  jpeg = simplejpeg.encode_jpeg(pixels, quality=92)
  small = decode.decode_rgb(jpeg, min_height=100, min_width=100)
  assert 100 <= small.shape[0] < 375 and 100 <= small.shape[1] < 500
  assert decode.decode_rgb(jpeg).shape == (375, 500, 3)
  fast = transforms.TransformConfig(64, flip=False)
  slow = transforms.TransformConfig(64, flip=False, dct_scaled_decode=False)
  for seed in range(5):
    box, _ = transforms.sample_inception_crop(375, 500, np.random.default_rng(seed), fast)
    a = transforms.train_image(jpeg, np.random.default_rng(seed), fast).astype(float)
    b = transforms.train_image(jpeg, np.random.default_rng(seed), slow).astype(float)
    snapped = _full_decode_of_box_snapped_to_dct_grid(jpeg, box, 64)
    # The crop is the sampled box moved by at most half a decoded pixel
    # (about 3 grey levels on this steep image), plus the resampling path
    # (DCT scaling against a full decode + cubic: 3 grey levels).
    assert np.abs(a - b).mean() < 6.5
    # On the same decoded-grid box, only the resampling path differs.
    assert np.abs(a - snapped).mean() < 3.5
  a = transforms.eval_image(jpeg, fast).astype(float)
  b = transforms.eval_image(jpeg, slow).astype(float)
  assert np.abs(a - b).mean() < 3.5


def _full_decode_of_box_snapped_to_dct_grid(jpeg: bytes, box, size: int) -> np.ndarray:
  """What train_image(flip=False) gives without DCT scaling for the box it really crops."""
  top, left, height, width = box
  needed = (math.ceil(375 * size / height), math.ceil(500 * size / width))
  decoded_h, decoded_w = transforms.dct_min_size((375, 500), needed)

  def snap(value: int, factor: float) -> int:
    return int(round(round(value / factor) * factor))

  rows = slice(snap(top, 375 / decoded_h), snap(top + height, 375 / decoded_h))
  cols = slice(snap(left, 500 / decoded_w), snap(left + width, 500 / decoded_w))
  full = decode.decode_rgb(jpeg)[rows, cols]
  return cv2.resize(full, (size, size), interpolation=cv2.INTER_CUBIC).astype(float)


def test_dct_scales_are_powers_of_two_keeping_the_needed_size():
  assert transforms.dct_min_size((375, 500), (64, 64)) == (94, 125)  # 1/4
  assert transforms.dct_min_size((375, 500), (100, 100)) == (188, 250)  # 1/2, not 3/8
  assert transforms.dct_min_size((375, 500), (300, 100)) == (375, 500)  # full
  assert transforms.dct_min_size((800, 800), (90, 90)) == (100, 100)  # 1/8


def test_grayscale_and_cmyk_jpegs_decode_to_rgb():
  gray = np.ascontiguousarray(_photo_like(40, 50)[..., :1])
  gray_jpeg = simplejpeg.encode_jpeg(gray, colorspace="GRAY")
  assert decode.decode_rgb(gray_jpeg).shape == (40, 50, 3)
  buffer = io.BytesIO()
  Image.fromarray(_photo_like(40, 50)).convert("CMYK").save(buffer, "JPEG")
  assert decode.decode_rgb(buffer.getvalue()).shape == (40, 50, 3)


def test_undecodable_bytes_raise_decode_error():
  truncated = simplejpeg.encode_jpeg(_photo_like(64, 64), quality=90)[:200]
  for data in (b"not an image at all", truncated):
    with pytest.raises(decode.ImageDecodeError):
      transforms.eval_image(data, transforms.TransformConfig(32))


def test_config_rejects_bad_ranges():
  with pytest.raises(ValueError, match="area_range"):
    transforms.TransformConfig(32, area_range=(0.5, 1.5))
  with pytest.raises(ValueError, match="resolution"):
    transforms.TransformConfig(0)
