"""The batch augmentation inside the real grain training loader: shapes, resumption."""
import pickle

import numpy as np
import pytest

from data import augment, loader, synthetic

RESOLUTION = 32
BATCH = 8


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
  """Tiny real ArrayRecord corpora: multi-label pre-training and 16-class downstream."""
  out = str(tmp_path_factory.mktemp("synthetic"))
  return synthetic.generate(out, num_train=48, num_eval=8, downstream_train_per_class=3,
                            downstream_eval_per_class=1, image_size=48, num_shards=2)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _loader(spec, transform, num_workers=0):
  return loader.make_train_loader(spec, global_batch_size=BATCH, resolution=RESOLUTION, seed=3,
                                  batch_transform=transform, num_workers=num_workers)


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert sorted(a) == sorted(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_full_recipe_through_the_loader_yields_soft_targets(corpora):
  transform = augment.make_batch_augment(augment.imagenet_recipe("F0"), num_classes=16)
  batch = next(_loader(corpora["downstream/train"], transform))
  assert batch["image"].shape == (BATCH, RESOLUTION, RESOLUTION, 3)
  assert batch["image"].dtype == np.uint8
  assert batch["targets"].shape == (BATCH, 16) and batch["targets"].dtype == np.float32
  assert "label" not in batch
  np.testing.assert_allclose(batch["targets"].sum(1), 1.0, rtol=1e-5)
  assert batch["targets"].min() == pytest.approx(0.1 / 16)  # smoothed after mixing
  # Most outputs mix two classes (a 16-class set rarely pairs a class with itself).
  assert ((batch["targets"] > 0.1 / 16 + 1e-6).sum(1) == 2).sum() >= BATCH // 2


def test_multi_label_source_mixes_multi_hot_targets(corpora):
  transform = augment.make_batch_augment(
      augment.AugmentConfig(mixup_cutmix=True), num_classes=1000)
  batch = next(_loader(corpora["pretrain/train"], transform))
  assert batch["targets"].shape == (BATCH, 1000)
  # Multi-hot rows of 2-4 ones mix into rows summing to between 2 and 4.
  sums = batch["targets"].sum(1)
  assert (sums >= 2 - 1e-5).all() and (sums <= 4 + 1e-5).all()


def test_resumed_stream_equals_the_unbroken_one(corpora):
  transform = augment.make_batch_augment(augment.imagenet_recipe("F1"), num_classes=16)
  spec = corpora["downstream/train"]
  unbroken = _take(_loader(spec, transform), 5)

  first = _loader(spec, transform)
  _take(first, 2)
  state = first.get_state()
  resumed = _loader(spec, transform)
  resumed.set_state(state)
  _assert_same(_take(resumed, 3), unbroken[2:])
  assert not np.array_equal(unbroken[0]["image"], unbroken[1]["image"])


def test_worker_processes_give_the_same_augmented_batches(corpora):
  transform = augment.make_batch_augment(augment.imagenet_recipe("F0"), num_classes=16)
  pickle.loads(pickle.dumps(transform))  # it must travel to grain's worker processes
  spec = corpora["downstream/train"]
  in_process = _take(_loader(spec, transform), 2)
  with_workers = _loader(spec, transform, num_workers=1)
  try:
    _assert_same(_take(with_workers, 2), in_process)
  finally:
    with_workers.close()
