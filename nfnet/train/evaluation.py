"""Exact evaluation passes: summed per-batch metrics over a whole split."""
from __future__ import annotations

from typing import Any, Iterable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from nfnet.errors import UserError
from nfnet.train import parallel


def evaluate(eval_step, params_by_name: dict[str, Any],
             eval_batches: Iterable[dict], mesh: Mesh) -> dict[str, float]:
  """One pass over the eval split (each `iter()` of `eval_batches` is a fresh,
  exact pass) per parameter set: raw, EMA."""
  results = {}
  for name, params in params_by_name.items():
    totals = None
    for host_batch in eval_batches:
      sums = eval_step(params, parallel.to_global_batch(host_batch, mesh))
      totals = sums if totals is None else jax.tree_util.tree_map(
          jnp.add, totals, sums)
    if totals is None:
      raise UserError("The eval split yielded no batches.")
    totals = jax.device_get(totals)
    count = max(float(totals["count"]), 1.0)
    results.update({f"{name}/{k}": float(v) / count
                    for k, v in totals.items() if k != "count"})
    results[f"{name}/examples"] = float(totals["count"])
  # Every pass reads the same records, so one count serves each parameter set.
  skipped = corrupt_records_skipped(eval_batches)
  if skipped:  # The same sum on every process, so the same keys.
    results.update({f"{name}/corrupt_skipped": float(skipped)
                    for name in params_by_name})
  return results


def corrupt_records_skipped(eval_batches) -> int:
  """Corrupt records the latest pass of `eval_batches` left out (a loader
  with skip_corrupt=True counts them), summed over processes; 0, with no
  collective, for batches that do not count them."""
  if not hasattr(eval_batches, "num_corrupt_skipped"):
    return 0
  return parallel.sum_over_processes(eval_batches.num_corrupt_skipped)


def params_to_evaluate(state) -> dict[str, Any]:
  """Raw weights always; EMA weights too when the run keeps them."""
  params = {"eval": state.params}
  if state.ema_params is not None:
    params["eval_ema"] = state.ema_params
  return params
