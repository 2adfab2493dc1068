"""Few-shot linear probes of the pre-logit features, run while pre-training.

The standard way to watch a JFT-scale pre-training transfer (big_vision's
few-shot evaluator): every `fewshot_every_steps`, for each downstream set,

1. extract the pooled pre-logit features (`NFNet(..., return_features=True)`)
   of a fixed pool of training examples (the `k` shots and a held-out part per
   class) and of the whole test split, once per probe, per device under
   `shard_map` with each host reading its own share, like the eval step;
2. for each shot count k, fit a linear map from the features of k examples
   per class to +-1 one-hot targets by ridge regression in closed form (one
   eigendecomposition, then every regularisation strength is a cheap
   rescaling);
3. pick the regularisation with the best accuracy on the held-out examples
   (never the test split), and report test top-1 as `fewshot/<name>_<k>shot`.

Features are standardised with the k-shot set's own mean and std and a
constant bias column is appended (scaled so that it is barely regularised),
as big_vision does. The ridge runs in float64 numpy on every host (the same
result everywhere): with D-dimensional features it costs one D x D (or
N x N, when fewer examples than dimensions) eigendecomposition per probe.

Nothing here reads data: the data pipeline hands in eval-style batches
(`image`, `label`, `mask`), see data/fewshot.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, PartitionSpec as P

from nfnet.model import NFNet, normalize_images
from nfnet.train.parallel import DATA_AXIS, to_global_batch
from nfnet.errors import UserError

# The appended bias feature: large, so that its weight is almost unregularised.
BIAS_CONSTANT = 100.0
# The regularisation strengths tried (big_vision's grid).
DEFAULT_L2_REGS = tuple(2.0 ** i for i in range(-10, 20))
TAG_PREFIX = "fewshot"


def metric_name(dataset: str, shots: int) -> str:
  """'fewshot/flowers_5shot': the TensorBoard tag and results.json key."""
  return f"{TAG_PREFIX}/{dataset}_{shots}shot"


# ----------------------------------------------------------------------------
# Closed-form ridge regression
# ----------------------------------------------------------------------------

def ridge_cache(x: np.ndarray, y: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
  """Everything the ridge solution needs for any regularisation strength.

  With X [N, D] (standardised, bias column appended) and targets T [N, C] in
  {-1, +1}, W(l2) = (X^T X + l2 I)^-1 X^T T when N >= D, else
  X^T (X X^T + l2 I)^-1 T. Both are `lhs @ diag(1 / (eigs + l2)) @ rhs` for
  the eigendecomposition of X^T X (or X X^T), computed once here.
  """
  x = np.asarray(x, np.float64)
  mean = x.mean(axis=0, keepdims=True)
  std = x.std(axis=0, keepdims=True) + 1e-5
  x = _with_bias((x - mean) / std)
  targets = 2.0 * np.eye(num_classes)[np.asarray(y)] - 1.0
  if x.shape[0] >= x.shape[1]:
    eigs, q = np.linalg.eigh(x.T @ x)
    lhs, rhs = q, q.T @ (x.T @ targets)
  else:
    eigs, q = np.linalg.eigh(x @ x.T)
    lhs, rhs = x.T @ q, q.T @ targets
  return {"eigs": eigs, "lhs": lhs, "rhs": rhs, "mean": mean, "std": std}


def _with_bias(x: np.ndarray) -> np.ndarray:
  return np.concatenate([x, np.full((x.shape[0], 1), BIAS_CONSTANT)], axis=1)


def ridge_weights(cache: dict[str, np.ndarray], l2: float) -> np.ndarray:
  """W [D + 1, C] for one regularisation strength."""
  scaling = 1.0 / (cache["eigs"] + l2)
  return (cache["lhs"] * scaling[None, :]) @ cache["rhs"]


def ridge_accuracy(cache: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                   l2: float) -> float:
  """Top-1 of the ridge classifier on (x, y)."""
  x = _with_bias((np.asarray(x, np.float64) - cache["mean"]) / cache["std"])
  predictions = np.argmax(x @ ridge_weights(cache, l2), axis=1)
  return float(np.mean(predictions == np.asarray(y)))


def probe(train_x, train_y, heldout_x, heldout_y, test_x, test_y,
          num_classes: int, l2_regs: Sequence[float] = DEFAULT_L2_REGS
          ) -> tuple[float, float]:
  """(test top-1, the chosen l2): the l2 with the best held-out accuracy
  (ties: the strongest regularisation)."""
  cache = ridge_cache(train_x, train_y, num_classes)
  scores = [(ridge_accuracy(cache, heldout_x, heldout_y, l2), l2)
            for l2 in sorted(l2_regs)]
  best = max(score for score, _ in scores)
  l2 = max(l2 for score, l2 in scores if score == best)
  return ridge_accuracy(cache, test_x, test_y, l2), l2


def split_pool(labels: np.ndarray, num_classes: int, max_shots: int,
               heldout_per_class: int) -> tuple[np.ndarray, np.ndarray]:
  """Pool rows -> (shot order [C, max_shots], held-out rows).

  Per class, in pool order: the first `max_shots` rows are the shots (k-shot
  uses the first k of them, so the sets are nested) and the next
  `heldout_per_class` rows choose the regularisation.

  >>> shots, heldout = split_pool(np.array([0, 1, 0, 1, 0, 1]), 2, 2, 1)
  >>> shots.tolist(), heldout.tolist()
  ([[0, 2], [1, 3]], [4, 5])
  """
  shots, heldout = [], []
  need = max_shots + heldout_per_class
  for c in range(num_classes):
    rows = np.flatnonzero(labels == c)
    if len(rows) < need:
      raise UserError(
          f"class {c} has {len(rows)} examples in the few-shot pool, fewer than "
          f"{max_shots} shots + {heldout_per_class} held out.")
    shots.append(rows[:max_shots])
    heldout.append(rows[max_shots:need])
  return np.stack(shots), np.concatenate(heldout)


# ----------------------------------------------------------------------------
# Features, sharded over the data mesh
# ----------------------------------------------------------------------------

def make_feature_step(model: NFNet, mesh: Mesh):
  """jitted `(params, batch) -> (features [B, D], label [B], mask [B])`, the
  model applied per device under `shard_map` (as the eval step), outputs
  sharded along `data`."""

  def per_device(params, batch):
    _, features = model.apply({"params": params},
                              normalize_images(batch["image"], model.dtype),
                              is_training=False, return_features=True)
    return features, batch["label"], batch["mask"]

  return jax.jit(jax.shard_map(per_device, mesh=mesh,
                               in_specs=(P(), P(DATA_AXIS)),
                               out_specs=P(DATA_AXIS), check_vma=False))


def extract_features(feature_step, params, batches: Iterable[dict],
                     mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
  """(features float32 [N, D], labels [N]) of the real (masked-in) examples of
  one pass, gathered onto every process in the same order."""
  features, labels = [], []
  for host_batch in batches:
    batch = {k: host_batch[k] for k in ("image", "label", "mask")}
    out = feature_step(params, to_global_batch(batch, mesh))
    f, y, mask = multihost_utils.process_allgather(out, tiled=True)
    mask = np.asarray(mask, bool)
    features.append(np.asarray(f, np.float32)[mask])
    labels.append(np.asarray(y)[mask])
  if not features:
    raise UserError("A few-shot split yielded no batches.")
  return np.concatenate(features), np.concatenate(labels)


@dataclasses.dataclass
class FewShotSet:
  """One downstream set: eval-style batches of its pool and its test split."""

  name: str
  num_classes: int
  pool: Iterable[dict]   # max(shots) + heldout_per_class examples per class
  test: Iterable[dict]   # the whole test split, each example once


def run_probes(feature_step, params, sets: Sequence[FewShotSet],
               shots: Sequence[int], heldout_per_class: int, mesh: Mesh,
               l2_regs: Sequence[float] = DEFAULT_L2_REGS,
               log=None) -> dict[str, float]:
  """{'fewshot/<name>_<k>shot': test top-1} for every set and shot count."""
  results: dict[str, Any] = {}
  for fewshot_set in sets:
    pool_x, pool_y = extract_features(feature_step, params, fewshot_set.pool, mesh)
    test_x, test_y = extract_features(feature_step, params, fewshot_set.test, mesh)
    order, heldout = split_pool(pool_y, fewshot_set.num_classes, max(shots),
                                heldout_per_class)
    for k in sorted(shots):
      rows = order[:, :k].reshape(-1)
      accuracy, l2 = probe(pool_x[rows], pool_y[rows], pool_x[heldout],
                           pool_y[heldout], test_x, test_y,
                           fewshot_set.num_classes, l2_regs)
      results[metric_name(fewshot_set.name, k)] = accuracy
      if log:
        log(f"{metric_name(fewshot_set.name, k)} {accuracy:.2%} (l2 {l2:g}, "
            f"{len(test_y)} test examples)")
  return results
