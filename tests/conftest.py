"""Shared fixtures: tiny models that train on this CPU in seconds."""
import os

# Keep XLA from grabbing both cores per test worker under pytest-xdist.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

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
