"""Two processes on 127.0.0.1 through JAX's distributed runtime, as on a pod.

Each process reads its own shard of every global batch and writes its own
iterator state; the result must equal one process reading whole batches.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flax import traverse_util

from data import synthetic
from nfnet.weights import run_checkpoint

# Whole-program / multi-device runs: scheduled first (tests/conftest.py).
pytestmark = pytest.mark.slow

_WORKER = textwrap.dedent("""
    import json, sys
    import jax
    from nfnet.train import parallel
    parallel.maybe_initialize_distributed()
    from pretrain import main as pretrain_main
    from pretrain.configs import synthetic
    config = synthetic.get_config(f"data_dir={sys.argv[1]},steps=4,res=32,fewshot=False")
    config.model.update(width=0.125, depths=(1, 1, 1, 1), group_size=16)
    config.update(batch_size=8, checkpoint_every_steps=2, log_every_steps=2,
                  eval_every_steps=4)
    metrics = pretrain_main.train(config, sys.argv[2])
    print("RESULT", json.dumps({"process": jax.process_index(),
                                "count": jax.process_count(), **metrics}))
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(corpus, workdir, num_processes):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if num_processes > 1:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}",
               JAX_NUM_PROCESSES=str(num_processes))
  procs = []
  for i in range(num_processes):
    procs.append(subprocess.Popen(
        [sys.executable, "-c", _WORKER, corpus, workdir],
        env=dict(env, JAX_PROCESS_ID=str(i)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  results = []
  for proc in procs:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
    results.append(json.loads(line[len("RESULT "):]))
  return results


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synth"))
  synthetic.generate(out, num_train=64, num_eval=20,
                     downstream_train_per_class=2, downstream_eval_per_class=1,
                     image_size=32, num_shards=2)
  return out


def test_two_processes_train_like_one(corpus, tmp_path):
  two = _launch(corpus, str(tmp_path / "two"), 2)
  one = _launch(corpus, str(tmp_path / "one"), 1)
  assert sorted(r["process"] for r in two) == [0, 1]
  assert all(r["count"] == 2 for r in two)
  # Eval: every one of the 20 examples counted once, over both processes.
  assert all(r["eval/examples"] == 20 for r in two + one)
  data_dir = tmp_path / "two" / "checkpoints" / "4" / "data"
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(os.listdir(data_dir))
  # Each process read half of every global batch: together, the same
  # examples as one process, hence the same parameters.
  a, _ = run_checkpoint.load_checkpoint_params(str(tmp_path / "two"))
  b, _ = run_checkpoint.load_checkpoint_params(str(tmp_path / "one"))
  flat_a, flat_b = (traverse_util.flatten_dict(p, sep="/") for p in (a, b))
  for key in flat_a:
    np.testing.assert_allclose(flat_a[key], flat_b[key], rtol=1e-4, atol=1e-6,
                               err_msg=key)
