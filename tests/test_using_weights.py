"""Using trained weights: nfnet.load, finetune.evaluate and finetune.predict,
on real JPEG class folders written here and a 4-step fine-tune of a tiny NFNet."""
import json
import os
import shutil

import dill
import jax
import numpy as np
import pytest
import simplejpeg
from flax import traverse_util

import nfnet
from data import synthetic, tf_example, tfrecord, transforms
from finetune import evaluate as evaluate_cli
from finetune import main as finetune_main
from finetune import predict as predict_cli
from finetune.configs import dataset as dataset_config
from nfnet import convert
from nfnet.info import abstract_params

TINY_MODEL = dict(variant="F0", width=0.125, depths=(1, 1, 1, 1), group_size=16)
CLASSES = ("disc_solid", "disc_stripes", "square_solid", "square_stripes")


def _write_folder(root, per_class, seed):
  """root/<class>/<i>.jpg: the downstream corpus's drawings as real JPEGs."""
  config = synthetic.downstream_config(image_size=40)
  # Classes 0, 1, 4, 5 of the downstream set: disc/square x solid/hstripes.
  class_ids = (0, 1, 4, 5)
  for name, class_id in zip(CLASSES, class_ids):
    os.makedirs(root / name)
    for i in range(per_class):
      rng = np.random.default_rng([seed, class_id, i])
      image, _ = synthetic.draw_example(rng, config, first_class=class_id)
      (root / name / f"{i:03d}.jpg").write_bytes(
          simplejpeg.encode_jpeg(image, quality=90, colorspace="RGB"))
  return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("flowers")
  return (_write_folder(root / "train", 8, seed=0),
          _write_folder(root / "val", 3, seed=1))


@pytest.fixture(scope="module")
def finetuned(folders, tmp_path_factory):
  """A finished 4-step fine-tune (from scratch) on the JPEG folders."""
  train, val = folders
  config = dataset_config.get_config("res=32,steps=4,batch=8")
  config.model.update(**TINY_MODEL, dtype="float32")
  config.data.update(train=f"folder:{train}", eval=f"folder:{val}", num_workers=0)
  # SAM off: the step compiles twice as fast and nothing here depends on it.
  config.update(log_every_steps=2, eval_every_steps=1000, checkpoint_every_steps=4,
                sam_rho=0.0)
  workdir = str(tmp_path_factory.mktemp("ft"))
  metrics = finetune_main.train(config, workdir)
  return workdir, metrics


def test_load_returns_model_params_and_the_folder_class_names(finetuned):
  workdir, _ = finetuned
  model, params, info = nfnet.load(workdir)
  assert info["kind"] == "checkpoint" and info["step"] == 4
  assert info["label_names"] == list(CLASSES)
  assert info["resolution"] == info["eval_resolution"] == 32
  assert model.num_classes == 4 and params["classifier"]["kernel"].shape[-1] == 4
  _, ema_params, ema_info = nfnet.load(workdir, ema=True)
  assert ema_info["ema"]
  # After 4 steps the EMA (decay warm-up (1+t)/(10+t)) differs from the raw weights.
  assert not np.allclose(ema_params["classifier"]["kernel"],
                         params["classifier"]["kernel"])
  images = nfnet.normalize_images(np.zeros((2, 32, 32, 3), np.uint8))
  logits, features = model.apply({"params": params}, images, return_features=True)
  assert logits.shape == (2, 4) and features.shape == (2, 2 * int(1536 * 0.125))


def test_load_reads_a_step_folder_copied_under_another_name(finetuned, tmp_path):
  workdir, _ = finetuned
  shutil.copytree(os.path.join(workdir, "checkpoints", "4"), tmp_path / "best")
  _, params, info = nfnet.load(tmp_path / "best")
  assert info["step"] is None and info["label_names"] == list(CLASSES)
  np.testing.assert_array_equal(params["classifier"]["kernel"],
                                nfnet.load(workdir)[1]["classifier"]["kernel"])


def test_evaluate_at_two_resolutions_counts_every_example_once(finetuned, folders,
                                                              capsys):
  workdir, metrics = finetuned
  _, val = folders
  assert evaluate_cli.main(["--weights", workdir, "--data", f"folder:{val}",
                            "--resolution", "32,48", "--json",
                            "--batch-size", "8"]) == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [r["resolution"] for r in lines] == [32, 48]
  assert all(r["examples"] == 12 for r in lines)  # 4 classes x 3, batch 8 padded
  # At the training resolution the command reproduces the run's own final eval.
  assert lines[0]["top1"] == pytest.approx(metrics["eval/top1"])
  assert lines[0]["top4"] == 1.0  # 4 classes: top-k is capped at top-4, always right
  assert not any(key.startswith("flip_") for key in lines[0])  # not asked for

  # And top-1 is what the model really computes on those images.
  model, params, _ = nfnet.load(workdir)
  predictions, _ = predict_cli.predict(workdir, [str(val)], resolution=48, top_k=1)
  correct = [p.top_k[0]["name"] == os.path.basename(os.path.dirname(p.path))
             for p in predictions]
  assert lines[1]["top1"] == pytest.approx(np.mean(correct))


def test_evaluate_refuses_a_set_with_other_classes(finetuned, tmp_path, capsys):
  workdir, _ = finetuned
  os.makedirs(tmp_path / "only" / "a")
  (tmp_path / "only" / "a" / "x.jpg").write_bytes(
      simplejpeg.encode_jpeg(np.zeros((8, 8, 3), np.uint8), colorspace="RGB"))
  assert evaluate_cli.main(["--weights", workdir, "--data",
                            f"folder:{tmp_path / 'only'}", "--batch-size", "8"]) == 1
  assert "has 1 classes but the weights' head has 4" in capsys.readouterr().err


def test_evaluate_refuses_a_set_naming_other_classes(finetuned, folders, tmp_path,
                                                     capsys):
  """As many classes as the head, but one named otherwise: sorted folder
  names would shift every label, so it is refused rather than scored."""
  workdir, _ = finetuned
  _, val = folders
  shutil.copytree(val, tmp_path / "val")
  os.rename(tmp_path / "val" / CLASSES[0], tmp_path / "val" / "z_other")
  assert evaluate_cli.main(["--weights", workdir, "--data",
                            f"folder:{tmp_path / 'val'}", "--batch-size", "4"]) == 1
  err = capsys.readouterr().err
  assert "does not name the weights' classes" in err
  assert f"missing: ['{CLASSES[0]}']; not in the reference: ['z_other']" in err
  # Told that label i is class i all the same, it scores the set.
  assert evaluate_cli.main(["--weights", workdir, "--data",
                            f"folder:{tmp_path / 'val'}", "--batch-size", "4",
                            "--ignore-class-names"]) == 0


def test_evaluate_skips_corrupt_images_only_when_asked(finetuned, folders, tmp_path,
                                                       capsys):
  workdir, _ = finetuned
  _, val = folders
  shutil.copytree(val, tmp_path / "val")
  (tmp_path / "val" / CLASSES[2] / "broken.jpg").write_bytes(b"not a jpeg")
  data = f"folder:{tmp_path / 'val'}"
  args = ["--weights", workdir, "--data", data, "--batch-size", "4", "--json"]
  assert evaluate_cli.main(args) == 1  # the run's data.skip_corrupt: False
  assert "broken.jpg" in capsys.readouterr().err
  assert evaluate_cli.main(args + ["--skip-corrupt"]) == 0
  result = json.loads(capsys.readouterr().out)
  assert (result["examples"], result["corrupt_skipped"]) == (12, 1)
  assert evaluate_cli.main(args[:-1] + ["--skip-corrupt"]) == 0
  assert "(12 examples, 1 corrupt records skipped, " in capsys.readouterr().out


def test_evaluate_reads_raw_shards_as_the_run_s_training_source_was(finetuned,
                                                                    tmp_path):
  """A run records whether its training source was multi-label; raw shards
  without dataset_info.json are read that way unless told otherwise."""
  model, _, info = nfnet.load(finetuned[0])
  assert info["multi_label"] is False
  shard = str(tmp_path / "eval-00000.tfrecord")
  with tfrecord.TFRecordWriter(shard) as writer:
    writer.write(tf_example.serialize_example(
        {"image/encoded": simplejpeg.encode_jpeg(np.zeros((8, 8, 3), np.uint8),
                                                 colorspace="RGB"),
         "image/class/label": [0, 2]}))
  for recorded, asked, expected in ((True, None, True), (False, None, False),
                                    (True, False, False), (None, True, True)):
    source = evaluate_cli.open_eval_source(
        f"tfrecord:{shard}", model, {**info, "multi_label": recorded}, None, asked)
    assert source.multi_label is expected


def test_predict_folder_names_and_features(finetuned, folders, tmp_path, capsys):
  workdir, _ = finetuned
  _, val = folders
  broken = tmp_path / "broken.jpg"
  broken.write_bytes(b"not a jpeg at all")
  features_file = tmp_path / "feats.npy"
  code = predict_cli.main(["--weights", workdir, "--top-k", "2", "--json",
                           "--batch-size", "5", "--features", str(features_file),
                           str(val), str(broken)])
  captured = capsys.readouterr()
  assert code == 1  # one file skipped
  assert f"cannot read {broken}" in captured.err
  lines = [json.loads(line) for line in captured.out.splitlines()]
  assert len(lines) == 12
  assert lines[0]["path"] == str(val / CLASSES[0] / "000.jpg")
  for line in lines:
    top = line["top_k"]
    assert len(top) == 2 and top[0]["probability"] >= top[1]["probability"]
    assert top[0]["name"] == CLASSES[top[0]["index"]]

  features = np.load(features_file)
  paths = (tmp_path / "feats.paths.txt").read_text().splitlines()
  assert paths == [line["path"] for line in lines]
  assert features.shape == (12, 2 * int(1536 * 0.125)) and features.dtype == np.float32
  # Row i is the pooled pre-logit feature of image i: the head applied to it
  # gives that image's probabilities.
  model, params, _ = nfnet.load(workdir)
  logits = features @ params["classifier"]["kernel"] + params["classifier"]["bias"]
  probabilities = np.asarray(jax.nn.softmax(logits))
  for row, line in enumerate(lines):
    best = line["top_k"][0]
    assert probabilities[row, best["index"]] == pytest.approx(best["probability"],
                                                              rel=1e-4, abs=1e-6)


def test_predict_applies_the_eval_crop_fraction(finetuned, folders):
  """The run's fraction by default (the default rule: 87.5% at 32 px), or the
  one asked for: the probabilities are those of that crop of the image."""
  workdir, _ = finetuned
  _, val = folders
  image = val / CLASSES[1] / "000.jpg"
  model, params, _ = nfnet.load(workdir)

  def probabilities_of(fraction):
    config = transforms.TransformConfig(32, eval_crop_fraction=fraction)
    pixels = transforms.eval_image(image.read_bytes(), config)[None]
    return np.asarray(jax.nn.softmax(model.apply(
        {"params": params}, nfnet.normalize_images(pixels))))[0]

  for fraction, expected in ((None, probabilities_of(0.875)),
                             (1.0, probabilities_of(1.0))):
    [prediction], _ = predict_cli.predict(workdir, [str(image)], top_k=4,
                                          eval_crop_fraction=fraction)
    got = {entry["index"]: entry["probability"] for entry in prediction.top_k}
    np.testing.assert_allclose([got[i] for i in range(4)], expected,
                               rtol=1e-4, atol=1e-6)
  assert not np.allclose(probabilities_of(0.875), probabilities_of(1.0),
                         rtol=1e-3, atol=1e-5)


def test_predict_and_evaluate_average_an_image_with_its_mirror(finetuned, folders):
  """--flip-average: each probability is the mean of the image's and its
  left-right mirror's; evaluate reports flip_top1 beside the plain top-1."""
  workdir, _ = finetuned
  _, val = folders
  image = val / CLASSES[1] / "000.jpg"
  model, params, _ = nfnet.load(workdir)
  config = transforms.TransformConfig(32, eval_crop_fraction=1.0)
  pixels = transforms.eval_image(image.read_bytes(), config)[None]
  both = np.concatenate([pixels, pixels[:, :, ::-1]])  # one forward pass
  plain, mirrored = np.asarray(jax.nn.softmax(model.apply(
      {"params": params}, nfnet.normalize_images(both))))
  expected = (plain + mirrored) / 2
  assert not np.allclose(expected, plain, rtol=1e-3, atol=1e-5)
  [prediction], _ = predict_cli.predict(workdir, [str(image)], top_k=4,
                                        eval_crop_fraction=1.0, flip_average=True)
  got = {entry["index"]: entry["probability"] for entry in prediction.top_k}
  np.testing.assert_allclose([got[i] for i in range(4)], expected,
                             rtol=1e-4, atol=1e-6)

  [flipped] = evaluate_cli.evaluate_weights(workdir, f"folder:{val}", None,
                                            batch_size=4, flip_average=True)
  assert 0 <= flipped["flip_top1"] <= 1 and "flip_top4" in flipped
  # The plain score stays beside it: the run's own final eval.
  assert flipped["top1"] == pytest.approx(finetuned[1]["eval/top1"])
  assert "flip-averaged top-1" in evaluate_cli.format_result(flipped)


def test_predict_features_keep_their_width_when_no_image_is_read(finetuned, tmp_path):
  workdir, _ = finetuned
  broken = tmp_path / "broken.jpg"
  broken.write_bytes(b"not a jpeg")
  predictions, skipped = predict_cli.predict(
      workdir, [str(broken)], features_file=str(tmp_path / "f.npy"))
  assert not predictions and len(skipped) == 1
  assert np.load(tmp_path / "f.npy").shape == (0, 2 * int(1536 * 0.125))


def _deepmind_file(path, num_classes=1000):
  """A DeepMind-format pickle of a tiny F0 with random weights."""
  model = nfnet.NFNet(**TINY_MODEL, num_classes=num_classes)
  rng = np.random.default_rng(0)
  haiku = {}
  for key, shape in traverse_util.flatten_dict(
      abstract_params(model, resolution=32), sep="/").items():
    module, leaf = convert.haiku_name(key).split(":")
    haiku.setdefault(module, {})[leaf] = rng.normal(0, 0.2, shape.shape).astype(np.float32)
  with open(path, "wb") as f:
    dill.dump(haiku, f)
  return path


def test_predict_with_deepmind_weights_prints_names_only_when_given(
    tmp_path, folders, capsys):
  weights = _deepmind_file(tmp_path / "F0_haiku.npz")
  image = folders[1] / CLASSES[2] / "001.jpg"
  assert predict_cli.main(["--weights", str(weights), "--resolution", "32",
                           "--top-k", "3", str(image)]) == 0
  fields = capsys.readouterr().out.strip().split("\t")
  assert fields[0] == str(image) and len(fields) == 4
  indices = []
  for entry in fields[1:]:
    index, name, probability = entry.split(":")
    assert name == "" and 0 < float(probability) < 1
    indices.append(int(index))

  names = tmp_path / "imagenet_names.txt"
  names.write_text("".join(f"class number {i}\n" for i in range(1000)))
  assert predict_cli.main(["--weights", str(weights), "--resolution", "32",
                           "--top-k", "3", "--labels", str(names), str(image)]) == 0
  entries = capsys.readouterr().out.strip().split("\t")[1:]
  assert [e.split(":")[1] for e in entries] == [f"class number {i}" for i in indices]

  short = tmp_path / "short.txt"
  short.write_text("a\nb\n")
  assert predict_cli.main(["--weights", str(weights), "--resolution", "32",
                           "--labels", str(short), str(image)]) == 1
  assert "2 class names but the model's head has 1000" in capsys.readouterr().err


def test_load_reads_every_kind_init_from_accepts(tmp_path):
  weights = _deepmind_file(tmp_path / "F0_haiku.npz", num_classes=10)
  model, params, info = nfnet.load(weights)
  assert info["kind"] == "deepmind" and info["label_names"] is None
  assert model.num_classes == 10
  converted = tmp_path / "converted"
  convert.save_converted(converted, model, params)
  model2, params2, info2 = nfnet.load(converted)
  assert info2["kind"] == "converted"
  flat, flat2 = (traverse_util.flatten_dict(p, sep="/") for p in (params, params2))
  assert flat.keys() == flat2.keys()
  for key in flat:
    np.testing.assert_array_equal(flat[key], flat2[key], err_msg=key)
  with pytest.raises(ValueError, match="only our checkpoints hold EMA"):
    nfnet.load(weights, ema=True)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    nfnet.load(tmp_path / "nothing")


def test_released_full_size_variant_reports_its_test_resolution(tmp_path):
  # Only the shapes matter for the info: a full-size F1 file is too big to
  # write here, so check the helper on the model the loader would build.
  from nfnet import loading
  info = loading._imported_info("deepmind", "F1_haiku.npz", nfnet.NFNet(variant="F1"))
  assert (info["resolution"], info["eval_resolution"]) == (224, 320)
  tiny = loading._imported_info("deepmind", "x", nfnet.NFNet(**TINY_MODEL))
  assert tiny["eval_resolution"] is None
