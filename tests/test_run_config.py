"""What a run refuses up front, and how its command line reports mistakes:
values that would only fail after training started, or fail with a
traceback, stop with one clear error."""
import json
import os
import subprocess
import sys

import pytest

from data import fewshot as data_fewshot
from nfnet.errors import UserError
from nfnet.train import cli, config_base, results, setup
from pretrain.configs import jft as pretrain_jft
from pretrain.configs import synthetic as pretrain_synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("key, value", [
    ("log_every_steps", 0), ("eval_every_steps", 0),
    ("checkpoint_every_steps", 0), ("keep_checkpoints", 0),
    ("fewshot_every_steps", 0), ("ema_decay", -0.5), ("ema_decay", 1.0),
    # Malformed optimizer options.
    ("lr_multipliers", ("stem.*", 0.5)), ("lr_multipliers", (("stem.*",),)),
    ("lr_multipliers", (("stem.*", -1.0),)),
    ("lr_multipliers", (("stem(", 0.5),)),
    ("ws_kernel_norm", 0.0), ("ws_kernel_norm", -1.0),
    ("init_ws_kernel_norm", 0.0), ("init_ws_kernel_norm", -1.0)])
def test_values_that_would_fail_later_are_refused_up_front(key, value):
  config = pretrain_synthetic.get_config()
  setup.check_run_config(config)
  config[key] = value
  with pytest.raises(UserError, match=key):
    setup.check_run_config(config)


def _params_optimizer_and_unit_grads(config):
  """The config's fresh parameters (3 classes), its optimizer and a gradient
  of ones."""
  import jax
  import jax.numpy as jnp
  setup.check_run_config(config)
  model = setup.build_model(config, 3)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                      is_training=False)["params"]
  _, tx = setup.build_optimizer(config, setup.Durations(10, 0, 1.0))
  return params, tx, jax.tree_util.tree_map(jnp.ones_like, params)


def test_lr_multipliers_reach_the_optimizer():
  """A multiplier of 0 freezes exactly the leaves it names."""
  import jax
  import jax.numpy as jnp
  config = pretrain_synthetic.get_config()
  config.lr_multipliers = (("stem_conv0/.*", 0.0),)
  params, tx, grads = _params_optimizer_and_unit_grads(config)
  state = tx.init(params)
  for _ in range(2):  # step 0 of the schedule has lr 0 only with warm-up
    updates, state = tx.update(grads, state, params)
  moved = {name: any(bool(jnp.any(leaf != 0))
                     for leaf in jax.tree_util.tree_leaves(module))
           for name, module in updates.items()}
  assert moved.pop("stem_conv0") is False
  assert all(moved.values()), moved


def test_ws_kernel_norm_reaches_the_optimizer():
  """One step from a fresh init (centred unit norms near 1) lands the stem's
  kernel at the configured norm."""
  import jax.numpy as jnp
  import optax
  config = pretrain_synthetic.get_config()
  config.ws_kernel_norm = 2.0
  params, tx, grads = _params_optimizer_and_unit_grads(config)
  updates, _ = tx.update(grads, tx.init(params), params)
  kernel = optax.apply_updates(params, updates)["stem_conv0"]["kernel"]
  units = kernel.reshape(-1, kernel.shape[-1])
  norms = jnp.linalg.norm(units - units.mean(axis=0), axis=0)
  assert jnp.allclose(norms, 2.0, rtol=1e-5), norms


def test_a_mistyped_boolean_argument_is_refused_not_read_as_false():
  # `runlocal=ture` read as False would launch the full pod-sized run.
  with pytest.raises(UserError, match="runlocal='ture' is not a bool"):
    pretrain_jft.get_config("variant=F4+,runlocal=ture")
  assert pretrain_jft.get_config("variant=F4+,runlocal=yes").batch_size < 64
  with pytest.raises(UserError, match="steps='many' is not a int"):
    config_base.parse_arg("steps=many", steps=10)


def test_a_duration_from_the_command_line_replaces_the_configs():
  config = pretrain_jft.get_config("variant=F4+")
  assert config.total_epochs and config.warmup_epochs
  # As config_flags leaves it: the flag's value set, the file's still there.
  config.total_steps = 500
  cli.prefer_durations(config, {"total_steps": 500, "model.width": 0.5})
  assert (config.total_steps, config.total_epochs) == (500, None)
  assert config.warmup_epochs == 5.0  # another group, left alone
  config.warmup_steps = 10
  cli.prefer_durations(config, {"warmup_steps": 10})
  assert (config.warmup_steps, config.warmup_epochs) == (10, None)


def test_a_config_file_mistake_is_one_error_line(tmp_path):
  for args in (["--config", "pretrain/configs/synthetic.py:stpes=3"],
               ["--config", "pretrain/configs/synthetic.py",
                "--config.modle.width=0.5"],
               ["--config", "pretrain/configs/missing.py"]):
    done = subprocess.run(
        [sys.executable, "-m", "pretrain.main", *args, "--workdir",
         str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "error: " in done.stderr and "Traceback" not in done.stderr, (
        done.stderr)


def test_fewshot_probes_need_a_held_out_image_per_class():
  config = pretrain_synthetic.get_config()
  config.fewshot.datasets = {"d": {"train": "folder:/x", "test": "folder:/y"}}
  config.fewshot.heldout_per_class = 0
  with pytest.raises(ValueError, match="heldout_per_class must be at least 1"):
    data_fewshot.make_fewshot_sets(config, 0, 1)


def test_results_table_reads_topk_of_fewer_than_five_classes(tmp_path):
  (tmp_path / results.RESULTS_FILE).write_text(json.dumps(
      {"step": 300, "eval/top1": 0.875, "eval/top4": 1.0}))
  assert "100.0%" in results.runs_table({"four": str(tmp_path)})
  with pytest.raises(FileNotFoundError, match="is .* a run's workdir"):
    results.read_scalars(str(tmp_path / "typo"))


def test_results_table_shows_the_flip_averaged_top1_when_a_run_has_it(tmp_path):
  plain, flipped = tmp_path / "plain", tmp_path / "flipped"
  plain.mkdir(), flipped.mkdir()
  (plain / results.RESULTS_FILE).write_text(json.dumps(
      {"step": 300, "eval/top1": 0.5, "eval/top4": 1.0}))
  assert "flip" not in results.runs_table({"plain": str(plain)})
  (flipped / results.RESULTS_FILE).write_text(json.dumps(
      {"step": 300, "eval/top1": 0.5, "eval/top4": 1.0, "eval/flip_top1": 0.625}))
  table = results.runs_table({"plain": str(plain), "flipped": str(flipped)})
  assert "top-1 (flip-averaged)" in table.splitlines()[0]
  assert "62.5%" in table.splitlines()[-1] and "-" in table.splitlines()[-2]


def test_final_metrics_line_shows_every_accuracy_as_a_percentage():
  line = results.format_metrics({"eval/examples": 4000, "eval/top1": 0.8828,
                                 "eval/flip_top1": 0.89225, "eval_ema/top4": 1.0})
  assert line == ("eval/examples 4000, eval/flip_top1 89.22%, eval/top1 88.28%, "
                  "eval_ema/top4 100.00%")
