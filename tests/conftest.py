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
