r"""Evaluate trained weights on a labelled set at one or several resolutions.

    python -m finetune.evaluate --weights /ckpt/f0_flowers \
        --data folder:/data/flowers/val --resolution 224,288,320 [--ema] [--json]

`--weights` is anything `nfnet.load` reads (our workdir or checkpoint, a
`python -m nfnet.convert` output, DeepMind's `*_haiku.npz`, a timm file);
`--ema` takes a checkpoint's EMA weights. `--data` is any source string
(`arrayrecord:GLOB`, `tfrecord:GLOB`, `tfds:NAME/SPLIT`, `folder:PATH`).
For each resolution S the images get the training runs' own eval transform
(data/transforms.py: the whole image resized, then the centre S x S crop,
keeping the fraction of each side the run's `eval_crop_fraction` kept, or
`--eval-crop-fraction`; the default rule, 87.5% below 224 px and the paper's
S / (S + 32) from there, for imported weights), and top-1 / top-5 are counted
over every example exactly once, with any number of devices and hosts (the
last batch is padded and masked). On multi-label data the numbers are
precision@1 and hit@5 (a true label among the five best) against each
image's label set. Without `--resolution` the weights' own eval resolution is
used (a run's, or the released variant's test resolution). Labels are read
under the run's `data.label_key` unless `--label-key` says otherwise, and raw
shards with no dataset_info.json with the head's class count, multi-label as
the run's training source was (`--multi-label` / `--no-multi-label`
override). A set whose class names differ from the run's is refused (its
labels would mean other classes) unless `--ignore-class-names` says label i
is the run's class i all the same; an unreadable record stops the command
unless the run skipped them or `--skip-corrupt` is given.

The paper evaluates at a higher resolution than it trains (F0: 192 -> 256):
sweeping `--resolution` finds the best one for a given set of weights.

`--flip-average` also scores each image by the mean of its and its
left-right mirror image's class probabilities (`flip_top1`, `flip_top5`,
beside the plain scores; twice the compute), as runs with
`eval_flip_average` do.

One line per resolution; with `--json` one JSON object per line:
    {"weights": ..., "ema": false, "data": ..., "resolution": 224,
     "crop_fraction": 0.875, "examples": 50000, "corrupt_skipped": 0,
     "top1": 0.836, "top5": 0.968, "multi_label": false, "seconds": 41.2}

Many hosts: run the same command on every host with `--distributed` (or
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID set); each reads
its share of the split and process 0 prints.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Iterable, Iterator, Sequence

import jax

import nfnet
from data import loader, sources, transforms
from data.progress import progress_bar
from nfnet.errors import UserError
from nfnet.train import cli, evaluation, parallel, training
from nfnet.train.metrics import quiet_library_logs


def parse_resolutions(text: str) -> list[int]:
  """'224,288, 320' -> [224, 288, 320]; refuses anything but positive ints.

  >>> parse_resolutions("224,320")
  [224, 320]
  """
  try:
    values = [int(part) for part in text.split(",") if part.strip()]
  except ValueError:
    raise UserError(f"--resolution must be comma-separated integers, got "
                     f"{text!r}.") from None
  if not values or min(values) <= 0:
    raise UserError(f"--resolution needs positive sizes, got {text!r}.")
  return values


def with_progress(batches: Iterable[dict], total: int, label: str,
                  show: bool) -> Iterator[dict]:
  """Yields `batches`, printing a progress line on stderr when `show`."""
  if not show:
    yield from batches
    return
  with progress_bar(total, label, unit="batches") as bar:
    for batch in batches:
      yield batch
      bar.update()


def run_data_config(info: dict[str, Any]) -> dict[str, Any]:
  """The run's `config.data` as a dict ({} for imported weights)."""
  return (info.get("config") or {}).get("data") or {}


def open_eval_source(data: str, model, info: dict[str, Any],
                     label_key: str | None,
                     multi_label: bool | None = None) -> sources.Source:
  """The labelled set, its labels under `label_key` (None: the run's
  `data.label_key`, else the source's default); raw shards that do not say
  their label space are read in the weights' own: the head's class count,
  multi-label when `multi_label` says so (None: as the run's training source
  was, else its `data.multi_label`)."""
  run_data = run_data_config(info)
  label_key = label_key or run_data.get("label_key")
  options = sources.options_for(data, label_key=label_key)
  source = sources.open_source(data, **options)
  if source.num_classes is None:
    if multi_label is None:
      multi_label = info.get("multi_label")
    if multi_label is None:
      multi_label = bool(run_data.get("multi_label"))
    source = sources.open_source(data, **options, num_classes=model.num_classes,
                                 multi_label=multi_label)
  return source


def check_label_space(source: sources.Source, model,
                      label_names: list | None = None) -> None:
  """The head must score exactly the source's classes: as many, and where the
  run recorded its class names (`label_names`; None skips this) and the
  source names its own, the same ones in the same order."""
  if source.num_classes != model.num_classes:
    raise UserError(
        f"{source.spec} has {source.num_classes} classes but the weights' head "
        f"has {model.num_classes}: evaluate on the set the head was trained "
        "for (or fine-tune a new head on this one first).")
  differs = sources.class_names_differ(label_names, source.label_names)
  if differs:
    raise UserError(
        f"{source.spec} does not name the weights' classes in their order "
        f"{differs}, so its labels would be scored as other classes. Evaluate "
        "on a set with the training set's classes (an empty folder for a "
        "class with no images), or, where its label i does mean the run's "
        "class i (say, folders named by class index), pass "
        "--ignore-class-names.")


def evaluate_weights(weights: str, data: str, resolutions: Sequence[int] | None,
                     *, ema: bool = False, batch_size: int = 128,
                     eval_crop_fraction: float | None = None,
                     label_key: str | None = None, num_workers: int = 0,
                     flip_average: bool = False,
                     multi_label: bool | None = None,
                     skip_corrupt: bool | None = None,
                     check_class_names: bool = True,
                     show_progress: bool = False) -> list[dict[str, Any]]:
  """One result dict per resolution (the JSON objects the command prints).

  `eval_crop_fraction` None: the run's own (`info["eval_crop_fraction"]`).
  `flip_average`: add `flip_top1` / `flip_topK`, each image scored by the mean
  of its and its mirror image's class probabilities. `multi_label` (raw
  shards only) and `skip_corrupt` None: as the run had them.
  `check_class_names` False: score label i as the run's class i whatever the
  set calls it.
  """
  model, params, info = nfnet.load(weights, ema=ema)
  crop_fraction = eval_crop_fraction or info["eval_crop_fraction"]
  resolutions = list(resolutions or [])
  if not resolutions:
    if not info["eval_resolution"]:
      raise UserError(f"{weights} does not say which resolution it was "
                       "evaluated at; pass --resolution.")
    resolutions = [info["eval_resolution"]]
  mesh = parallel.make_data_mesh()
  parallel.check_batch_divisible(batch_size, mesh)
  source = open_eval_source(data, model, info, label_key, multi_label)
  if skip_corrupt is None:
    skip_corrupt = bool(run_data_config(info).get("skip_corrupt"))
  check_label_space(source, model,
                    info["label_names"] if check_class_names else None)
  eval_step = training.make_eval_step(model, mesh, flip_average=flip_average,
                                      loss=info["loss"])
  device_params = parallel.replicate(params, mesh)
  results = []
  for resolution in resolutions:
    start = time.perf_counter()
    transform = transforms.TransformConfig(resolution,
                                           eval_crop_fraction=crop_fraction)
    batches = loader.make_eval_loader(
        source, global_batch_size=batch_size, resolution=resolution,
        process_index=jax.process_index(), process_count=jax.process_count(),
        num_workers=num_workers, transform_config=transform,
        skip_corrupt=skip_corrupt)
    shown = with_progress(batches, batches.num_steps, f"{resolution} px",
                          show_progress and jax.process_index() == 0)
    metrics = evaluation.evaluate(eval_step, {"eval": device_params}, shown, mesh)
    results.append({
        "weights": weights, "ema": ema, "data": data, "resolution": resolution,
        "crop_fraction": round(transform.eval_crop_fraction_for(), 4),
        "examples": int(metrics["eval/examples"]),
        "corrupt_skipped": evaluation.corrupt_records_skipped(batches),
        **scores_of(metrics, "eval/top"), **scores_of(metrics, "eval/flip_top"),
        "multi_label": source.multi_label,
        "seconds": round(time.perf_counter() - start, 2)})
  return results


def scores_of(metrics: dict[str, float], prefix: str) -> dict[str, float]:
  """{'top1': ..., 'top5': ...} from the `eval/...` keys starting with `prefix`."""
  return {key.split("/")[1]: value for key, value in sorted(metrics.items())
          if key.startswith(prefix)}


def metric_name(key: str, multi_label: bool) -> str:
  """'top5' -> 'top-5'; on multi-label data 'precision@1' and 'hit@5';
  'flip_top1' -> 'flip-averaged top-1'."""
  if key.startswith("flip_"):
    return "flip-averaged " + metric_name(key[len("flip_"):], multi_label)
  k = key[len("top"):]
  if not multi_label:
    return f"top-{k}"
  return "precision@1" if k == "1" else f"hit@{k}"


def format_result(result: dict[str, Any]) -> str:
  """'256 px, crop 0.889: top-1 83.60%  top-5 96.80%  (50,000 examples, 41.2s)'."""
  scores = "  ".join(f"{metric_name(key, result['multi_label'])} {value:.2%}"
                     for key, value in result.items()
                     if key.startswith(("top", "flip_top")))
  skipped = (f", {result['corrupt_skipped']:,} corrupt records skipped"
             if result.get("corrupt_skipped") else "")
  return (f"{result['resolution']} px, crop {result['crop_fraction']:.3f}: {scores}  "
          f"({result['examples']:,} examples{skipped}, {result['seconds']:.1f}s)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m finetune.evaluate",
      description="Top-1 / top-5 of trained weights on a labelled set, at one "
      "or several resolutions, every example counted once.")
  parser.add_argument("--weights", required=True,
                      help="workdir / checkpoint of ours, nfnet.convert output, "
                      "*_haiku.npz or timm .safetensors/.pth")
  parser.add_argument("--data", required=True,
                      help="source: arrayrecord:GLOB, tfrecord:GLOB, "
                      "tfds:NAME/SPLIT or folder:PATH")
  parser.add_argument("--resolution", type=parse_resolutions, default=None,
                      help="comma-separated eval sizes, e.g. 224,288,320 "
                      "(default: the weights' eval resolution)")
  parser.add_argument("--eval-crop-fraction", type=float, default=None,
                      help="fraction of each side the centre crop keeps "
                      "(default: the run's own; 1.0: the whole image)")
  parser.add_argument("--flip-average", action="store_true",
                      help="also score each image by the mean of its and its "
                      "mirror image's class probabilities (flip_top1)")
  parser.add_argument("--ema", action="store_true",
                      help="evaluate the checkpoint's EMA weights")
  parser.add_argument("--json", action="store_true",
                      help="one JSON object per resolution")
  parser.add_argument("--batch-size", type=int, default=128,
                      help="global batch (a multiple of the device count)")
  parser.add_argument("--label-key", default=None,
                      help="label feature of tf.train.Example shards "
                      "(default: the run's data.label_key, else the source's)")
  parser.add_argument("--multi-label", action=argparse.BooleanOptionalAction,
                      default=None,
                      help="read raw shards without dataset_info.json as "
                      "multi-label (default: as the run's training source was)")
  parser.add_argument("--skip-corrupt", action=argparse.BooleanOptionalAction,
                      default=None,
                      help="skip and count unreadable records instead of "
                      "stopping (default: the run's data.skip_corrupt)")
  parser.add_argument("--ignore-class-names", action="store_true",
                      help="score the set's label i as the run's class i even "
                      "where the names differ (e.g. folders named by index)")
  parser.add_argument("--num-workers", type=int, default=0,
                      help="decoding worker processes per host")
  parser.add_argument("--distributed", action="store_true", default=None,
                      help="call jax.distributed.initialize() (default: when "
                      "JAX_COORDINATOR_ADDRESS is set)")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  quiet_library_logs()
  parallel.maybe_initialize_distributed(args.distributed)
  try:
    results = evaluate_weights(
        args.weights, args.data, args.resolution, ema=args.ema,
        batch_size=args.batch_size,
        eval_crop_fraction=args.eval_crop_fraction, label_key=args.label_key,
        num_workers=args.num_workers, flip_average=args.flip_average,
        multi_label=args.multi_label, skip_corrupt=args.skip_corrupt,
        check_class_names=not args.ignore_class_names, show_progress=True)
  except cli.USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if jax.process_index() == 0:
    for result in results:
      print(json.dumps(result) if args.json else format_result(result), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
