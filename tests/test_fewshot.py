"""Few-shot linear probes: the closed-form ridge, the pool, and a pre-training
run that logs `fewshot/<name>_<k>shot` to TensorBoard and results.json."""
import json
import os

import numpy as np
import pytest
import simplejpeg

from data import fewshot as data_fewshot
from data import loader, synthetic, transforms
from data.errors import DataError
from nfnet.train import results
from pretrain import fewshot
from pretrain import main as pretrain_main
from pretrain.configs import synthetic as pretrain_synthetic

def _with_bias_standardised(x, mean, std):
  x = (x - mean) / std
  return np.concatenate([x, np.full((len(x), 1), fewshot.BIAS_CONSTANT)], axis=1)


@pytest.mark.parametrize("num_points", [40, 6])  # N >= D and N < D branches
def test_ridge_cache_gives_the_direct_ridge_solution(num_points):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(num_points, 12))
  y = rng.integers(0, 3, num_points)
  cache = fewshot.ridge_cache(x, y, 3)
  mean, std = x.mean(0, keepdims=True), x.std(0, keepdims=True) + 1e-5
  design = _with_bias_standardised(x, mean, std)
  targets = 2.0 * np.eye(3)[y] - 1.0
  for l2 in (0.01, 1.0, 100.0):
    direct = np.linalg.solve(design.T @ design + l2 * np.eye(13), design.T @ targets)
    np.testing.assert_allclose(fewshot.ridge_weights(cache, l2), direct,
                               rtol=1e-6, atol=1e-8)


def test_probe_separates_clusters_and_is_at_chance_on_noise():
  rng = np.random.default_rng(1)
  centres = rng.normal(0, 3, size=(5, 16))

  def sample(per_class):
    y = np.repeat(np.arange(5), per_class)
    return centres[y] + rng.normal(size=(len(y), 16)), y

  (train_x, train_y), (held_x, held_y), (test_x, test_y) = (
      sample(5), sample(3), sample(200))
  accuracy, l2 = fewshot.probe(train_x, train_y, held_x, held_y, test_x, test_y, 5)
  assert accuracy > 0.95 and l2 in fewshot.DEFAULT_L2_REGS
  # Features that carry no label information: about 1 in 5.
  noise = lambda n: rng.normal(size=(n, 16))
  accuracy, _ = fewshot.probe(noise(25), train_y, noise(15), held_y, noise(1000),
                              test_y, 5)
  assert 0.12 < accuracy < 0.28


def test_regularisation_is_chosen_on_the_held_out_part():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(20, 8))
  y = np.repeat(np.arange(2), 10)
  cache = fewshot.ridge_cache(x, y, 2)
  held_x, held_y = rng.normal(size=(30, 8)), rng.integers(0, 2, 30)
  regs = (1e-3, 1.0, 1e3, 1e6)
  scores = {l2: fewshot.ridge_accuracy(cache, held_x, held_y, l2) for l2 in regs}
  _, chosen = fewshot.probe(x, y, held_x, held_y, x, y, 2, regs)
  best = max(scores.values())
  assert scores[chosen] == best
  assert chosen == max(l2 for l2, s in scores.items() if s == best)


def test_pool_split_is_nested_and_refuses_small_classes():
  labels = np.array([0, 1, 2] * 4)
  shots, heldout = fewshot.split_pool(labels, 3, max_shots=3, heldout_per_class=1)
  assert shots.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
  assert heldout.tolist() == [9, 10, 11]
  with pytest.raises(ValueError, match="class 0 has 4 examples"):
    fewshot.split_pool(labels, 3, max_shots=4, heldout_per_class=1)


def test_choose_pool_draws_per_class_and_depends_only_on_the_seed():
  labels = np.array([0, 1, 2, 1, 0, 2, 0, 1, 2, 0])
  pool = data_fewshot.choose_pool(labels, 3, 3, seed=5)
  assert labels[pool].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  assert len(set(pool.tolist())) == 9
  np.testing.assert_array_equal(pool, data_fewshot.choose_pool(labels, 3, 3, seed=5))
  assert not np.array_equal(pool, data_fewshot.choose_pool(labels, 3, 3, seed=6))
  with pytest.raises(ValueError, match="class 1 has 3 examples"):
    data_fewshot.choose_pool(labels, 3, 4, seed=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synth"))
  synthetic.generate(out, seed=0, num_train=256, num_eval=16,
                     downstream_train_per_class=8, downstream_eval_per_class=12,
                     image_size=32, num_shards=2)
  return out


def test_pretraining_logs_fewshot_accuracy_above_chance(corpus, tmp_path):
  config = pretrain_synthetic.get_config(f"data_dir={corpus},steps=16,res=32")
  # The config's own demo model (1/4-width F0): at 1/8 width the 16-step
  # features carry too little to probe (measured 1.2-2x chance).
  config.fewshot.update(shots=(1, 5), heldout_per_class=3, batch_size=32)
  config.update(batch_size=16, log_every_steps=8, eval_every_steps=1000,
                checkpoint_every_steps=16, fewshot_every_steps=8)
  workdir = str(tmp_path / "pretrain")
  metrics = pretrain_main.train(config, workdir)

  names = ("fewshot/downstream_1shot", "fewshot/downstream_5shot")
  saved = json.loads((tmp_path / "pretrain" / "results.json").read_text())
  scalars = results.read_scalars(workdir)
  chance = 1 / 16
  for name in names:
    assert saved[name] == metrics[name]
    steps, values = scalars[name]
    assert list(steps) == [8, 16]  # every fewshot_every_steps and at the end
    assert values[-1] == pytest.approx(saved[name])
  # 192 test images of 16 classes: chance is 0.0625 with a standard error of
  # 0.0175, so 2x chance is 3.6 standard errors above it (measured: 0.172).
  assert saved["fewshot/downstream_5shot"] > 2 * chance
  assert saved["fewshot/downstream_5shot"] >= saved["fewshot/downstream_1shot"] - 0.05


def test_probe_images_get_the_runs_eval_crop(corpus):
  """The probes read their sets through the run's eval transform, so a run
  whose eval keeps the whole image (the small-image configs) probes whole
  images too."""
  config = pretrain_synthetic.get_config(f"data_dir={corpus},steps=16,res=32")
  config.fewshot.update(shots=(1,), heldout_per_class=1, batch_size=32)
  config.eval_crop_fraction = 1.0
  [probe_set] = data_fewshot.make_fewshot_sets(config, 0, 1)
  test_source = config.fewshot.datasets["downstream"]["test"]

  def first_batch(fraction):
    return next(iter(loader.make_eval_loader(
        test_source, global_batch_size=32, resolution=32,
        transform_config=transforms.TransformConfig(32, eval_crop_fraction=fraction))))

  probed = next(iter(probe_set.test))["image"]
  np.testing.assert_array_equal(probed, first_batch(1.0)["image"])
  assert not np.array_equal(probed, first_batch(None)["image"])


def _jpeg_folder(root, class_names):
  for name in class_names:
    os.makedirs(root / name)
    (root / name / "0.jpg").write_bytes(
        simplejpeg.encode_jpeg(np.zeros((8, 8, 3), np.uint8), colorspace="RGB"))
  return f"folder:{root}"


def test_a_test_split_naming_other_classes_is_refused(corpus, tmp_path):
  """As many classes but other names: the test labels would mean other
  classes, so the probe would score against permuted labels."""
  config = pretrain_synthetic.get_config(f"data_dir={corpus},steps=16,res=32")
  config.fewshot.datasets = {"d": {
      "train": _jpeg_folder(tmp_path / "train", ["cat", "dog"]),
      "test": _jpeg_folder(tmp_path / "test", ["dog", "zebra"])}}
  with pytest.raises(DataError, match=r"missing: \['cat'\]; not in the reference: \['zebra'\]"):
    data_fewshot.make_fewshot_sets(config, 0, 1)
