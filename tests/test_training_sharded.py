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

_SCRIPT_PRELUDE = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import json
import jax, jax.numpy as jnp, numpy as np
from nfnet import NFNet, optim
from nfnet.train import parallel, training
assert jax.device_count() == 8
mesh = parallel.make_data_mesh()
model = NFNet(variant="F0", num_classes=5, width=0.125, depths=(1, 1, 1, 1),
              group_size=16, conv_impl="native", drop_rate=0.0,
              stochdepth_rate=0.0)
rng = np.random.default_rng(0)
def host_batch(n, res=32):
  return {"image": rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8),
          "label": rng.integers(0, 5, (n,)).astype(np.int32)}
params = jax.jit(model.init)(jax.random.PRNGKey(0),
                             jnp.zeros((1, 32, 32, 3)))["params"]
"""


def _run_on_8_devices(body: str) -> dict:
  script = _SCRIPT_PRELUDE + textwrap.dedent(body)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
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
    from nfnet.model import normalize_images
    import optax
    tx = optax.sgd(1.0)  # update == -grad, so the step exposes the gradient
    state = training.create_train_state(params, tx, use_ema=False)
    state = jax.device_put(state, parallel.replicated(mesh))
    step = training.make_train_step(model, tx, mesh, sam_rho=0.05,
                                    sam_ascent_fraction=0.5)
    hb = host_batch(16)
    before = jax.device_get(state.params)  # the step donates `state`
    new_state, _ = step(state, parallel.to_global_batch(hb, mesh))
    grad = jax.tree_util.tree_map(lambda a, b: a - b, before,
                                  jax.device_get(new_state.params))

    def loss_fn(p, b):
      logits = model.apply({"params": p}, normalize_images(b["image"]),
                           is_training=True, rngs={"dropout": jax.random.PRNGKey(0)})
      return training.classification_loss(
          logits, jax.nn.one_hot(b["label"], 5), "softmax")
    sam = jax.jit(sam_value_and_grad(loss_fn, rho=0.05, ascent_fraction=0.5))
    shards = [jax.tree_util.tree_map(lambda x: x[2 * i:2 * i + 2], hb)
              for i in range(8)]
    per_shard = [sam(params, s)[1] for s in shards]
    expected = jax.tree_util.tree_map(lambda *g: sum(g) / 8, *per_shard)
    synced = sam(params, hb)[1]   # one global ascent: what the paper avoids
    diff = lambda a, b: max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(
        jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(expected))
    print(json.dumps({"vs_per_replica": diff(grad, expected) / scale,
                      "vs_synced": diff(grad, synced) / scale}))
  """)
  assert result["vs_per_replica"] < 1e-4
  assert result["vs_synced"] > 1e-3


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
    import optax
    tx = optax.sgd(1.0)  # update == -grad, so the step exposes the gradient
    hb = host_batch(32)  # 4 examples per device, 2 micro-batches of 2
    before = jax.device_get(params)  # the step donates the state's buffers
    grads, losses = {}, {}
    for micro_batches in (1, 2):
      state = training.create_train_state(before, tx, use_ema=False)
      state = jax.device_put(state, parallel.replicated(mesh))
      step = training.make_train_step(model, tx, mesh, micro_batches=micro_batches)
      new_state, metrics = step(state, parallel.to_global_batch(hb, mesh))
      grads[micro_batches] = jax.tree_util.tree_map(
          lambda a, b: a - b, before, jax.device_get(new_state.params))
      losses[micro_batches] = float(metrics["loss"])
    leaves = lambda t: jax.tree_util.tree_leaves(t)
    scale = max(float(np.max(np.abs(g))) for g in leaves(grads[1]))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves(grads[1]), leaves(grads[2])))
    print(json.dumps({"relative_diff": diff / scale, "losses": losses}))
  """)
  # The mean of the micro-batch means is the batch mean: equal up to float32
  # summation order.
  assert result["relative_diff"] < 1e-5
  assert abs(result["losses"]["1"] - result["losses"]["2"]) < 1e-5
