"""A finished run's results: results.json, results tables and curve plots.

    python -m nfnet.train.results table  pretrained=/tmp/ft scratch=/tmp/scratch
    python -m nfnet.train.results plot   --out curves.png pretrained=/tmp/ft scratch=/tmp/scratch

Each NAME=WORKDIR names a workdir written by pretrain/main.py or
finetune/main.py: the table reads its results.json (written by process 0
when the run reaches its last step), the plot its TensorBoard events (the
same scalars TensorBoard shows). The recipes' table (`python -m recipes`)
uses the same reader and the same table layout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Mapping, Sequence

import numpy as np
from etils import epath

RESULTS_FILE = "results.json"
PLOTTED = ("loss", "eval/top1", "eval_ema/top1", "learning_rate")


def write_results(workdir: str, step: int, metrics: Mapping[str, float]) -> None:
  """The finished run's final eval metrics (local paths and gs:// alike).
  Call on process 0 only."""
  (epath.Path(workdir) / RESULTS_FILE).write_text(
      json.dumps({"step": step, **metrics}, indent=2))


def read_results(workdir: str, *, required: bool = False) -> dict:
  """What results.json says; {} before the run finished, or an error naming
  the file when `required`."""
  path = epath.Path(workdir) / RESULTS_FILE
  if not path.exists():
    if required:
      raise FileNotFoundError(f"{path} does not exist: the run in {workdir} "
                              "has not finished.")
    return {}
  return json.loads(path.read_text())


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{tag: (steps, values)} from the workdir's TensorBoard events."""
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util
  events_dir = os.path.join(workdir, "tensorboard")
  if not epath.Path(events_dir).is_dir():
    raise FileNotFoundError(f"{events_dir} does not exist: is {workdir} a "
                            "run's workdir?")
  accumulator = event_accumulator.EventAccumulator(
      events_dir,
      size_guidance={event_accumulator.TENSORS: 0,
                     event_accumulator.SCALARS: 0})
  accumulator.Reload()
  curves = {}
  for tag in accumulator.Tags()["tensors"]:
    events = accumulator.Tensors(tag)
    values = [tensor_util.make_ndarray(e.tensor_proto) for e in events]
    if all(np.ndim(v) == 0 and np.issubdtype(np.asarray(v).dtype, np.number)
           for v in values):
      curves[tag] = (np.array([e.step for e in events]),
                     np.array(values, dtype=np.float64))
  return curves


def format_table(rows: Sequence[Mapping[str, str]]) -> str:
  """Rows of equal keys -> an aligned plain-text table under a dashed rule."""
  if not rows:
    return ""
  columns = list(rows[0])
  widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
  lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
  lines.append("  ".join("-" * widths[c] for c in columns))
  lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in rows]
  return "\n".join(line.rstrip() for line in lines)


def format_metrics(metrics: Mapping[str, float]) -> str:
  """{'eval/top1': 0.81, ...} -> 'eval/top1 81.00%, ...' (counts stay counts)."""
  is_accuracy = lambda key: key.rsplit("/", 1)[-1].startswith(("top", "flip_top"))
  return ", ".join(f"{k} {v:.2%}" if is_accuracy(k) else f"{k} {v:g}"
                   for k, v in sorted(metrics.items()))


def runs_table(runs: Mapping[str, str]) -> str:
  """NAME -> WORKDIR of finished runs -> their steps and top-1/top-5 table."""
  rows = []
  results = {name: read_results(workdir, required=True)
             for name, workdir in runs.items()}
  # Runs with eval_flip_average also get the flip-averaged top-1.
  any_flip = any("eval/flip_top1" in r for r in results.values())
  for name, r in results.items():
    pct = lambda k: f"{100 * r[k]:.1f}%" if k in r else "-"
    # With fewer than 5 classes the metric is top-k over all of them.
    topk = next((f"eval/top{k}" for k in range(5, 1, -1)
                 if f"eval/top{k}" in r), "eval/top5")
    row = {"run": name, "steps": str(r.get("step", "-")),
           "top-1": pct("eval/top1"), "top-1 (EMA)": pct("eval_ema/top1"),
           "top-5": pct(topk)}
    if any_flip:
      row["top-1 (flip-averaged)"] = pct("eval/flip_top1")
    rows.append(row)
  return format_table(rows)


def plot_curves(runs: dict[str, str], out: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4.2 * len(PLOTTED), 3.4))
  for name, workdir in runs.items():
    curves = read_scalars(workdir)
    for ax, tag in zip(axes, PLOTTED):
      if tag in curves:
        steps, values = curves[tag]
        ax.plot(steps, values, marker="o" if len(steps) < 20 else None,
                label=name)
  for ax, tag in zip(axes, PLOTTED):
    ax.set_title(tag)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(out, dpi=110)


def _parse_runs(items: list[str]) -> dict[str, str]:
  runs = {}
  for item in items:
    name, sep, workdir = item.partition("=")
    if not sep:
      raise SystemExit(f"error: expected NAME=WORKDIR, got {item!r}")
    runs[name] = workdir
  return runs


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("command", choices=("table", "plot"))
  parser.add_argument("runs", nargs="+", metavar="NAME=WORKDIR")
  parser.add_argument("--out", default="curves.png", help="PNG path (plot)")
  args = parser.parse_args(argv)
  runs = _parse_runs(args.runs)
  try:
    if args.command == "table":
      print(runs_table(runs))
    else:
      plot_curves(runs, args.out)
      print(f"wrote {args.out}")
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
