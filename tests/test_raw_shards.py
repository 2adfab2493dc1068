"""Raw TFRecord shards from TensorFlow's own writer, with no dataset_info.json, pre-train
once the config gives the class count (and, for multi-label data, says so)."""
import os

import numpy as np
import pytest
import tensorflow as tf

import nfnet
from nfnet.train import from_config
from finetune import evaluate as evaluate_cli
from finetune import main as finetune_main
from finetune.configs import small as finetune_small
from pretrain import main as pretrain_main
from pretrain.configs import small as pretrain_small
from pretrain.configs import synthetic as pretrain_synthetic

# Whole-program / multi-device runs: scheduled first (tests/conftest.py).
pytestmark = pytest.mark.slow

NUM_CLASSES = 5


def _example(rng: np.random.Generator, labels: list[int],
             label_key: str = "image/class/label") -> bytes:
  coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
  image = tf.image.resize(coarse, (40, 40), method="bicubic")
  jpeg = tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)).numpy()
  feature = {
      "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
      label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=labels)),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_shards(directory, name: str, count: int, multi_label: bool, seed: int,
                  label_key: str = "image/class/label") -> str:
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  for shard in range(2):
    path = os.path.join(directory, f"{name}-{shard:05d}-of-00002.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
      for _ in range(count // 2):
        n = int(rng.integers(1, 4)) if multi_label else 1
        labels = sorted(rng.choice(NUM_CLASSES, size=n, replace=False).tolist())
        writer.write(_example(rng, labels, label_key))
  assert not os.path.exists(os.path.join(directory, "dataset_info.json"))
  return f"tfrecord:{directory}/{name}-*"


def _config(train, evaluation, **overrides):
  config = pretrain_synthetic.get_config("steps=3,res=32")
  config.model.update(width=0.125, depths=(1, 1, 1, 1), group_size=16)
  config.data.train, config.data.eval = train, evaluation
  config.update(batch_size=8, log_every_steps=1, eval_every_steps=1000,
                checkpoint_every_steps=1000, **overrides)
  return config


@pytest.mark.parametrize("multi_label", [False, True])
def test_raw_tfrecord_shards_pretrain_with_config_label_space(tmp_path, multi_label):
  data_dir = str(tmp_path / "shards")
  # The multi-label shards keep their labels under a key of their own.
  label_key = "labels" if multi_label else "image/class/label"
  train = _write_shards(data_dir, "train", 24, multi_label, seed=0, label_key=label_key)
  evaluation = _write_shards(data_dir, "eval", 10, multi_label, seed=1, label_key=label_key)

  config = _config(train, evaluation)
  config.data.label_key = label_key
  with pytest.raises(ValueError, match="--config.model.num_classes=N"):
    from_config.open_train_source(config)

  config.model.num_classes = NUM_CLASSES
  if multi_label:
    # Several labels in a record the config calls single-label: a clear error.
    with pytest.raises(Exception, match="multi_label"):
      next(from_config.make_train_data(config, 0, 1).iterator)
    config.data.multi_label = True
  train_data = from_config.make_train_data(config, 0, 1)
  assert (train_data.num_classes, train_data.multi_label) == (NUM_CLASSES, multi_label)
  batch = next(train_data.iterator)
  if multi_label:
    assert batch["targets"].shape == (8, NUM_CLASSES) and batch["targets"].sum(1).max() > 1
  else:
    assert batch["label"].shape == (8,) and batch["label"].max() < NUM_CLASSES

  metrics = pretrain_main.train(config, str(tmp_path / "workdir"))
  assert metrics["eval/examples"] == 10
  assert np.isfinite(metrics["eval/top1"])

  # finetune.evaluate reads the same shards in the weights' label space (the
  # head's class count, the run's label key and multi_label) and repeats the
  # run's eval.
  [result] = evaluate_cli.evaluate_weights(str(tmp_path / "workdir"), evaluation,
                                           None, batch_size=8)
  assert (result["examples"], result["multi_label"]) == (10, multi_label)
  # The checkpoint records the training source's label kind for nfnet.load.
  assert nfnet.load(str(tmp_path / "workdir"))[2]["multi_label"] is multi_label
  assert result["top1"] == pytest.approx(metrics["eval/top1"])


def test_small_image_configs_chain_on_raw_shards(tmp_path):
  """pretrain/configs/small.py -> finetune/configs/small.py, as a laptop user
  runs them on raw shards; the fine-tune mixes its batches unless mix=0."""
  data_dir = str(tmp_path / "shards")
  train = _write_shards(data_dir, "train", 24, False, seed=0)
  evaluation = _write_shards(data_dir, "eval", 10, False, seed=1)
  pretrain_config = pretrain_small.get_config(f"classes={NUM_CLASSES},steps=2,batch=8")
  pretrain_config.data.train, pretrain_config.data.eval = train, evaluation
  pretrain_dir = str(tmp_path / "pretrain")
  assert np.isfinite(pretrain_main.train(pretrain_config, pretrain_dir)["eval/top1"])

  config = finetune_small.get_config(f"classes={NUM_CLASSES},steps=2,batch=8")
  config.data.train, config.data.eval = train, evaluation
  config.init_from = pretrain_dir
  targets = next(from_config.make_train_data(config, 0, 1).iterator)["targets"]
  assert targets.shape == (8, NUM_CLASSES)
  assert np.any((targets > 0) & (targets < 1))  # mixed, not one-hot
  metrics = finetune_main.train(config, str(tmp_path / "finetune"))
  assert metrics["eval/examples"] == metrics["eval_ema/examples"] == 10
  assert 0 <= metrics["eval/flip_top1"] <= 1 and "eval_ema/flip_top1" in metrics
  [result] = evaluate_cli.evaluate_weights(str(tmp_path / "finetune"), evaluation,
                                           None, batch_size=8, flip_average=True)
  assert result["flip_top1"] == pytest.approx(metrics["eval/flip_top1"])

  # finetune.evaluate applies the run's own eval crop (the whole image here,
  # not the default 87.5%) unless told otherwise, so it repeats the run's eval.
  for ema, key in ((False, "eval/top1"), (True, "eval_ema/top1")):
    [result] = evaluate_cli.evaluate_weights(str(tmp_path / "finetune"), evaluation,
                                             None, ema=ema, batch_size=8)
    assert result["crop_fraction"] == 1.0 and result["examples"] == 10
    assert result["top1"] == pytest.approx(metrics[key])
  [result] = evaluate_cli.evaluate_weights(str(tmp_path / "finetune"), evaluation,
                                           None, eval_crop_fraction=0.875,
                                           batch_size=8)
  # 32 px of the whole image resized to round(32 / 0.875) = 37.
  assert result["crop_fraction"] == round(32 / 37, 4)
  assert not finetune_small.get_config("mix=0").augment.mixup_cutmix


def test_small_image_configs_scale_randaugment_shifts_to_the_image():
  # Turned on for 32 px photos, RandAugment must not shift them by the
  # reference's 100 px; the ImageNet configs keep the reference's pixels.
  from pretrain.configs import imagenet as pretrain_imagenet
  for config in (pretrain_small.get_config("classes=6"),
                 finetune_small.get_config("classes=4")):
    config.augment.randaugment_layers = 2
    assert from_config.augment_config(config).randaugment_reference_side == 224
  imagenet = from_config.augment_config(pretrain_imagenet.get_config())
  assert imagenet.randaugment_layers and imagenet.randaugment_reference_side is None
