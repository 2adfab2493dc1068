"""The two programs end to end on a tiny synthetic corpus (in-process)."""
import json
import os
import shutil
import signal

import numpy as np
import pytest
import simplejpeg
from flax import traverse_util

from data import synthetic, tf_example
from finetune import main as finetune_main
from finetune.configs import synthetic as finetune_synthetic
from nfnet.errors import UserError
from nfnet.train import checkpoints, from_config, metrics, results, setup, trainer
from nfnet.weights import run_checkpoint
from nfnet.train import state as state_lib
from pretrain import main as pretrain_main
from pretrain.configs import synthetic as pretrain_synthetic

TINY_MODEL = dict(width=0.125, depths=(1, 1, 1, 1), group_size=16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synth"))
  synthetic.generate(out, seed=0, num_train=192, num_eval=40,
                     downstream_train_per_class=4, downstream_eval_per_class=2,
                     image_size=32, num_shards=2)
  return out


def _pretrain_config(corpus, steps=6, **overrides):
  config = pretrain_synthetic.get_config(
      f"data_dir={corpus},steps={steps},res=32,fewshot=False")
  config.model.update(**TINY_MODEL)
  config.update(batch_size=16, checkpoint_every_steps=3, keep_checkpoints=5,
                log_every_steps=3, eval_every_steps=1000, **overrides)
  return config


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory):
  """An unbroken 6-step pre-training run, checkpointed at steps 3 and 6."""
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  metrics = pretrain_main.train(_pretrain_config(corpus), workdir)
  return workdir, metrics


def _step_dir(workdir, step):
  return os.path.join(workdir, run_checkpoint.CHECKPOINT_DIRNAME, str(step))


def test_pretrain_writes_checkpoints_events_and_results(pretrained):
  workdir, metrics = pretrained
  steps = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  assert steps == ["3", "6"]
  assert {"config", "data", "state"} <= set(os.listdir(_step_dir(workdir, 6)))
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(os.path.join(workdir, "tensorboard")))
  saved = run_checkpoint.read_checkpoint_config(_step_dir(workdir, 6))
  assert saved["model"]["variant"] == "F0" and saved["model"]["num_classes"] == 1000
  assert saved["total_steps"] == 6
  assert 0 <= metrics["eval/top1"] <= 1 and metrics["eval/examples"] == 40
  with open(os.path.join(workdir, results.RESULTS_FILE)) as f:
    assert json.load(f)["step"] == 6


def test_resumed_run_matches_the_unbroken_run(pretrained, corpus, tmp_path):
  unbroken, _ = pretrained
  # What a run killed after its step-3 save leaves behind: checkpoints up to 3.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(_step_dir(unbroken, 3), _step_dir(resumed, 3))
  pretrain_main.train(_pretrain_config(corpus), resumed)
  a, _ = run_checkpoint.load_checkpoint_params(_step_dir(unbroken, 6))
  b, _ = run_checkpoint.load_checkpoint_params(_step_dir(resumed, 6))
  flat_a, flat_b = (traverse_util.flatten_dict(p, sep="/") for p in (a, b))
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)
  data_state = lambda w: open(os.path.join(
      _step_dir(w, 6), "data", "process_0-of-1.json")).read()
  assert data_state(unbroken) == data_state(resumed)  # same batches consumed
  # And the run really moved between steps 3 and 6.
  c, _ = run_checkpoint.load_checkpoint_params(_step_dir(unbroken, 3))
  assert not np.array_equal(c["classifier"]["kernel"], a["classifier"]["kernel"])


def test_a_run_stopped_after_its_last_checkpoint_finishes_on_rerun(
    pretrained, corpus, tmp_path):
  """Killed between the final checkpoint and results.json: the re-run
  evaluates the last checkpoint and writes the results the unbroken run did."""
  unbroken, unbroken_metrics = pretrained
  stopped = str(tmp_path / "stopped")
  shutil.copytree(_step_dir(unbroken, 6), _step_dir(stopped, 6))
  metrics = pretrain_main.train(_pretrain_config(corpus), stopped)
  assert metrics == pytest.approx(unbroken_metrics)
  assert results.read_results(stopped) == pytest.approx({"step": 6, **unbroken_metrics})
  steps, values = results.read_scalars(stopped)["eval/top1"]  # and TensorBoard
  assert list(steps) == [6] and values[-1] == pytest.approx(metrics["eval/top1"])


def test_finetune_restores_backbone_and_replaces_head(pretrained, corpus,
                                                     assert_backbone_loaded_and_head_fresh):
  workdir, _ = pretrained
  config = finetune_synthetic.get_config(f"data_dir={corpus},steps=2,res=32")
  config.model.update(**TINY_MODEL)
  config.init_from = workdir
  model = setup.build_model(config, num_classes=16)
  params = state_lib.initial_params(model, config)
  source, _ = run_checkpoint.load_checkpoint_params(workdir)
  fresh = state_lib.init_params(model, config.resolution, config.seed)
  assert_backbone_loaded_and_head_fresh(params, source, fresh)
  assert params["classifier"]["kernel"].shape == (int(1536 * 0.125) * 2, 16)


def test_init_ws_kernel_norm_recentres_the_loaded_kernels_only(pretrained, corpus):
  """With init_from, every loaded WS kernel is re-centred at the norm and
  every other leaf is the plain load; without it (the from-scratch control
  of the same config) the fresh parameters are untouched."""
  workdir, _ = pretrained
  config = finetune_synthetic.get_config(f"data_dir={corpus},steps=2,res=32")
  config.model.update(**TINY_MODEL)
  config.init_from = workdir
  model = setup.build_model(config, num_classes=16)
  plain = traverse_util.flatten_dict(state_lib.initial_params(model, config), sep="/")
  config.init_ws_kernel_norm = 1.5
  recentred = traverse_util.flatten_dict(state_lib.initial_params(model, config), sep="/")
  ws_kernels = [k for k in plain if k.endswith("/kernel") and k[:-len("kernel")] + "gain" in plain]
  assert "stem_conv0/kernel" in ws_kernels and len(ws_kernels) >= 10
  for key, value in recentred.items():
    if key not in ws_kernels:
      np.testing.assert_array_equal(value, plain[key], err_msg=key)
      continue
    units = np.asarray(value, np.float64).reshape(-1, value.shape[-1])
    np.testing.assert_allclose(units.mean(axis=0), 0.0, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(np.linalg.norm(units, axis=0), 1.5, rtol=1e-5, err_msg=key)
    loaded = np.asarray(plain[key], np.float64).reshape(units.shape)
    direction = loaded - loaded.mean(axis=0)  # the same standardised weight
    np.testing.assert_allclose(units, 1.5 * direction / np.linalg.norm(direction, axis=0),
                               atol=1e-6, err_msg=key)
  config.init_from = ""
  scratch, fresh = (traverse_util.flatten_dict(params, sep="/") for params in (
      state_lib.initial_params(model, config),
      state_lib.init_params(model, config.resolution, config.seed)))
  assert scratch.keys() == fresh.keys()
  for key, value in scratch.items():
    np.testing.assert_array_equal(value, fresh[key], err_msg=key)


def test_finetune_in_bfloat16_learns_with_sam_and_ema_and_evaluates_both(
    pretrained, corpus, tmp_path):
  """The default bfloat16 path, SAM and EMA on, evaluated on its own 64
  training images (an easy task: 16 classes, chance 1/16)."""
  workdir, _ = pretrained
  config = finetune_synthetic.get_config(f"data_dir={corpus},steps=40,res=32")
  config.model.update(dtype="bfloat16", **TINY_MODEL)
  config.data.eval = config.data.train
  config.update(init_from=workdir, batch_size=16, log_every_steps=20,
                eval_every_steps=1000, checkpoint_every_steps=40)
  metrics = finetune_main.train(config, str(tmp_path / "ft"))
  assert {"eval/top1", "eval_ema/top1", "eval/top5", "eval_ema/top5"} <= set(metrics)
  assert metrics["eval/examples"] == 64  # 16 classes x 4, each counted once
  assert metrics["eval/top1"] > 4 / 16, metrics
  # EMA weights (decay warmed up to ~0.8 by step 40) are other weights.
  assert metrics["eval_ema/top1"] != metrics["eval/top1"], metrics
  # A second call finds the finished run and does not train again.
  assert finetune_main.train(config, str(tmp_path / "ft"))["step"] == 40


def test_init_from_another_architecture_lists_every_difference(pretrained, corpus):
  workdir, _ = pretrained
  config = finetune_synthetic.get_config(f"data_dir={corpus},steps=2,res=32")
  config.model.update(width=0.25, depths=(1, 1, 2, 1), group_size=16)
  config.init_from = workdir
  model = setup.build_model(config, num_classes=16)
  with pytest.raises(checkpoints.CheckpointMismatchError) as error:
    state_lib.initial_params(model, config)
  assert "stage_widths: weights [32, 64, 192, 192], config [64, 128, 384, 384]" in str(error.value)
  assert "stage_depths: weights [1, 1, 1, 1], config [1, 1, 2, 1]" in str(error.value)


def test_workdir_of_another_model_is_refused_before_restoring(pretrained, corpus):
  workdir, _ = pretrained
  config = _pretrain_config(corpus, steps=9)
  config.model.depths = (1, 1, 2, 1)
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"stage_depths: weights \[1, 1, 1, 1\], config "
                           r"\[1, 1, 2, 1\]") as refused:
    pretrain_main.train(config, workdir)
  assert "another train state" not in str(refused.value)  # refused before orbax


def test_resuming_needs_the_same_head_train_state_and_a_long_enough_run(
    pretrained, corpus, tmp_path):
  """Each used to end in an orbax traceback, or (a shorter run) to return
  without results on every re-run."""
  unbroken, _ = pretrained
  workdir = str(tmp_path / "copy")
  shutil.copytree(_step_dir(unbroken, 3), _step_dir(workdir, 3))
  other_head = _pretrain_config(corpus)
  other_head.model.num_classes = 16
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match="1000-class model; this run has 16 classes"):
    pretrain_main.train(other_head, workdir)
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"(?s)another train state.*ema_decay: 0\.0 -> 0\.9"):
    pretrain_main.train(_pretrain_config(corpus, ema_decay=0.9), workdir)
  with pytest.raises(UserError, match="step 3, past this config's 2 steps"):
    pretrain_main.train(_pretrain_config(corpus, steps=2), workdir)


def test_a_failing_evaluation_loses_no_training(corpus, tmp_path):
  """The checkpoint of a step is saved before that step's evaluations."""
  def failing_probe(state):
    raise RuntimeError("the probe broke")
  program = trainer.Program(
      name="pre-training", periodic_evals=lambda run: [(1000, failing_probe)])
  config = _pretrain_config(corpus, steps=2)
  config.checkpoint_every_steps = 1000
  with pytest.raises(RuntimeError, match="the probe broke"):
    trainer.train(config, str(tmp_path), program)
  assert os.listdir(os.path.join(tmp_path, "checkpoints")) == ["2"]


def test_merge_reports_missing_unexpected_and_misshaped_together():
  init = {"a": {"kernel": np.zeros((2, 2))}, "b": {"kernel": np.zeros(3)},
          "classifier": {"kernel": np.zeros((4, 5)), "bias": np.zeros(5)}}
  loaded = {"a": {"kernel": np.zeros((2, 3))}, "c": {"kernel": np.zeros(1)},
            "classifier": {"kernel": np.zeros((4, 7)), "bias": np.zeros(7)}}
  with pytest.raises(checkpoints.CheckpointMismatchError) as error:
    checkpoints.merge_pretrained(init, loaded)
  message = str(error.value)
  assert "3 parameter(s)" in message
  assert "wrong shape: a/kernel" in message
  assert "missing from checkpoint: b/kernel" in message
  assert "unexpected in checkpoint: c/kernel" in message
  assert "classifier" not in message  # a class-count change is head surgery


def test_skipped_corrupt_training_records_are_counted_in_the_log(corpus,
                                                                 tmp_path):
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=import-outside-toplevel
  data = tmp_path / "data"
  shutil.copytree(os.path.join(corpus, "pretrain"), data / "pretrain")
  # One more shard: 8 records whose image bytes are not an image.
  writer = ArrayRecordWriter(str(data / "pretrain" / "train-broken.array_record"),
                             "group_size:1")
  for index in range(8):
    writer.write(tf_example.serialize_example({
        "image/encoded": b"not a jpeg", "image/class/label": [0],
        "image/id": f"broken-{index}"}))
  writer.close()
  config = _pretrain_config(str(data), steps=25)
  config.data.skip_corrupt = True
  workdir = str(tmp_path / "run")
  pretrain_main.train(config, workdir)
  # 25 steps of 16 pass exactly twice over the 200 records, 8 of them broken
  # (one after the other: each is counted once, not once per broken record
  # the walk to the next good one passes).
  steps, counts = results.read_scalars(workdir)["data/corrupt_skipped"]
  assert list(steps) == [3, 6, 9, 12, 15, 18, 21, 24, 25]
  assert counts[-1] == 16 and list(counts) == sorted(counts)


def test_reinit_head_replaces_a_head_of_the_same_shape_only_when_asked():
  init = {"a": {"kernel": np.zeros((2, 2))},
          "classifier": {"kernel": np.zeros((2, 3)), "bias": np.zeros(3)}}
  loaded = {"a": {"kernel": np.ones((2, 2))},
            "classifier": {"kernel": np.ones((2, 3)), "bias": np.ones(3)}}
  kept, notes = checkpoints.merge_pretrained(init, loaded)
  assert notes == [] and kept["classifier"]["kernel"].sum() == 6
  fresh, notes = checkpoints.merge_pretrained(init, loaded, reinit_head=True)
  assert notes == ["classifier re-initialised (asked)"]
  assert fresh["classifier"]["kernel"].sum() == 0 and fresh["classifier"]["bias"].sum() == 0
  assert fresh["a"]["kernel"].sum() == 4  # the body still comes from the checkpoint


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    pretrained, corpus, tmp_path):
  unbroken, _ = pretrained
  workdir = str(tmp_path / "nan")
  shutil.copytree(_step_dir(unbroken, 3), _step_dir(workdir, 3))
  config = _pretrain_config(corpus, lr=float("inf"))
  # Step 4 applies an infinite update; step 5's loss is the first NaN.
  with pytest.raises(metrics.NonFiniteLossError, match="nan at step 5"):
    pretrain_main.train(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3"]


def test_data_path_that_matches_nothing_is_a_clear_error(tmp_path):
  config = _pretrain_config(str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="No files match"):
    pretrain_main.train(config, str(tmp_path / "w"))


def test_a_gs_workdir_keeps_its_checkpoints_in_the_bucket(monkeypatch):
  """os.path.abspath would turn gs://bucket/run into ./gs:/bucket/run, and a
  preempted host would lose its checkpoints with the local disk."""
  opened = []
  monkeypatch.setattr(checkpoints.ocp, "CheckpointManager",
                      lambda directory, **kw: opened.append(directory))
  checkpoints.make_manager("gs://bucket/run", save_every_steps=10)
  checkpoints.make_manager("relative/run", save_every_steps=10)
  assert opened == ["gs://bucket/run/checkpoints",
                    os.path.join(os.getcwd(), "relative/run", "checkpoints")]


def test_an_eval_folder_missing_a_class_is_refused(tmp_path):
  """Folder sources number classes by their own sorted names: without the
  check, 'cat' in val/ would be label 1, which is 'bird' in train/."""
  jpeg = simplejpeg.encode_jpeg(np.zeros((8, 8, 3), np.uint8), colorspace="RGB")
  for split, classes in (("train", ("ant", "bird", "cat")), ("val", ("ant", "cat"))):
    for name in classes:
      os.makedirs(tmp_path / split / name)
      (tmp_path / split / name / "0.jpg").write_bytes(jpeg)
  config = pretrain_synthetic.get_config("res=32")
  config.data.train = f"folder:{tmp_path / 'train'}"
  config.data.eval = f"folder:{tmp_path / 'val'}"
  train_names = ["ant", "bird", "cat"]
  with pytest.raises(UserError, match=r"missing: \['bird'\]"):
    from_config.make_eval_data(config, 0, 1, train_names)
  os.makedirs(tmp_path / "val" / "bird")  # an empty folder keeps the numbering
  assert from_config.make_eval_data(config, 0, 1, train_names).num_steps == 1


def test_a_label_key_for_the_shards_does_not_stop_a_folder_eval(tmp_path):
  # data.label_key names the training shards' labels; an eval folder's
  # labels are its subfolders, and it used to refuse the option (TypeError).
  jpeg = simplejpeg.encode_jpeg(np.zeros((8, 8, 3), np.uint8), colorspace="RGB")
  for name in ("ant", "bird"):
    os.makedirs(tmp_path / "val" / name)
    (tmp_path / "val" / name / "0.jpg").write_bytes(jpeg)
  config = pretrain_synthetic.get_config("res=32")
  config.data.label_key = "my/label"
  config.data.eval = f"folder:{tmp_path / 'val'}"
  assert from_config.make_eval_data(config, 0, 1, ["ant", "bird"]).num_steps == 1


def test_sigterm_saves_the_step_and_stops_and_a_rerun_finishes(corpus, tmp_path):
  """SIGTERM during step 4 of 6 (sent by an evaluator): the guard sees it at
  the next step, 5, which is saved out of the every-3-steps cadence; the run
  stops, gives the signal back, and a re-run resumes there and finishes."""
  def sigterm_at_step_4(run):
    calls = []

    def send(state):
      calls.append(int(state.step))
      if calls[-1] == 4:
        os.kill(os.getpid(), signal.SIGTERM)
      return {}
    return [(1, send)]

  program = trainer.Program(name="pre-training", periodic_evals=sigterm_at_step_4)
  workdir = str(tmp_path / "run")
  before = signal.getsignal(signal.SIGTERM)
  assert trainer.train(_pretrain_config(corpus), workdir, program) == {}
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "5"]
  assert not os.path.exists(os.path.join(workdir, results.RESULTS_FILE))
  assert signal.getsignal(signal.SIGTERM) == before
  metrics = pretrain_main.train(_pretrain_config(corpus), workdir)
  assert results.read_results(workdir)["step"] == 6 and "eval/top1" in metrics
