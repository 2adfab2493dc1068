"""Every device's slice of a mixed batch (and SAM's ascent rows in it) holds both mixings."""
import numpy as np

from data import augment
from nfnet import sam


def _kind(image: np.ndarray, weight_of_primary: float) -> str:
  """'mixup', 'cutmix' or 'ambiguous' for an output mixing an all-0 primary with an all-255 partner."""
  values = np.unique(image)
  blended = len(values) == 1 and values[0] == round((1 - weight_of_primary) * 255)
  zeros = float(np.mean(image == 0))
  pasted = set(values.tolist()) <= {0, 255} and np.isclose(zeros, weight_of_primary, atol=1e-6)
  if blended and not pasted:
    return "mixup"
  if pasted and not blended:
    return "cutmix"
  return "ambiguous"


def test_mixup_and_cutmix_rows_alternate_so_each_device_slice_gets_both():
  batch_size, devices = 32, 4
  per_device = batch_size // devices
  ascent_rows = sam.ascent_batch_size(per_device, 0.2)  # 2 of 8
  primary = np.zeros((batch_size, 16, 16, 3), np.uint8)
  partner = np.full((batch_size, 16, 16, 3), 255, np.uint8)
  labels = np.array([0] * batch_size + [1] * batch_size)
  transform = augment.BatchAugment(augment.AugmentConfig(mixup_cutmix=True), num_classes=2)
  for seed in range(4):
    out = transform({"image": np.concatenate([primary, partner]), "label": labels},
                    np.random.default_rng(seed))
    kinds = [_kind(image, target[0]) for image, target in zip(out["image"], out["targets"])]
    # A MixUp weight that rounds to 1 is indistinguishable from its primary
    # image; such rows are rare (Beta(0.2, 0.2) piles up near 0 and 1) and
    # left out of the counts.
    assert kinds.count("ambiguous") <= 3
    assert kinds.count("mixup") <= batch_size // 2 and kinds.count("cutmix") <= batch_size // 2
    for device in range(devices):
      rows = kinds[device * per_device:(device + 1) * per_device]
      assert "mixup" in rows and "cutmix" in rows, (seed, device, rows)
      ascent = rows[:ascent_rows]
      if "ambiguous" not in ascent:
        assert set(ascent) == {"mixup", "cutmix"}, (seed, device, rows)


def test_interleaved_order_is_a_permutation_alternating_the_halves():
  assert augment.interleaved_halves(6).tolist() == [0, 3, 1, 4, 2, 5]
  assert augment.interleaved_halves(5).tolist() == [0, 3, 1, 4, 2]
  assert sorted(augment.interleaved_halves(101).tolist()) == list(range(101))
