"""RandAugment: every op against its defining property at the reference's magnitude."""
import collections
import math

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from data import randaugment as ra

FILL = 128


def _run(name, magnitude, image, seed=0):
  """Applies op `name` at `magnitude` with random parts drawn from `seed`."""
  height, width = image.shape[:2]
  call = ra.op_call(name, magnitude, np.random.default_rng(seed), height, width)
  return call, np.asarray(call(Image.fromarray(image)))


def _both_signs(name, magnitude, image):
  """Runs the op under seeds until both signs of its argument have been seen."""
  by_sign = {}
  for seed in range(50):
    call, out = _run(name, magnitude, image, seed)
    by_sign.setdefault(np.sign(call.args[0]), (call, out))
    if len(by_sign) == 2:
      return by_sign
  raise AssertionError(f"{name} never drew both signs")


def _dot_image(size, y, x, background=0):
  image = np.full((size, size, 3), background, np.uint8)
  image[y - 1:y + 2, x - 1:x + 2] = 255
  return image


def _centroid(image, value=255):
  ys, xs = np.nonzero(image[..., 0] == value)
  return ys.mean(), xs.mean()


def test_variant_table_follows_reference_section_1():
  assert ra.randaugment_for_variant("F0") == (4, 5)
  assert ra.randaugment_for_variant("F1") == (4, 10)
  assert ra.randaugment_for_variant("F2") == (4, 10)
  for n in range(3, 8):
    assert ra.randaugment_for_variant(f"F{n}") == (4, 15)
  assert ra.randaugment_for_variant("f4+") == (4, 15)
  assert ra.randaugment_for_variant("NFNet-F0+") == (4, 5)
  with pytest.raises(ValueError, match="F9.*pass num_layers and magnitude"):
    ra.randaugment_for_variant("F9")


def test_variant_table_matches_the_model_variants():
  from nfnet.variants import VARIANTS  # tests may import both packages; data/ may not.
  for name, variant in VARIANTS.items():
    assert ra.randaugment_for_variant(name) == (
        variant.randaugment_layers, variant.randaugment_magnitude), name


@pytest.mark.parametrize("magnitude, degrees", [(5, 15.0), (10, 30.0), (15, 45.0)])
def test_rotate_turns_by_magnitude_degrees_about_the_centre(magnitude, degrees):
  size, radius = 101, 40
  image = _dot_image(size, 50, 50 + radius)  # a dot right of the centre pixel (50, 50)
  for sign, (call, out) in _both_signs("Rotate", magnitude, image).items():
    assert call.args == (sign * degrees,)
    y, x = _centroid(out)
    angle = math.degrees(math.atan2(50 - y, x - 50))  # counter-clockwise, y points down
    assert angle == pytest.approx(sign * degrees, abs=1.0)
    assert math.hypot(y - 50, x - 50) == pytest.approx(radius, abs=1.0)
    assert (out[0, 0] == FILL).all() and (out[-1, -1] == FILL).all()  # corners come from outside


def test_rotate_by_90_is_an_exact_quarter_turn():
  image = np.random.default_rng(0).integers(0, 256, (9, 9, 3), dtype=np.uint8)
  out = np.asarray(ra.rotate(Image.fromarray(image), 90.0))
  np.testing.assert_array_equal(out, np.rot90(image))


@pytest.mark.parametrize("name, axis", [("ShearX", 1), ("ShearY", 0)])
@pytest.mark.parametrize("magnitude", [5, 10])
def test_shear_slants_lines_by_the_shear_factor(name, axis, magnitude):
  size = 101
  image = np.zeros((size, size, 3), np.uint8)
  if axis == 1:
    image[:, 50] = 255  # vertical line; ShearX moves row y by -factor * y
  else:
    image[50, :] = 255  # horizontal line; ShearY moves column x by -factor * x
  expected = magnitude / 10 * 0.3
  for sign, (call, out) in _both_signs(name, magnitude, image).items():
    assert call.args == (pytest.approx(sign * expected),)
    white = out[..., 0] == 255
    positions, offsets = [], []
    for k in range(size):
      line = white[k] if axis == 1 else white[:, k]
      if line.any():
        positions.append(k)
        offsets.append(np.nonzero(line)[0].mean())
    slope = np.polyfit(positions, offsets, 1)[0]
    assert slope == pytest.approx(-sign * expected, abs=0.01)
    # Output pixels that sample outside the input are grey: bottom-right for a
    # positive factor; bottom-left (ShearX) or top-right (ShearY) for a negative one.
    outside = (-1, -1) if sign > 0 else ((-1, 0) if axis == 1 else (0, -1))
    assert (out[outside] == FILL).all()


@pytest.mark.parametrize("name", ["TranslateX", "TranslateY"])
@pytest.mark.parametrize("magnitude, pixels", [(3, 30), (5, 50)])
def test_translate_moves_content_by_magnitude_pixels(name, magnitude, pixels):
  size = 121
  image = _dot_image(size, 60, 60, background=10)
  for sign, (call, out) in _both_signs(name, magnitude, image).items():
    assert call.args == (pytest.approx(sign * pixels),)
    y, x = _centroid(out)
    moved = x - 60 if name == "TranslateX" else y - 60
    assert moved == pytest.approx(-sign * pixels)
    # The vacated band (pixels wide) is grey, the rest is the old background.
    band = slice(size - pixels, size) if sign > 0 else slice(0, pixels)
    vacated = out[:, band] if name == "TranslateX" else out[band]
    assert (vacated == FILL).all()
    assert vacated.size == size * pixels * 3
    assert ((out == FILL) | (out == 10) | (out == 255)).all()
    assert (out == FILL).sum() == size * pixels * 3


_ALL_VALUES = np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(16, 16, 3)


@pytest.mark.parametrize("magnitude, bits", [(3, 1), (5, 2), (10, 4), (15, 6)])
def test_posterize_keeps_the_top_bits(magnitude, bits):
  call, out = _run("Posterize", magnitude, _ALL_VALUES)
  assert call.args == (bits,)
  np.testing.assert_array_equal(out >> (8 - bits), _ALL_VALUES >> (8 - bits))
  np.testing.assert_array_equal(out & ((1 << (8 - bits)) - 1), 0)
  assert len(np.unique(out)) == 2 ** bits


def test_posterize_to_zero_bits_is_black():
  out = np.asarray(ra.posterize(Image.fromarray(_ALL_VALUES), 0))
  assert (out == 0).all()


@pytest.mark.parametrize("magnitude, threshold", [(3, 76), (5, 128), (10, 256), (15, 384)])
def test_solarize_inverts_values_at_or_above_threshold(magnitude, threshold):
  call, out = _run("Solarize", magnitude, _ALL_VALUES)
  assert call.args == (threshold,)
  values = _ALL_VALUES.astype(int)
  expected = np.where(values < threshold, values, 255 - values)
  np.testing.assert_array_equal(out, expected)
  if threshold > 255:  # magnitude >= 10: the reference's Solarize is the identity
    np.testing.assert_array_equal(out, _ALL_VALUES)


@pytest.mark.parametrize("magnitude, addition", [(5, 55), (10, 110)])
def test_solarize_add_brightens_only_dark_values(magnitude, addition):
  call, out = _run("SolarizeAdd", magnitude, _ALL_VALUES)
  assert call.args == (addition,)
  values = _ALL_VALUES.astype(int)
  expected = np.where(values < 128, np.minimum(values + addition, 255), values)
  np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("name", ["Color", "Contrast", "Brightness", "Sharpness"])
@pytest.mark.parametrize("magnitude", [3, 10, 15])
def test_enhance_ops_use_factor_m_over_10_times_1_8_plus_0_1(name, magnitude):
  call, _ = _run(name, magnitude, _ALL_VALUES)
  assert call.args == (pytest.approx(magnitude / 10 * 1.8 + 0.1),)


def _blend(degenerate, image, factor):
  return np.clip(degenerate + factor * (np.asarray(image, float) - degenerate), 0, 255)


@pytest.mark.parametrize("magnitude", [3, 10])
def test_brightness_scales_towards_black(magnitude):
  image = np.full((8, 8, 3), 100, np.uint8)
  image[:4] = 50
  _, out = _run("Brightness", magnitude, image)
  factor = magnitude / 10 * 1.8 + 0.1
  np.testing.assert_allclose(out, _blend(0.0, image, factor), atol=1)


@pytest.mark.parametrize("magnitude", [3, 10])
def test_color_blends_with_the_grey_image(magnitude):
  image = np.zeros((8, 8, 3), np.uint8)
  image[:4] = (200, 100, 50)
  image[4:] = (90, 90, 90)  # grey pixels are unchanged by any factor
  _, out = _run("Color", magnitude, image)
  factor = magnitude / 10 * 1.8 + 0.1
  grey = (200 * 299 + 100 * 587 + 50 * 114) / 1000  # ITU-R 601-2 luma, as PIL
  np.testing.assert_allclose(out[0, 0], _blend(grey, image[0, 0], factor), atol=1)
  np.testing.assert_array_equal(out[4:], 90)


@pytest.mark.parametrize("magnitude", [3, 10])
def test_contrast_blends_with_the_mean_grey_level(magnitude):
  image = np.full((8, 8, 3), 150, np.uint8)
  image[:4] = 50  # mean grey level 100
  _, out = _run("Contrast", magnitude, image)
  factor = magnitude / 10 * 1.8 + 0.1
  np.testing.assert_allclose(out, _blend(100.0, image, factor), atol=1)


def test_sharpness_blends_with_the_smoothing_kernel():
  image = np.zeros((9, 9, 3), np.uint8)
  image[4, 4] = 200
  _, out = _run("Sharpness", 3, image)
  factor = 3 / 10 * 1.8 + 0.1
  # Kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13: the centre smooths to 5/13 of
  # its value, each neighbour picks up 1/13 of it.
  assert out[4, 4, 0] == pytest.approx(_blend(200 * 5 / 13, 200, factor), abs=1)
  assert out[3, 4, 0] == pytest.approx(_blend(200 / 13, 0, factor), abs=1)
  assert (out[0] == 0).all()  # far pixels untouched


def test_auto_contrast_stretches_each_channel_to_full_range():
  image = np.zeros((4, 4, 3), np.uint8)
  image[..., 0] = np.linspace(50, 150, 16).reshape(4, 4)
  image[..., 1] = np.linspace(100, 110, 16).reshape(4, 4)
  image[..., 2] = 77  # a flat channel is left alone
  _, out = _run("AutoContrast", 10, image)
  for c in (0, 1):
    lo, hi = image[..., c].min(), image[..., c].max()
    expected = (image[..., c].astype(float) - lo) * 255 / (hi - lo)
    np.testing.assert_allclose(out[..., c], expected, atol=1)
  assert (out[..., 2] == 77).all()


def test_equalize_uses_the_reference_histogram_lut():
  rng = np.random.default_rng(0)
  image = rng.integers(100, 116, (32, 32, 3), dtype=np.uint8)
  _, out = _run("Equalize", 10, image)
  for c in range(3):
    hist = np.bincount(image[..., c].ravel(), minlength=256)
    step = (hist.sum() - hist[np.nonzero(hist)[0][-1]]) // 255
    lut = np.concatenate([[0], (np.cumsum(hist) + step // 2) // step])[:256]
    np.testing.assert_array_equal(out[..., c], np.clip(lut, 0, 255)[image[..., c]])
  assert out.min() == 0 and out.max() >= 240  # a narrow range is spread out


def test_invert():
  _, out = _run("Invert", 10, _ALL_VALUES)
  np.testing.assert_array_equal(out, 255 - _ALL_VALUES)


@pytest.mark.parametrize("magnitude, half_size", [(5, 20), (10, 40), (15, 60)])
def test_cutout_fills_a_square_of_twice_the_half_size(magnitude, half_size):
  size = 200
  image = np.zeros((size, size, 3), np.uint8)
  seen_interior = False
  for seed in range(40):
    call, out = _run("Cutout", magnitude, image, seed)
    h, cy, cx = call.args
    assert h == half_size and 0 <= cy < size and 0 <= cx < size
    grey = (out[..., 0] == FILL)
    rows, cols = np.nonzero(grey.any(1))[0], np.nonzero(grey.any(0))[0]
    assert (rows.min(), rows.max() + 1) == (max(0, cy - h), min(size, cy + h))
    assert (cols.min(), cols.max() + 1) == (max(0, cx - h), min(size, cx + h))
    assert grey.sum() == len(rows) * len(cols)  # a filled rectangle
    if h <= cy <= size - h and h <= cx <= size - h:
      seen_interior = True
      assert grey.sum() == (2 * h) ** 2
  assert seen_interior


def test_cutout_is_clipped_at_the_border():
  out = np.asarray(ra.cutout(Image.fromarray(np.zeros((50, 60, 3), np.uint8)), 10, 3, 55))
  grey = out[..., 0] == FILL
  assert grey.sum() == 13 * 15  # rows 0..12, cols 45..59
  assert grey[:13, 45:].all()



def test_pixel_amounts_scale_with_the_image_given_a_reference_side():
  # The reference's absolute amounts move a 32 px image wholly off its canvas
  # at m = 5 (50 px); relative to 224 px they are 50 * 32 / 224 px.
  image = _dot_image(32, 16, 16, background=10)
  rng = np.random.default_rng(0)
  absolute = ra.op_call("TranslateX", 5, rng, 32, 32)
  relative = ra.op_call("TranslateX", 5, np.random.default_rng(0), 32, 32, 224)
  assert abs(absolute.args[0]) == 50
  assert abs(relative.args[0]) == pytest.approx(50 * 32 / 224)
  assert (np.asarray(absolute(Image.fromarray(image))) == FILL).all()
  shifted = np.asarray(relative(Image.fromarray(image)))
  assert (shifted == 255).sum() == 9 * 3  # the dot is still in the image
  cutout = ra.op_call("Cutout", 10, np.random.default_rng(0), 32, 48, 224)
  assert cutout.args[0] == int(40 * 32 / 224)
  # At the reference side the amounts are the reference's.
  assert ra.op_call("Cutout", 10, rng, 224, 224, 224).args[0] == 40


@pytest.mark.parametrize("reference_side, wiped_at_least, wiped_at_most",
                         [(None, 20, 64), (224, 0, 0)])
def test_batch_augment_passes_the_reference_side(reference_side, wiped_at_least,
                                                 wiped_at_most):
  # Four layers at m = 10 on 32 px images: with absolute pixels a Translate
  # or Cutout (3 of the 16 ops) leaves a flat image in about half of them;
  # scaled to the image, nothing wipes it.
  from data import augment
  config = augment.AugmentConfig(randaugment_layers=4, randaugment_magnitude=10,
                                 randaugment_reference_side=reference_side)
  images = np.stack([_dot_image(32, 16, 16, background=10)] * 64)
  out = augment.BatchAugment(config, num_classes=2)(
      {"image": images, "label": np.zeros(64, np.int32)},
      np.random.default_rng(0))["image"]
  wiped = sum(int(image.std() == 0) for image in out)
  assert wiped_at_least <= wiped <= wiped_at_most

def test_each_layer_picks_one_of_16_ops_uniformly():
  assert len(ra.OP_NAMES) == 16
  rng = np.random.default_rng(0)
  counts = collections.Counter(
      call.name for _ in range(4000) for call in ra.sample_plan(rng, 4, 10, 32, 32))
  assert set(counts) == set(ra.OP_NAMES)
  expected = 4000 * 4 / 16
  chi2 = sum((counts[n] - expected) ** 2 / expected for n in ra.OP_NAMES)
  assert chi2 < 37.7  # 99.9% quantile of chi-square with 15 degrees of freedom


def test_every_image_gets_exactly_num_layers_ops_applied(monkeypatch):
  calls = collections.Counter()

  def counting(name, op):
    def wrapped(*args):
      calls[name] += 1
      return op(*args)
    return wrapped

  for name, op in list(ra._OPS.items()):
    monkeypatch.setitem(ra._OPS, name, counting(name, op))
  images = np.random.default_rng(0).integers(0, 256, (25, 32, 32, 3), dtype=np.uint8)
  ra.RandAugment(num_layers=4, magnitude=10)(images, np.random.default_rng(1))
  assert sum(calls.values()) == 4 * 25


def _pil(function):
  return lambda image: np.asarray(function(Image.fromarray(image)))


# The ops that draw nothing beyond their name, at magnitude 3, from their
# definitions (PIL's ImageOps / ImageEnhance where PIL defines the op; the
# reference's arguments: 1 bit, threshold 76, addition 33, factor 0.64).
_DETERMINISTIC_AT_3 = {
    "AutoContrast": _pil(ImageOps.autocontrast),
    "Equalize": _pil(ImageOps.equalize),
    "Invert": lambda image: 255 - image,
    "Posterize": lambda image: image & 0x80,
    "Solarize": lambda image: np.where(image < 76, image, 255 - image),
    "SolarizeAdd": lambda image: np.where(image < 128, np.minimum(image + 33, 255),
                                          image).astype(np.uint8),
    "Color": _pil(lambda im: ImageEnhance.Color(im).enhance(0.64)),
    "Contrast": _pil(lambda im: ImageEnhance.Contrast(im).enhance(0.64)),
    "Brightness": _pil(lambda im: ImageEnhance.Brightness(im).enhance(0.64)),
    "Sharpness": _pil(lambda im: ImageEnhance.Sharpness(im).enhance(0.64)),
}


def test_randaugment_applies_the_drawn_ops_in_order():
  """Seeds whose 4 drawn ops are all deterministic ones: the output is those
  ops' definitions composed in the drawn order (and the order shows)."""
  image = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
  checked, order_mattered = 0, 0
  for seed in range(200):
    names = [call.name for call in ra.sample_plan(np.random.default_rng(seed), 4, 3, 12, 16)]
    if not set(names) <= set(_DETERMINISTIC_AT_3):
      continue
    out = ra.randaugment(image, np.random.default_rng(seed), 4, 3)
    expected = image
    for name in names:
      expected = _DETERMINISTIC_AT_3[name](expected)
    np.testing.assert_array_equal(out, expected, err_msg=str(names))
    reversed_order = image
    for name in reversed(names):
      reversed_order = _DETERMINISTIC_AT_3[name](reversed_order)
    order_mattered += not np.array_equal(out, reversed_order)
    checked += 1
  assert checked >= 10 and order_mattered >= 5


def test_batch_randaugment_is_deterministic_and_per_example():
  images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
  augment = ra.RandAugment(num_layers=4, magnitude=10)
  first = augment(images, np.random.default_rng(3))
  np.testing.assert_array_equal(first, augment(images, np.random.default_rng(3)))
  assert not np.array_equal(first, augment(images, np.random.default_rng(4)))
  # Image i's result depends on the batch rng and i only, not on its neighbours.
  np.testing.assert_array_equal(first[:2], augment(images[:2], np.random.default_rng(3)))
  assert first.dtype == np.uint8 and first.shape == images.shape
