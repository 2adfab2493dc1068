"""The sharded train and eval steps on 8 forced CPU devices.

XLA_FLAGS must be set before jax is imported, so the checks run in a fresh
interpreter (`_run_on_8_devices`) and report back as JSON.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

# Multi-device runs: scheduled first (tests/conftest.py).
pytestmark = pytest.mark.slow

_SCRIPT_PRELUDE = """
import os
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
import json
import jax, jax.numpy as jnp, numpy as np
from nfnet import NFNet, optim
from nfnet.model import normalize_images
from nfnet.train import parallel, training
assert jax.device_count() == 8
mesh = parallel.make_data_mesh()
# Dropout and stochastic depth on (block rates 0, 0.125, 0.25, 0.375), so
# a wrong key for any micro-batch or replica changes the gradient.
model = NFNet(variant="F0", num_classes=5, width=0.125, depths=(1, 1, 1, 1),
              group_size=16, conv_impl="native", drop_rate=0.3,
              stochdepth_rate=0.5)
rng = np.random.default_rng(0)
def host_batch(n, res=32):
  return {"image": rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8),
          "label": rng.integers(0, 5, (n,)).astype(np.int32)}
params = jax.jit(model.init)(jax.random.PRNGKey(0),
                             jnp.zeros((1, 32, 32, 3)))["params"]
# A fresh init has every skip_gain at 0, which zeroes the gradient of every
# residual-branch parameter: set them to 0.5 so all parameters take part.
params = jax.tree_util.tree_map_with_path(
    lambda path, p: jnp.full_like(p, 0.5) if path[-1].key == "skip_gain" else p,
    params)

def replica_key(step, index, seed=0):
  # The documented key of virtual replica `index` (device d, micro-batch j of
  # k: index = d * k + j), written out here independently of the code.
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), step),
                            index)

def train_loss(p, b, key):
  logits = model.apply({"params": p}, normalize_images(b["image"]),
                       is_training=True, rngs={"dropout": key})
  return training.classification_loss(
      logits, jax.nn.one_hot(b["label"], 5), "softmax")

def step_gradient(num_devices, micro_batches, hb, **kwargs):
  # The gradient one train step takes (SGD with lr 1: update == -grad).
  import optax
  tx = optax.sgd(1.0)
  m = parallel.make_data_mesh(num_devices)
  state = training.create_train_state(params, tx, use_ema=False)
  state = jax.device_put(state, parallel.replicated(m))
  before = jax.device_get(state.params)  # the step donates `state`
  step = training.make_train_step(model, tx, m, micro_batches=micro_batches,
                                  **kwargs)
  new_state, metrics = step(state, parallel.to_global_batch(hb, m))
  grad = jax.tree_util.tree_map(lambda a, b: a - b, before,
                                jax.device_get(new_state.params))
  return grad, float(metrics["loss"])

def slices(hb, n):
  size = len(hb["label"]) // n
  return [jax.tree_util.tree_map(lambda x: x[i * size:(i + 1) * size], hb)
          for i in range(n)]

def mean_tree(trees):
  return jax.tree_util.tree_map(lambda *g: sum(g) / len(g), *trees)

def relative_diff(a, b):
  leaves = jax.tree_util.tree_leaves
  scale = max(float(np.max(np.abs(x))) for x in leaves(b))
  return max(float(np.max(np.abs(x - y))) for x, y in zip(leaves(a), leaves(b))) / scale

def fraction_of_zero_leaves(tree):
  leaves = jax.tree_util.tree_leaves(tree)
  return sum(float(np.max(np.abs(x))) == 0.0 for x in leaves) / len(leaves)
"""


def _run_on_8_devices(body: str) -> dict:
  script = _SCRIPT_PRELUDE + textwrap.dedent(body)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                       text=True, env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_train_step_runs_without_all_gathering_activations():
  result = _run_on_8_devices("""
    tx = optim.sgd_agc(0.1)
    state = training.create_train_state(params, tx, use_ema=True)
    state = jax.device_put(state, parallel.replicated(mesh))
    step = training.make_train_step(model, tx, mesh, ema_decay=0.999,
                                    agc_clipping=0.01)
    batch = parallel.to_global_batch(host_batch(16), mesh)
    hlo = step.lower(state, batch).compile().as_text()
    losses = []
    for _ in range(3):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
    print(json.dumps({"all_gather": "all-gather" in hlo,
                      "all_reduce": "all-reduce" in hlo,
                      "losses": losses, "step": int(state.step),
                      "batch_sharding": str(batch["image"].sharding.spec)}))
  """)
  # Parameters are replicated and the model runs per device: gradients are
  # all-reduced, and no activation is ever gathered across devices.
  assert not result["all_gather"]
  assert result["all_reduce"]
  assert result["step"] == 3
  assert result["losses"][-1] < result["losses"][0]  # same batch: it fits


def test_sharded_step_with_per_replica_sam_matches_mean_of_shard_gradients():
  result = _run_on_8_devices("""
    from nfnet.sam import sam_value_and_grad
    hb = host_batch(16)
    grad, _ = step_gradient(8, 1, hb, sam_rho=0.05, sam_ascent_fraction=0.5)
    # One device, 8 micro-batches: the same 8 virtual replicas and keys.
    grad_micro, _ = step_gradient(1, 8, hb, sam_rho=0.05,
                                  sam_ascent_fraction=0.5)
    sam = jax.jit(sam_value_and_grad(train_loss, rho=0.05, ascent_fraction=0.5))
    # Replica i: ascent and descent on its own 2 examples with its own key.
    expected = mean_tree([sam(params, s, replica_key(0, i))[1]
                          for i, s in enumerate(slices(hb, 8))])
    synced = sam(params, hb, replica_key(0, 0))[1]  # one global ascent
    print(json.dumps({"vs_per_replica": relative_diff(grad, expected),
                      "micro_vs_per_replica": relative_diff(grad_micro, expected),
                      "vs_synced": relative_diff(grad, synced),
                      "zero_leaves": fraction_of_zero_leaves(grad)}))
  """)
  assert result["zero_leaves"] == 0.0
  assert result["vs_per_replica"] < 1e-4
  assert result["micro_vs_per_replica"] < 1e-4
  assert result["vs_synced"] > 1e-2


def test_eval_counts_every_example_once_when_batch_does_not_divide_split():
  result = _run_on_8_devices("""
    step = training.make_eval_step(model, mesh, topk=5)
    n, batch_size = 21, 8
    data = host_batch(n)
    logits = jax.jit(lambda x: model.apply({"params": params},
        training.normalize_images(x)))(data["image"])
    expected_top1 = float(np.mean(np.argmax(logits, -1) == data["label"]))
    totals = {"top1": 0.0, "top5": 0.0, "count": 0.0}
    for start in range(0, n, batch_size):   # last batch: 5 real + 3 padding
      part = {k: v[start:start + batch_size] for k, v in data.items()}
      real = len(part["label"])
      pad = batch_size - real
      part = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
              for k, v in part.items()}
      part["mask"] = np.arange(batch_size) < real
      sums = step(params, parallel.to_global_batch(part, mesh))
      for k in totals:
        totals[k] += float(sums[k])
    print(json.dumps({**totals, "expected_top1": expected_top1}))
  """)
  assert result["count"] == 21
  assert result["top5"] == 21  # 5 classes: top-5 always hits
  assert abs(result["top1"] / 21 - result["expected_top1"]) < 1e-6


def test_gradient_accumulation_gives_the_full_batch_gradient():
  result = _run_on_8_devices("""
    hb = host_batch(32)
    # 32 examples as 8 virtual replicas of 4: 8 devices x 1 micro-batch,
    # 4 x 2, 1 x 8. Each replica's key depends on its index only, so all three
    # equal the mean of the 8 slices' gradients, each with its own key.
    grads, losses = {}, {}
    for devices, micro_batches in ((8, 1), (4, 2), (1, 8)):
      name = f"{devices}x{micro_batches}"
      grads[name], losses[name] = step_gradient(devices, micro_batches, hb)
    vg = jax.jit(jax.value_and_grad(train_loss))
    per_replica = [vg(params, s, replica_key(0, i))
                   for i, s in enumerate(slices(hb, 8))]
    expected = mean_tree([g for _, g in per_replica])
    expected_loss = float(np.mean([l for l, _ in per_replica]))
    print(json.dumps({
        "diff": {k: relative_diff(g, expected) for k, g in grads.items()},
        "loss_diff": {k: abs(l - expected_loss) for k, l in losses.items()},
        "zero_leaves": fraction_of_zero_leaves(expected)}))
  """)
  assert result["zero_leaves"] == 0.0  # every parameter has a gradient
  for layout, diff in result["diff"].items():
    # Equal up to float32 summation order.
    assert diff < 1e-5, (layout, result)
    assert result["loss_diff"][layout] < 1e-5, (layout, result)


def test_each_micro_batch_draws_its_own_dropout_and_stochastic_depth_masks():
  result = _run_on_8_devices("""
    one = host_batch(2)
    twice = jax.tree_util.tree_map(lambda x: np.concatenate([x, x]), one)
    grad, _ = step_gradient(1, 2, twice)
    g = jax.jit(jax.grad(train_loss))
    g0, g1 = g(params, one, replica_key(0, 0)), g(params, one, replica_key(0, 1))
    print(json.dumps({"vs_own_keys": relative_diff(grad, mean_tree([g0, g1])),
                      "vs_first_key_only": relative_diff(grad, g0),
                      "keys_differ": relative_diff(g1, g0)}))
  """)
  # The same two examples twice: only the masks tell the micro-batches apart.
  assert result["keys_differ"] > 1e-2   # the masks matter for this model
  assert result["vs_own_keys"] < 1e-5
  assert result["vs_first_key_only"] > 1e-3  # one shared key would give g0
