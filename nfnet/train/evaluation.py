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
    skipped = corrupt_records_skipped(eval_batches)
    if skipped:  # The same sum on every process, so the same keys.
      results[f"{name}/corrupt_skipped"] = float(skipped)
  return results


def corrupt_records_skipped(eval_batches) -> int:
  """Corrupt records the latest pass of `eval_batches` left out (a loader
  with skip_corrupt=True counts them), summed over processes."""
  return parallel.sum_over_processes(
      getattr(eval_batches, "num_corrupt_skipped", 0))


def params_to_evaluate(state) -> dict[str, Any]:
  """Raw weights always; EMA weights too when the run keeps them."""
  params = {"eval": state.params}
  if state.ema_params is not None:
    params["eval_ema"] = state.ema_params
  return params
