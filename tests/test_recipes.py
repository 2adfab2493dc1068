"""The recipes: --dry-run plans against the paper's values, inputs,
multi-host flags, skipping finished stages and the results table.

Every recipe runs as a real `bash` subprocess of its script (which runs
`python -m recipes run NAME`). Dry runs resolve the real configs in-process
(`recipes/plan.py`: no data, no arrays); the non-dry tests stop before any
program trains (a missing input, a finished stage), so the whole module takes
seconds.
"""
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

from nfnet.train import results
from recipes import plan

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"

# Environment variables the recipes read as inputs: a test must not inherit them.
RECIPE_ENV = ("PRETRAIN_DATA", "PRETRAIN_EVAL", "IMAGENET_DIR", "IMAGENET_TRAIN",
              "IMAGENET_EVAL", "TFDS_DATA_DIR", "WORKDIR", "WEIGHTS",
              "TRAIN_DATA", "EVAL_DATA", "VARIANT", "EPOCHS",
              "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
              "JAX_PLATFORMS")

JFT_IMAGES = 300_000_000          # docs/reference.md section 4: JFT-300M
IMAGENET21K_IMAGES = 13_151_276   # winter21 release
FINETUNE_RESOLUTIONS = (224, 320, 384)


def run_recipe(name, *args, cwd=None, env=None):
  clean = {k: v for k, v in os.environ.items() if k not in RECIPE_ENV}
  clean.update(env or {})
  return subprocess.run(["bash", str(RECIPES / name), *map(str, args)],
                        capture_output=True, text=True, cwd=cwd, env=clean,
                        timeout=120)


def dry_run(name, *args, **kwargs):
  """The recipe's plan: {stage: plan}; stdout must be JSON lines only."""
  result = run_recipe(name, "--dry-run", *args, **kwargs)
  assert result.returncode == 0, result.stderr
  plans = [json.loads(line) for line in result.stdout.splitlines()]
  return {p["stage"]: p for p in plans}


def steps(epochs, images, batch):
  return math.floor(epochs * images / batch)


# ----------------------------------------------------------------------------
# jft_f4plus.sh: the paper's F4+ recipe (docs/reference.md section 4)
# ----------------------------------------------------------------------------

def test_jft_f4plus_dry_run_is_the_papers_recipe(tmp_path):
  workdir = tmp_path / "f4plus"
  plans = dry_run("jft_f4plus.sh", "--workdir", workdir)
  assert list(plans) == ["pretrain", "finetune_224", "finetune_320",
                         "finetune_384"]

  pretrain = plans["pretrain"]
  assert pretrain["program"] == "pretrain"
  assert pretrain["variant"] == "F4+"
  assert pretrain["resolution"] == 224
  assert pretrain["batch_size"] == 4096
  assert pretrain["learning_rate"] == pytest.approx(1.6)
  assert pretrain["weight_decay"] == pytest.approx(1e-6)
  assert pretrain["ema_decay"] == 0
  assert pretrain["sam_rho"] == 0
  assert pretrain["train_examples"] == JFT_IMAGES
  assert pretrain["epochs"] == pytest.approx(20.0, abs=1e-4)
  assert pretrain["total_steps"] == steps(20, JFT_IMAGES, 4096) == 1_464_843
  # The ImageNet schedule's warm-up: 5 epochs.
  assert pretrain["warmup_steps"] == steps(5, JFT_IMAGES, 4096)
  assert pretrain["init_from"] == ""
  assert pretrain["workdir"] == str(workdir / "pretrain")

  for res in FINETUNE_RESOLUTIONS:
    finetune = plans[f"finetune_{res}"]
    assert finetune["program"] == "finetune"
    assert finetune["variant"] == "F4+"
    assert finetune["resolution"] == finetune["eval_resolution"] == res
    assert finetune["batch_size"] == 2048
    assert finetune["total_steps"] == 15_000
    assert finetune["warmup_steps"] == 5_000
    assert finetune["learning_rate"] == pytest.approx(0.1)
    assert finetune["sam_rho"] == pytest.approx(0.05)
    assert finetune["weight_decay"] == pytest.approx(1e-5)
    assert finetune["dropout"] == pytest.approx(0.25)
    assert finetune["stochdepth_rate"] == pytest.approx(0.1)
    assert finetune["ema_decay"] == pytest.approx(0.9999)
    assert finetune["init_from"] == str(workdir / "pretrain")
    assert finetune["workdir"] == str(workdir / f"finetune_{res}")
    assert f"--config.init_from={workdir / 'pretrain'}" in finetune["command"]


def test_dry_run_reads_data_flags_into_the_plan(tmp_path):
  """Data flags become the same --config.data.* overrides the real run gets;
  nothing needs to exist for a dry run."""
  plans = dry_run("jft_f4plus.sh", "--pretrain-data", tmp_path / "jft",
                  "--imagenet-train", "arrayrecord:/in/train-*.array_record",
                  "--imagenet-eval", tmp_path / "val",
                  "--workdir", tmp_path / "w")
  assert plans["pretrain"]["train"] == (
      f"arrayrecord:{tmp_path}/jft/train-*.array_record")
  assert plans["pretrain"]["eval"] == (
      f"arrayrecord:{tmp_path}/jft/eval-*.array_record")
  for res in FINETUNE_RESOLUTIONS:
    assert plans[f"finetune_{res}"]["train"] == "arrayrecord:/in/train-*.array_record"
    assert plans[f"finetune_{res}"]["eval"] == f"folder:{tmp_path}/val"


def test_stage_arguments_reach_the_plan_and_typos_fail(tmp_path):
  plans = dry_run("jft_f4plus.sh", "--workdir", tmp_path,
                  "--stages", "pretrain,finetune_384",
                  "--pretrain-arg=--config.batch_size=2048",
                  "--", "--config.micro_batches=4")
  assert list(plans) == ["pretrain", "finetune_384"]
  # lr 0.1 * 2048 / 256 and twice the steps; the fine-tune keeps its batch.
  assert plans["pretrain"]["learning_rate"] == pytest.approx(0.8)
  assert plans["pretrain"]["total_steps"] == steps(20, JFT_IMAGES, 2048)
  assert plans["finetune_384"]["batch_size"] == 2048
  assert plans["pretrain"]["micro_batches"] == 4
  assert plans["finetune_384"]["micro_batches"] == 4
  # A duration in steps replaces the config's epochs, as in the program.
  plans = dry_run("jft_f4plus.sh", "--workdir", tmp_path, "--stages", "pretrain",
                  "--pretrain-arg=--config.total_steps=1000")
  assert plans["pretrain"]["total_steps"] == 1000

  typo = run_recipe("jft_f4plus.sh", "--dry-run", "--workdir", tmp_path,
                    "--finetune-arg=--config.batch_sze=16")
  assert typo.returncode != 0
  assert "batch_sze" in typo.stderr and "batch_size" in typo.stderr

  # A bad value in a later stage fails before the first stage would run.
  bad_value = run_recipe("jft_f4plus.sh", "--dry-run", "--workdir", tmp_path,
                         "--finetune-arg=--config.model.activation=gleu")
  assert bad_value.returncode == 1
  assert "Unknown activation 'gleu'" in bad_value.stderr

  unknown = run_recipe("jft_f4plus.sh", "--dry-run", "--stages", "finetune_999")
  assert unknown.returncode == 2
  assert "finetune_999" in unknown.stderr and "finetune_384" in unknown.stderr


# ----------------------------------------------------------------------------
# The other recipes
# ----------------------------------------------------------------------------

def test_nf_resnet50_dry_run_is_table_4s_baseline(tmp_path):
  plans = dry_run("nf_resnet50.sh", "--workdir", tmp_path)
  pretrain = plans["pretrain"]
  assert pretrain["variant"] == "NF-ResNet-50"
  assert pretrain["resolution"] == 224
  assert pretrain["batch_size"] == 1024
  assert pretrain["learning_rate"] == pytest.approx(0.4)  # not batch-scaled
  assert pretrain["warmup_steps"] == 5_000
  assert pretrain["weight_decay"] == pytest.approx(1e-5)
  assert pretrain["ema_decay"] == 0
  assert pretrain["total_steps"] == steps(10, JFT_IMAGES, 1024)
  for res in FINETUNE_RESOLUTIONS:
    finetune = plans[f"finetune_{res}"]
    assert finetune["variant"] == "NF-ResNet-50"
    assert finetune["resolution"] == res
    assert finetune["batch_size"] == 2048
    assert finetune["total_steps"] == 15_000
    assert finetune["warmup_steps"] == 5_000
    assert finetune["learning_rate"] == pytest.approx(0.1)
    assert finetune["weight_decay"] == 0
    assert finetune["dropout"] == 0
    assert finetune["stochdepth_rate"] == 0
    assert finetune["ema_decay"] == pytest.approx(0.9999)
    assert finetune["init_from"] == str(tmp_path / "pretrain")


def test_imagenet21k_dry_run_and_its_options(tmp_path):
  plans = dry_run("imagenet21k_to_imagenet.sh", "--workdir", tmp_path)
  pretrain = plans["pretrain"]
  assert pretrain["variant"] == "F4+"
  assert pretrain["loss"] == "softmax"  # one label per image
  assert pretrain["train_examples"] == IMAGENET21K_IMAGES
  assert pretrain["total_steps"] == steps(90, IMAGENET21K_IMAGES, 4096)
  assert pretrain["learning_rate"] == pytest.approx(1.6)
  assert pretrain["weight_decay"] == pytest.approx(1e-6)
  assert plans["finetune_320"]["init_from"] == str(tmp_path / "pretrain")

  plans = dry_run("imagenet21k_to_imagenet.sh", "--workdir", tmp_path,
                  "--variant", "F0+", "--epochs", "30")
  assert {p["variant"] for p in plans.values()} == {"F0+"}
  assert plans["pretrain"]["total_steps"] == steps(30, IMAGENET21K_IMAGES, 4096)


IMAGENET_IMAGES = 1_281_167

# docs/reference.md section 1: (train px, test px, dropout, RandAugment magnitude).
FROM_SCRATCH = {"F0": (192, 256, 0.2, 5), "F6": (448, 576, 0.5, 15)}


@pytest.mark.parametrize("variant", sorted(FROM_SCRATCH))
def test_imagenet_from_scratch_dry_run_is_the_papers_recipe(tmp_path, variant):
  train_px, test_px, dropout, magnitude = FROM_SCRATCH[variant]
  plans = dry_run("imagenet_from_scratch.sh", "--variant", variant,
                  "--workdir", tmp_path)
  assert list(plans) == ["train"]
  plan = plans["train"]
  assert plan["program"] == "pretrain" and plan["variant"] == variant
  assert plan["batch_size"] == 4096
  assert plan["train_examples"] == IMAGENET_IMAGES
  assert plan["epochs"] == pytest.approx(360.0, abs=1e-3)
  assert plan["total_steps"] == steps(360, IMAGENET_IMAGES, 4096) == 112_602
  assert plan["warmup_steps"] == steps(5, IMAGENET_IMAGES, 4096)
  assert plan["learning_rate"] == pytest.approx(1.6)  # 0.1 x 4096 / 256
  assert plan["momentum"] == pytest.approx(0.9)
  assert plan["weight_decay"] == pytest.approx(2e-5)
  assert plan["agc_clipping"] == pytest.approx(0.01)
  assert plan["ema_decay"] == pytest.approx(0.99999)
  assert plan["stochdepth_rate"] == pytest.approx(0.25)
  assert plan["dropout"] == pytest.approx(dropout)
  assert (plan["resolution"], plan["eval_resolution"]) == (train_px, test_px)
  assert plan["mixup_cutmix"] is True
  assert (plan["randaugment_layers"], plan["randaugment_magnitude"]) == (4, magnitude)
  assert plan["label_smoothing"] == pytest.approx(0.1)
  assert plan["loss"] == "softmax" and plan["sam_rho"] == 0
  assert plan["train"] == "tfds:imagenet2012/train"
  assert plan["eval"] == "tfds:imagenet2012/validation"
  assert plan["workdir"] == str(tmp_path / "train")


def test_imagenet_from_scratch_refuses_unknown_variants_and_missing_data(tmp_path):
  result = run_recipe("imagenet_from_scratch.sh", "--dry-run", "--variant", "F9")
  assert result.returncode == 2 and "F0..F6" in result.stderr
  result = run_recipe("imagenet_from_scratch.sh", "--workdir", tmp_path / "w")
  assert result.returncode == 2 and "--imagenet" in result.stderr
  assert not (tmp_path / "w").exists()


def test_deepmind_finetune_dry_run(tmp_path):
  weights = tmp_path / "F3_haiku.npz"  # a dry run does not read it
  plans = dry_run("deepmind_finetune.sh", "--weights", weights,
                  "--train", tmp_path / "flowers/train",
                  "--eval", tmp_path / "flowers/val",
                  "--res", 320, "--steps", 2000, "--workdir", tmp_path / "w")
  assert list(plans) == ["finetune"]
  finetune = plans["finetune"]
  assert finetune["variant"] == "F3"  # from DeepMind's file name
  assert finetune["init_from"] == str(weights)
  assert finetune["train"] == f"folder:{tmp_path}/flowers/train"
  assert finetune["eval"] == f"folder:{tmp_path}/flowers/val"
  assert finetune["resolution"] == 320
  assert finetune["total_steps"] == 2000
  assert finetune["warmup_steps"] == 200
  assert finetune["batch_size"] == 512
  assert finetune["learning_rate"] == pytest.approx(0.1)
  assert finetune["sam_rho"] == pytest.approx(0.05)
  assert finetune["weight_decay"] == pytest.approx(1e-5)
  assert finetune["dropout"] == pytest.approx(0.25)
  assert finetune["stochdepth_rate"] == pytest.approx(0.1)
  assert finetune["ema_decay"] == pytest.approx(0.9999)
  assert finetune["epochs"] is None  # a user's dataset has no nominal size

  # `--opt=~/x` reaches the recipe with its ~ (the shell expands only a
  # leading one): it means the home folder, not ./~.
  plans = dry_run("deepmind_finetune.sh", "--weights=~/F3_haiku.npz",
                  "--workdir=~/w", env={"HOME": str(tmp_path)})
  assert plans["finetune"]["init_from"] == str(weights)
  assert plans["finetune"]["workdir"].startswith(f"{tmp_path}/w")

  renamed = tmp_path / "my_weights.npz"
  unknown = run_recipe("deepmind_finetune.sh", "--dry-run", "--weights", renamed)
  assert unknown.returncode == 2
  assert "--variant" in unknown.stderr and "my_weights.npz" in unknown.stderr
  plans = dry_run("deepmind_finetune.sh", "--weights", renamed,
                  "--variant", "F5", "--workdir", tmp_path)
  assert plans["finetune"]["variant"] == "F5"


@pytest.mark.parametrize("recipe", ["jft_f4plus.sh", "nf_resnet50.sh",
                                    "imagenet21k_to_imagenet.sh",
                                    "deepmind_finetune.sh",
                                    "imagenet_from_scratch.sh"])
def test_help_documents_inputs_and_multi_host(recipe):
  result = run_recipe(recipe, "--help")
  assert result.returncode == 0
  assert "--dry-run" in result.stdout
  assert "Multi-host" in result.stdout and "--host-id" in result.stdout
  assert not result.stdout.startswith("!")  # the shebang is not help text


# ----------------------------------------------------------------------------
# Multi-host flags
# ----------------------------------------------------------------------------

def test_multi_host_flags_are_exported_for_the_programs(tmp_path):
  plans = dry_run("jft_f4plus.sh", "--workdir", tmp_path, "--stages",
                  "finetune_224", "--coordinator", "10.0.0.1:1234",
                  "--hosts", 4, "--host-id", 3)
  assert plans["finetune_224"]["env"]["JAX_COORDINATOR_ADDRESS"] == "10.0.0.1:1234"
  assert plans["finetune_224"]["env"]["JAX_NUM_PROCESSES"] == "4"
  assert plans["finetune_224"]["env"]["JAX_PROCESS_ID"] == "3"

  plans = dry_run("jft_f4plus.sh", "--workdir", tmp_path, "--distributed")
  assert all(p["command"].endswith(" --distributed") for p in plans.values())

  for bad, message in ((["--hosts", 2], "--coordinator"),
                       (["--coordinator", "h:1", "--hosts", 2], "--host-id"),
                       (["--coordinator", "h:1", "--hosts", 2, "--host-id", 2],
                        "out of range")):
    result = run_recipe("jft_f4plus.sh", "--dry-run", *bad)
    assert result.returncode == 2, bad
    assert message in result.stderr, (bad, result.stderr)


# ----------------------------------------------------------------------------
# Real (non-dry) runs: inputs, skipping, the results table
# ----------------------------------------------------------------------------

@pytest.fixture
def fake_inputs(tmp_path):
  """Input locations that exist (the recipes check them before any stage)."""
  shards = tmp_path / "jft"
  shards.mkdir()
  for split in ("train", "eval"):
    (shards / f"{split}-00000-of-00001.array_record").touch()
  tfds_dir = tmp_path / "tfds"
  (tfds_dir / "imagenet2012").mkdir(parents=True)
  return shards, tfds_dir


def test_real_run_refuses_missing_inputs(tmp_path, fake_inputs):
  shards, tfds_dir = fake_inputs
  result = run_recipe("jft_f4plus.sh", "--workdir", tmp_path / "w")
  assert result.returncode == 2
  assert "--pretrain-data" in result.stderr

  result = run_recipe("jft_f4plus.sh", "--workdir", tmp_path / "w",
                      "--pretrain-data", tmp_path / "missing")
  assert result.returncode == 2
  assert "no file matches" in result.stderr and "missing" in result.stderr

  result = run_recipe("jft_f4plus.sh", "--workdir", tmp_path / "w",
                      "--pretrain-data", shards)
  assert result.returncode == 2
  assert "--imagenet" in result.stderr

  result = run_recipe("jft_f4plus.sh", "--workdir", tmp_path / "w",
                      "--pretrain-data", shards, "--imagenet", tmp_path)
  assert result.returncode == 2
  assert "imagenet2012" in result.stderr and "tfds build" in result.stderr

  result = run_recipe("deepmind_finetune.sh", "--weights",
                      tmp_path / "F0_haiku.npz", "--train", tmp_path)
  assert result.returncode == 2
  assert "no such file" in result.stderr
  assert not (tmp_path / "w").exists()  # nothing started


def write_results(workdir, **results):
  workdir.mkdir(parents=True)
  (workdir / "results.json").write_text(json.dumps(results))


def test_finished_stages_are_skipped_and_tabled(tmp_path, fake_inputs):
  shards, tfds_dir = fake_inputs
  workdir = tmp_path / "w"
  write_results(workdir / "pretrain", step=1_464_843, **{"eval/top1": 0.4123})
  write_results(workdir / "finetune_224", step=15_000,
                **{"eval/top1": 0.871, "eval_ema/top1": 0.8812})
  write_results(workdir / "finetune_384", step=15_000,
                **{"eval/top1": 0.8855, "eval_ema/top1": 0.8901})
  result = run_recipe("jft_f4plus.sh", "--workdir", workdir,
                      "--pretrain-data", shards, "--imagenet", tfds_dir,
                      "--stages", "pretrain,finetune_224,finetune_384")
  assert result.returncode == 0, result.stderr
  out = result.stdout
  # Each stage's command is printed before the stage, then skipped.
  assert out.count("finished earlier") == 3
  assert f"python3 -m pretrain.main --config={REPO}/pretrain/configs/jft.py" in out
  # Stages run under the recipe's own interpreter, not a `python3` from PATH.
  [interpreter] = re.findall(r"==> \[pretrain\] (\S+) -m pretrain\.main", out)
  assert os.path.isabs(interpreter), out
  assert "'--config.data.train=arrayrecord:" in out
  assert f"--config.init_from={workdir}/pretrain" in out
  rows = {line.split()[0]: line.split() for line in out.splitlines()
          if line.startswith(("pretrain ", "finetune_"))}
  assert rows["pretrain"][1:6] == ["F4+", "224", "step", "1464843", "41.23"]
  assert rows["finetune_224"][1:7] == ["F4+", "224", "step", "15000", "87.10",
                                       "88.12"]
  assert rows["finetune_384"][5:8] == ["88.55", "89.01", "89.2"]


def test_table_shows_the_papers_number_per_resolution(tmp_path, fake_inputs):
  shards, tfds_dir = fake_inputs
  for res in FINETUNE_RESOLUTIONS:
    write_results(tmp_path / "w" / f"finetune_{res}", step=15_000,
                  **{"eval/top1": 0.8, "eval_ema/top1": 0.81})
  write_results(tmp_path / "w" / "pretrain", step=2_929_687)
  result = run_recipe("nf_resnet50.sh", "--workdir", tmp_path / "w",
                      "--pretrain-data", shards, "--imagenet", tfds_dir)
  assert result.returncode == 0, result.stderr
  rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()
          if line.startswith("finetune_")}
  assert [rows[f"finetune_{r}"][-1] for r in FINETUNE_RESOLUTIONS] == [
      "79.5", "80.9", "81.1"]
  assert rows["finetune_320"][1:3] == ["NF-ResNet-50", "320"]


def test_fine_tune_waits_for_a_finished_pretraining(tmp_path, fake_inputs):
  shards, tfds_dir = fake_inputs
  (tmp_path / "w" / "pretrain").mkdir(parents=True)  # started, not finished
  result = run_recipe("jft_f4plus.sh", "--workdir", tmp_path / "w",
                      "--imagenet", tfds_dir, "--stages", "finetune_224")
  assert result.returncode == 2
  assert "run that stage first" in result.stderr
  assert not (tmp_path / "w" / "finetune_224").exists()


# ----------------------------------------------------------------------------
# recipes.plan itself
# ----------------------------------------------------------------------------

def test_plan_builds_no_arrays_and_claims_no_accelerator():
  code = (
      "from recipes import __main__ as recipes_main\n"
      "from jax._src import xla_bridge\n"
      "assert recipes_main.main(['run', 'jft_f4plus', '--dry-run', "
      "'--stages=pretrain', '--workdir=/tmp/x']) == 0\n"
      "assert not xla_bridge.backends_are_initialized()\n"
      "import jax; assert jax.config.jax_platforms == 'cpu'\n")
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)["total_steps"] == 1_464_843


def test_plan_explains_what_it_cannot_resolve(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  # Epochs need the nominal dataset size, which a dry run cannot count.
  stage = plan.parse_stage("pt", "pretrain",
                           ["--config=pretrain/configs/jft.py",
                            f"--workdir={tmp_path}",
                            "--config.data.train_examples=0"])
  with pytest.raises(plan.PlanError, match="train_examples=N"):
    plan.resolve(stage)
  for override, message in (("--config.batch_size=0", "batch_size must be positive"),
                            ("--config.loss=hinge", "loss must be one of"),
                            ("--config.model.variant=G9", "Unknown NFNet variant")):
    stage = plan.parse_stage("ft", "finetune",
                             ["--config=finetune/configs/dataset.py",
                              f"--workdir={tmp_path}", override])
    with pytest.raises(plan.PlanError) as refused:
      plan.resolve(stage)
    assert message in str(refused.value)
    assert "train_examples" not in str(refused.value)  # no epochs involved
  with pytest.raises(plan.PlanError, match="Unknown config argument 'res0'"):
    plan.parse_stage("ft", "finetune",
                     ["--config=finetune/configs/dataset.py:res0=3",
                      f"--workdir={tmp_path}"])
  with pytest.raises(plan.PlanError, match="does not exist"):
    plan.parse_stage("ft", "finetune",
                     ["--config=finetune/configs/nope.py", f"--workdir={tmp_path}"])
  with pytest.raises(plan.PlanError, match="--workdir is required"):
    plan.parse_stage("ft", "finetune", ["--config=finetune/configs/dataset.py"])


def test_table_layout():
  table = results.format_table([{"stage": "pretrain", "top-1": "41.23"},
                             {"stage": "finetune_384", "top-1": "-"}])
  lines = table.splitlines()
  assert lines[0] == "stage         top-1"
  assert lines[2] == "pretrain      41.23"
  assert lines[3] == "finetune_384  -"
