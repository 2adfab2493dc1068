"""MixUp / CutMix halves, label smoothing and the composed batch transform."""
import numpy as np
import pytest

from data import augment, mixing
from data import randaugment as ra_ops

NUM_CLASSES = 128


def _constant_sources(batch_size, size=16):
  """2B sources: primaries are black, partners are 200; labels 0..2B-1 (all distinct)."""
  images = np.zeros((2 * batch_size, size, size, 3), np.uint8)
  images[batch_size:] = 200
  labels = np.arange(2 * batch_size)
  return images, mixing.one_hot(labels, NUM_CLASSES), labels


def test_first_half_is_mixup_second_half_is_cutmix():
  batch_size = 8
  images, targets, _ = _constant_sources(batch_size)
  out, _, weights = mixing.mix_halves(images, targets, np.random.default_rng(0))
  assert out.shape == (batch_size, 16, 16, 3) and out.dtype == np.uint8
  num_mixup, num_cutmix = mixing.split_mixup_cutmix(batch_size)
  assert (num_mixup, num_cutmix) == (4, 4)
  for i in range(num_mixup):  # a MixUp of two flat images is flat, at the blend value
    assert len(np.unique(out[i])) == 1
    assert out[i, 0, 0, 0] == round((1 - weights[i]) * 200)
  for i in range(num_mixup, batch_size):  # a CutMix only has the two source values
    assert set(np.unique(out[i])) <= {0, 200}
  assert mixing.split_mixup_cutmix(5) == (3, 2)


def test_label_weights_equal_pixel_proportions():
  batch_size = 64
  images, targets, labels = _constant_sources(batch_size, size=32)
  out, mixed, weights = mixing.mix_halves(images, targets, np.random.default_rng(1))
  num_mixup, _ = mixing.split_mixup_cutmix(batch_size)
  partner_share = out[..., 0].astype(float) / 200  # per pixel: 0 = primary, 1 = partner
  for i in range(batch_size):
    primary, partner = labels[i], labels[batch_size + i]
    assert mixed[i, primary] == pytest.approx(weights[i])
    assert mixed[i, partner] == pytest.approx(1 - weights[i])
    assert mixed[i].sum() == pytest.approx(1.0)
    if i < num_mixup:  # rounding to uint8 costs at most half a level of 200
      assert partner_share[i].mean() == pytest.approx(1 - weights[i], abs=0.5 / 200)
    else:  # CutMix: exactly the fraction of pixels taken from the partner
      assert partner_share[i].mean() == pytest.approx(mixed[i, partner], abs=1e-6)


def test_every_output_mixes_two_distinct_sources_each_used_once():
  batch_size = 10
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (2 * batch_size, 8, 8, 3), dtype=np.uint8)
  labels = np.arange(2 * batch_size)
  _, mixed, _ = mixing.mix_halves(images, mixing.one_hot(labels, NUM_CLASSES), rng)
  sources = [set(np.nonzero(row)[0]) for row in mixed]
  used = [label for support in sources for label in support]
  assert len(used) == len(set(used))  # no source feeds two outputs
  for i, support in enumerate(sources):
    assert support <= {i, batch_size + i}  # and the two it mixes are distinct images
  assert sum(len(s) == 2 for s in sources) >= batch_size - 1


def test_mixup_ratios_follow_beta_0_2():
  images = np.zeros((2 * 4000, 1, 1, 3), np.uint8)
  targets = np.zeros((len(images), 2), np.float32)
  _, _, weights = mixing.mix_halves(images, targets, np.random.default_rng(3))
  ratios = weights[:2000]
  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)) = 0.1786 for a = 0.2 (U-shaped).
  assert ratios.mean() == pytest.approx(0.5, abs=0.02)
  assert ratios.var() == pytest.approx(1 / (4 * 1.4), abs=0.01)
  assert ((ratios < 0.05) | (ratios > 0.95)).mean() > 0.4


def test_cutmix_side_ratio_is_sqrt_one_minus_uniform_with_uniform_centre():
  rng = np.random.default_rng(4)
  side, cy, cx = mixing.sample_cutmix_params(rng, 20000, 50, 70)
  # side**2 = 1 - U is uniform on (0, 1]: compare quantiles.
  np.testing.assert_allclose(np.quantile(side**2, [0.1, 0.5, 0.9]), [0.1, 0.5, 0.9],
                             atol=0.02)
  assert cy.min() == 0 and cy.max() == 49 and cx.min() == 0 and cx.max() == 69
  assert np.bincount(cy).min() > 0.7 * 20000 / 50


def test_cutmix_boxes_are_centred_and_clipped_at_the_border():
  boxes = mixing.cutmix_boxes(np.array([0.5, 0.5, 1.0]), np.array([20, 2, 39]),
                              np.array([30, 58, 0]), 40, 60)
  # Box 0: 20 x 30 around (20, 30), inside. Box 1: clipped top and right.
  # Box 2: full-size box at the bottom-left corner keeps only one quadrant.
  np.testing.assert_array_equal(boxes.top, [10, 0, 19])
  np.testing.assert_array_equal(boxes.bottom, [30, 12, 40])
  np.testing.assert_array_equal(boxes.left, [15, 43, 0])
  np.testing.assert_array_equal(boxes.right, [45, 60, 30])
  masks = boxes.masks(40, 60)
  np.testing.assert_allclose(boxes.area_fraction(40, 60), masks.mean(axis=(1, 2)))
  np.testing.assert_allclose(boxes.area_fraction(40, 60)[0], 0.25)


def test_multi_hot_targets_mix_with_the_same_weights():
  batch_size = 6
  rng = np.random.default_rng(5)
  images = rng.integers(0, 256, (2 * batch_size, 8, 8, 3), dtype=np.uint8)
  multi_hot = (rng.random((2 * batch_size, NUM_CLASSES)) < 0.2).astype(np.float32)
  _, mixed, weights = mixing.mix_halves(images, multi_hot, rng)
  w = weights[:, None]
  np.testing.assert_allclose(mixed, w * multi_hot[:batch_size]
                             + (1 - w) * multi_hot[batch_size:], rtol=1e-6)


def test_label_smoothing():
  targets = mixing.one_hot(np.array([3, 0]), 10)
  smoothed = mixing.smooth_labels(targets, 0.1)
  assert smoothed[0, 3] == pytest.approx(0.9 + 0.01)
  assert smoothed[0, 0] == pytest.approx(0.01)
  np.testing.assert_allclose(smoothed.sum(1), 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="label_smoothing"):
    mixing.smooth_labels(targets, 1.0)


def test_one_hot_rejects_labels_outside_num_classes():
  with pytest.raises(ValueError, match="Check num_classes"):
    mixing.one_hot(np.array([0, 10]), 10)


def test_odd_number_of_sources_is_refused_with_a_hint():
  with pytest.raises(ValueError, match="input_multiplier=2"):
    mixing.mix_halves(np.zeros((5, 4, 4, 3), np.uint8), np.zeros((5, 3)),
                      np.random.default_rng(0))


# --------------------------------------------------------------------------
# The composed batch transform.
# --------------------------------------------------------------------------


def _batch(n, size=24, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
      "label": rng.integers(0, NUM_CLASSES, n).astype(np.int32),
      "index": np.arange(n),
  }


def test_imagenet_recipe_takes_magnitude_from_the_variant():
  assert augment.imagenet_recipe("F0") == augment.AugmentConfig(
      mixup_cutmix=True, randaugment_layers=4, randaugment_magnitude=5,
      label_smoothing=0.1)
  assert augment.imagenet_recipe("F2").randaugment_magnitude == 10
  assert augment.imagenet_recipe("F4+").randaugment_magnitude == 15


def test_pretraining_crop_flip_only_has_no_batch_transform():
  assert augment.make_batch_augment(augment.CROP_FLIP_ONLY, 1000) is None
  transform = augment.make_batch_augment(augment.imagenet_recipe("F0"), 1000)
  assert transform.input_multiplier == 2
  only_smoothing = augment.AugmentConfig(label_smoothing=0.1)
  assert augment.make_batch_augment(only_smoothing, 1000).input_multiplier == 1


def _constant_batch(batch_size, size=16):
  """2B examples: primaries black, partners 200, labels 0..2B-1."""
  images, _, labels = _constant_sources(batch_size, size)
  return {"image": images, "label": labels.astype(np.int32), "index": np.arange(2 * batch_size)}


def _primary_weights(out, smoothing):
  """Each row's primary-source weight, read back from its smoothed target."""
  rows = np.arange(len(out["index"]))
  return (out["targets"][rows, out["index"]] - smoothing / NUM_CLASSES) / (1 - smoothing)


def test_batch_transform_mixes_interleaves_then_smooths():
  batch_size, smoothing = 8, 0.1
  transform = augment.BatchAugment(
      augment.AugmentConfig(mixup_cutmix=True, label_smoothing=smoothing), NUM_CLASSES)
  out = transform(_constant_batch(batch_size), np.random.default_rng(11))

  assert out["image"].dtype == np.uint8 and out["image"].shape == (8, 16, 16, 3)
  assert out["targets"].dtype == np.float32 and out["targets"].shape == (8, NUM_CLASSES)
  assert "label" not in out
  # MixUp rows 0-3 and CutMix rows 4-7 alternate; each keeps its primary's fields.
  np.testing.assert_array_equal(out["index"], [0, 4, 1, 5, 2, 6, 3, 7])
  weights = _primary_weights(out, smoothing)
  floor = smoothing / NUM_CLASSES
  for row, (primary, w) in enumerate(zip(out["index"], weights)):
    partner = primary + batch_size
    target = out["targets"][row]
    # (1 - s) * (w one_hot(primary) + (1 - w) one_hot(partner)) + s / C.
    assert target[partner] == pytest.approx((1 - smoothing) * (1 - w) + floor, abs=1e-6)
    others = np.delete(target, [primary, partner])
    np.testing.assert_allclose(others, floor, rtol=1e-6)
    assert target.sum() == pytest.approx(1.0, abs=1e-5)
    partner_share = out["image"][row, ..., 0] / 200  # 0 = primary pixel, 1 = partner
    if row % 2 == 0:  # MixUp: one flat blend at 200 (1 - w), rounded
      assert len(np.unique(out["image"][row])) == 1
      assert partner_share.mean() == pytest.approx(1 - w, abs=0.5 / 200 + 1e-6)
    else:  # CutMix: the partner's pixel share is its label weight
      assert set(np.unique(out["image"][row])) <= {0, 200}
      assert partner_share.mean() == pytest.approx(1 - w, abs=1e-6)


def test_randaugment_runs_on_the_mixed_images(monkeypatch):
  """Every RandAugment op made Posterize(1 bit), a non-linear map: after
  mixing, a MixUp row of 0 and 200 posterizes to 0 or 128 (by whether the
  blend reaches 128); posterizing the sources first would blend 0 and 128."""
  for name in ra_ops.OP_NAMES:
    monkeypatch.setitem(ra_ops._OPS, name, lambda image, *args: ra_ops.posterize(image, 1))
  transform = augment.BatchAugment(
      augment.AugmentConfig(mixup_cutmix=True, randaugment_layers=1,
                            randaugment_magnitude=10), NUM_CLASSES)
  out = transform(_constant_batch(8), np.random.default_rng(3))
  weights = _primary_weights(out, 0.0)
  blends = [w for row, w in enumerate(weights) if row % 2 == 0 and 0.01 < w < 0.99]
  assert blends  # some MixUp rows are real blends (Beta(0.2, 0.2) is U-shaped)
  for row in range(0, 8, 2):
    blend = round(200 * (1 - weights[row]))
    assert (out["image"][row] == (128 if blend >= 128 else 0)).all()


def test_batch_transform_accepts_multi_hot_targets():
  transform = augment.BatchAugment(augment.AugmentConfig(mixup_cutmix=True), NUM_CLASSES)
  batch = _batch(8)
  del batch["label"]
  batch["targets"] = np.zeros((8, NUM_CLASSES), np.float32)
  batch["targets"][:, :3] = 1.0
  out = transform(batch, np.random.default_rng(0))
  np.testing.assert_allclose(out["targets"][:, :3], 1.0)  # identical rows mix to themselves
  with pytest.raises(ValueError, match="num_classes=129"):
    augment.BatchAugment(augment.AugmentConfig(mixup_cutmix=True), 129)(
        batch, np.random.default_rng(0))


def test_batch_transform_is_deterministic_under_its_rng():
  transform = augment.BatchAugment(augment.imagenet_recipe("F0"), NUM_CLASSES)
  batch = _batch(12)
  a = transform(batch, np.random.default_rng(5))
  b = transform(batch, np.random.default_rng(5))
  c = transform(batch, np.random.default_rng(6))
  np.testing.assert_array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["targets"], b["targets"])
  assert not np.array_equal(a["image"], c["image"])


def test_bad_configs_fail_with_a_clear_message():
  with pytest.raises(ValueError, match="randaugment_magnitude"):
    augment.BatchAugment(augment.AugmentConfig(randaugment_layers=2), 10)
  with pytest.raises(ValueError, match="label_smoothing"):
    augment.BatchAugment(augment.AugmentConfig(label_smoothing=1.5), 10)
