"""Stopping cleanly on SIGTERM/SIGINT: save the current step, then exit.

Orbax's `PreemptionCheckpointingPolicy` (in the checkpoint manager) covers the
preemption notices JAX's coordination service delivers; this guard covers the
plain signals a scheduler or a user sends, which orbax does not watch.
"""
from __future__ import annotations

import signal

import jax
import numpy as np


class PreemptionGuard:
  """Turns SIGTERM/SIGINT into a flag the loop checks: save, then exit cleanly.
  A context manager: it holds the signals inside `with` only."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self) -> "PreemptionGuard":
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    """Gives the signals back to whoever had them before the run."""
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # A second signal: the user really wants out now.
      signal.signal(signum, self._previous[signum])
      raise KeyboardInterrupt
    self.requested = True
    print(f"Received signal {signum}: saving a checkpoint and stopping.",
          flush=True)

  def should_stop(self, manager, step: int) -> bool:
    """True on every process once any process was signalled (or orbax saw a
    preemption notice), so all of them save the same step and stop together."""
    # Orbax's notice is already agreed: JAX's preemption sync point is the
    # same step on every process, and true on that step only.
    if manager.reached_preemption(step):
      return True
    if jax.process_count() == 1:
      return self.requested
    # A signal reaches one host: agreeing on it is a blocking collective, so
    # it is done every 10 steps.
    if step % 10 == 0:
      from jax.experimental import multihost_utils
      return bool(np.any(multihost_utils.process_allgather(
          np.int32(self.requested))))
    return False
