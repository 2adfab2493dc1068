"""Shared fixtures: tiny models that train on this CPU in seconds."""
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The suite compiles hundreds of tiny programs whose run time is negligible,
# so XLA:CPU's compile time is most of its wall time. Three settings, set in
# the environment so that the xdist workers and every subprocess a test starts
# inherit them:
# - one Eigen thread per test worker, so two workers do not fight over 2 cores;
# - LLVM at -O0 without its expensive passes: the same HLO and the same
#   fusion decisions, less machine-code optimisation (a tiny NFNet's init
#   compiled in 11.7 s -> 4.1 s, its gradient 13.9 s -> 7.1 s; the step ran in
#   the same time at these sizes);
# - a persistent compilation cache shared by all of them, keyed by XLA on the
#   program, its options and the versions, so a program that many tests build
#   (the tiny model's init, say) is compiled once per cache.
os.environ["XLA_FLAGS"] = " ".join(filter(None, [
    os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false",
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true"]))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(_REPO, ".pytest_cache", "jax_compilation"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax
import pytest

TINY_NFNET = dict(variant="F0", width=0.125, depths=(1, 1, 1, 1), group_size=16)


@pytest.fixture
def tiny_nfnet_kwargs():
  """F0 topology at 1/8 width, one block per stage: every code path, tiny cost."""
  return dict(TINY_NFNET)


@pytest.fixture
def rng():
  return jax.random.PRNGKey(0)


@pytest.fixture
def benchmark_module():
  """Imports a script of benchmarks/ (a folder of scripts, not a package) by name."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"{name}_benchmark", os.path.join(root, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would: dataclasses look their
    # module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module

  return load


@pytest.fixture
def assert_backbone_loaded_and_head_fresh():
  """Checks fine-tuning's start: every non-head parameter equals the source's,
  and the classifier is the fresh model's, not the source's."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import traverse_util  # pylint: disable=import-outside-toplevel

  def check(params, source, fresh):
    flat, flat_source = (traverse_util.flatten_dict(p, sep="/") for p in (params, source))
    backbone = [k for k in flat if not k.startswith("classifier/")]
    assert len(backbone) > 50
    for key in backbone:
      np.testing.assert_array_equal(flat[key], flat_source[key], err_msg=key)
    np.testing.assert_array_equal(params["classifier"]["kernel"], fresh["classifier"]["kernel"])

  return check


def pytest_collection_modifyitems(items):
  """Slow tests first (a stable sort), so that under `-n 2` the two workers
  end on short tests instead of one waiting on a long one."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)
