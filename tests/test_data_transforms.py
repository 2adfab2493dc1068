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


def _tensorflow_boxes(height: int, width: int, n: int, seed: int) -> np.ndarray:
  """n boxes (top, left, h, w) from TensorFlow's own sampler, as the reference calls it."""
  import tensorflow as tf
  seeds = tf.random.stateless_uniform([n, 2], seed=[seed, 7], minval=0,
                                      maxval=2**31 - 1, dtype=tf.int64)

  @tf.function
  def draw(s):
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        [height, width, 3], tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=s,
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0), max_attempts=10)
    return tf.concat([begin[:2], size[:2]], 0)

  return tf.map_fn(draw, seeds, fn_output_signature=tf.int32).numpy()


def _our_boxes(height: int, width: int, n: int, seed: int) -> np.ndarray:
  config = transforms.TransformConfig(224)
  rng = np.random.default_rng(seed)
  return np.array([transforms.sample_distorted_box(height, width, rng, config)
                   for _ in range(n)])


@pytest.mark.parametrize("height,width", [(375, 500), (32, 32), (48, 64), (500, 333)])
def test_crop_sampler_matches_tensorflows_distribution(height, width):
  """Area, aspect, size and position follow tf.image.sample_distorted_bounding_box."""
  from scipy import stats
  n = 2500
  ours = _our_boxes(height, width, n, seed=height)
  theirs = _tensorflow_boxes(height, width, n, seed=width)
  for boxes in (ours, theirs):
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()

  def features(boxes):
    top, left, h, w = boxes.T.astype(float)
    return {"area": h * w / (height * width), "aspect": w / h, "height": h,
            "top": top / height, "left": left / width}

  for name, values in features(ours).items():
    reference = features(theirs)[name]
    # Two-sample Kolmogorov-Smirnov: same distribution unless p is tiny. The
    # old log-uniform-aspect, uniform-area sampler fails "area" at p < 1e-6.
    result = stats.ks_2samp(values, reference)
    assert result.pvalue > 1e-3, (name, result, values.mean(), reference.mean())
    assert abs(values.mean() - reference.mean()) < 0.05 * abs(reference.mean()) + 0.01
  # TF never returns a crop under min_object_covered = 10% of the image.
  area = features(ours)["area"]
  assert area.min() >= 0.1 and area.max() <= 1.0


def test_crop_sampler_returns_the_whole_image_when_nothing_fits():
  # A 1:20 strip: no crop with aspect in [3/4, 4/3] covers 10% of it.
  box = transforms.sample_distorted_box(20, 400, np.random.default_rng(0),
                                        transforms.TransformConfig(224))
  assert box == (0, 0, 20, 400)
  assert (_tensorflow_boxes(20, 400, 3, seed=0) == [0, 0, 20, 400]).all()


def test_inception_crop_falls_back_to_the_eval_crops_centre_square():
  rng = np.random.default_rng(0)
  box, sampled = transforms.sample_inception_crop(
      20, 400, rng, transforms.TransformConfig(224))
  assert not sampled
  side = round(224 / 256 * 20)  # the paper's S / (S + 32) of the shorter side
  assert box == ((20 - side) // 2, (400 - side) // 2, side, side)
  box, _ = transforms.sample_inception_crop(
      20, 400, rng, transforms.TransformConfig(32, eval_crop_fraction=1.0))
  assert box == (0, 190, 20, 20)


def test_eval_crop_fraction_sets_the_resize_side():
  assert transforms.TransformConfig(224).eval_resize_side() == 256  # the paper's S + 32
  assert transforms.TransformConfig(384).eval_resize_side() == 416
  # Below 224 px the paper's margin would keep too little (half at 32 px).
  assert transforms.TransformConfig(32).eval_resize_side() == 37
  assert transforms.TransformConfig(128).eval_resize_side() == 146
  assert transforms.TransformConfig(32, eval_crop_fraction=1.0).eval_resize_side() == 32
  assert transforms.TransformConfig(32, eval_crop_fraction=0.875).eval_resize_side() == 37
  with pytest.raises(ValueError, match="eval_crop_fraction"):
    transforms.TransformConfig(32, eval_crop_fraction=1.5)


def test_train_image_shape_dtype_and_crop_content():
  pixels = _photo_like(120, 160)
  config = transforms.TransformConfig(32, area_range=(0.4, 0.6), aspect_range=(1.0, 1.0),
                                      flip=False, dct_scaled_decode=False)
  rng = np.random.default_rng(0)
  (top, left, h, w), sampled = transforms.sample_inception_crop(120, 160, rng, config)
  assert sampled and h == w and 0.4 <= h * w / (120 * 160) <= 0.6
  out = transforms.train_image(_png(pixels), np.random.default_rng(0), config)
  assert out.shape == (32, 32, 3) and out.dtype == np.uint8
  expected = cv2.resize(pixels[top:top + h, left:left + w], (32, 32),
                        interpolation=cv2.INTER_CUBIC)
  np.testing.assert_array_equal(out, expected)


def test_whole_image_draw_falls_back_to_the_centre_crop_like_the_reference():
  # Area 1 and aspect 4/3 on a 4:3 image can only draw the whole image; the
  # reference then takes its centre crop instead.
  pixels = _photo_like(120, 160)
  config = transforms.TransformConfig(32, area_range=(1.0, 1.0), aspect_range=(4 / 3, 4 / 3),
                                      flip=False, dct_scaled_decode=False,
                                      eval_crop_fraction=1.0)
  out = transforms.train_image(_png(pixels), np.random.default_rng(0), config)
  expected = cv2.resize(pixels[:, 20:140], (32, 32), interpolation=cv2.INTER_CUBIC)
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
  config = transforms.TransformConfig(64, dct_scaled_decode=False, eval_crop_fraction=2 / 3)
  out = transforms.eval_image(_png(pixels), config)
  resized = cv2.resize(pixels, (96, 96), interpolation=cv2.INTER_CUBIC)
  np.testing.assert_array_equal(out, resized[16:80, 16:80])


def test_resize_matches_the_references_tensorflow_bicubic():
  """The reference resizes with tf.image.resize(method="bicubic"), not antialiased."""
  import tensorflow as tf
  pixels = _photo_like(120, 160, seed=4)
  config = transforms.TransformConfig(48, dct_scaled_decode=False, eval_crop_fraction=0.6)
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
    # The crop is the sampled box moved by at most half a decoded pixel (up
    # to 2 source pixels at a 1/4-scale decode: up to ~9.5 grey levels on
    # this steep image, seed 1), plus the resampling path (3 grey levels).
    assert np.abs(a - b).mean() < 10
    # On the same decoded-grid box, only the resampling path differs.
    assert np.abs(a - snapped).mean() < 3.5
  # Evaluation always decodes at full size, as the reference does.
  np.testing.assert_array_equal(transforms.eval_image(jpeg, fast),
                                transforms.eval_image(jpeg, slow))


def test_eval_crop_fraction_one_keeps_the_whole_image():
  pixels = _photo_like(40, 30, seed=5)
  out = transforms.eval_image(_png(pixels), transforms.TransformConfig(
      32, eval_crop_fraction=1.0))
  np.testing.assert_array_equal(
      out, cv2.resize(pixels, (32, 32), interpolation=cv2.INTER_CUBIC))


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


def test_16bit_grey_png_decodes_like_tensorflow():
  # PIL's convert("RGB") clips 16-bit values at 255: a grey ramp came back
  # 98% white. TensorFlow, which the reference decodes with, keeps the top
  # 8 bits.
  tf = pytest.importorskip("tensorflow")
  ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
  buffer = io.BytesIO()
  Image.fromarray(ramp).save(buffer, "PNG")
  ours = decode.decode_rgb(buffer.getvalue())
  theirs = tf.io.decode_png(buffer.getvalue(), channels=3, dtype=tf.uint8)
  np.testing.assert_array_equal(ours, theirs.numpy())
  assert ours.shape == (48, 64, 3) and ours.mean() == pytest.approx(127.5, abs=1)


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
