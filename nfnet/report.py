"""Compare finished runs: a results table and a PNG of their curves.

    python -m nfnet.report table  pretrained=/tmp/ft scratch=/tmp/scratch
    python -m nfnet.report plot   --out curves.png pretrained=/tmp/ft scratch=/tmp/scratch

Each NAME=WORKDIR names a workdir written by pretrain/main.py or
finetune/main.py: the table reads its results.json, the plot its TensorBoard
events (the same scalars TensorBoard shows).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

RESULTS_FILE = "results.json"
PLOTTED = ("loss", "eval/top1", "eval_ema/top1", "learning_rate")


def read_results(workdir: str) -> dict:
  path = os.path.join(workdir, RESULTS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: the run in {workdir} has "
                            "not finished.")
  with open(path) as f:
    return json.load(f)


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{tag: (steps, values)} from the workdir's TensorBoard events."""
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util
  accumulator = event_accumulator.EventAccumulator(
      os.path.join(workdir, "tensorboard"),
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


def format_table(runs: dict[str, str]) -> str:
  rows = [("run", "steps", "top-1", "top-1 (EMA)", "top-5")]
  for name, workdir in runs.items():
    r = read_results(workdir)
    pct = lambda k: f"{100 * r[k]:.1f}%" if k in r else "-"
    rows.append((name, str(r.get("step", "-")), pct("eval/top1"),
                 pct("eval_ema/top1"), pct("eval/top5")))
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


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
      print(format_table(runs))
    else:
      plot_curves(runs, args.out)
      print(f"wrote {args.out}")
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
