"""Look at a source before spending a pod-day on it.

    python -m data.inspect SOURCE [--check] [--json] [--write-info] [--sample N]

prints the number of examples, the number of classes (from the metadata, else
the largest label + 1; and the number seen), whether it is multi-label (from
the metadata, else whether any example scanned holds other than one label),
and labels per example (from an evenly spaced sample of ``--sample`` records, all of them with ``--check`` or
``--sample 0``). ``--check`` reads, parses and fully decodes every record, in
``--workers`` processes, and lists every corrupt record by file and record
index; the command then exits with status 1. Records whose labels do not fit
the source (out of range, several in a single-label source) are listed, and
make the status 1, whenever they are among the records scanned. ``--json`` prints one JSON object
instead of text, with at least ``num_examples``, ``num_classes`` and
``corrupt`` (a list of ``{"file", "index", "position", "error"}``; ``index``
is the record's index inside ``file``, ``position`` its index in the source).
``--write-info`` scans all labels and writes ``dataset_info.json`` beside the
shards (num_classes = largest label + 1), so loaders need no extra options.

Examples::

    python -m data.inspect 'tfrecord:/data/in21k/train-*' --check --workers 16
    python -m data.inspect tfds:imagenet2012/validation --json
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import sys
from typing import Any, Optional, Sequence

import numpy as np

from data import cli
from data import dataset_info
from data import decode
from data import progress
from data import sources as sources_lib

_CHUNK = 500
_worker_source: Optional[sources_lib.Source] = None


def _init_worker(source: sources_lib.Source) -> None:
  global _worker_source
  _worker_source = source


def _record_problem(source: sources_lib.Source, position: int, record: sources_lib.Record,
                    decode_images: bool) -> Optional[str]:
  labels = record.labels
  num_classes = source.num_classes
  if num_classes and labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    return f"label(s) {labels.tolist()} outside [0, {num_classes})"
  if not source.multi_label and labels.size != 1 and num_classes:
    return f"{labels.size} labels in a single-label source"
  if decode_images:
    try:
      decode.decode_rgb(record.image)
    except decode.ImageDecodeError as e:
      return str(e)
  return None


def _scan(job: tuple[list, bool]) -> dict[str, Any]:
  """Scans the given positions: label statistics and (optionally) corrupt records."""
  positions, decode_images = job
  source = _worker_source
  labels_per_example = collections.Counter()
  class_counts = collections.Counter()
  corrupt = []
  for position in positions:
    try:
      record = source[position]
      problem = _record_problem(source, position, record, decode_images)
    except sources_lib.CorruptRecordError as e:
      record, problem = None, e.reason
    if problem:
      location = source.locate(position)
      corrupt.append({"file": location.path, "index": location.index,
                      "position": int(position), "error": problem})
    if record is not None:
      labels_per_example[int(record.labels.size)] += 1
      class_counts.update(int(label) for label in record.labels)
  return {"labels_per_example": labels_per_example, "class_counts": class_counts,
          "corrupt": corrupt, "scanned": len(positions)}


def _positions(num_examples: int, sample: int) -> np.ndarray:
  if sample <= 0 or sample >= num_examples:
    return np.arange(num_examples)
  return np.unique(np.linspace(0, num_examples - 1, sample).astype(np.int64))


def inspect_source(source: sources_lib.Source, *, check: bool = False, sample: int = 10000,
                   workers: int = 1, show_progress: bool = False) -> dict[str, Any]:
  """The report printed by the command line, as a dict."""
  positions = _positions(len(source), 0 if check else sample)
  chunks = [(positions[i:i + _CHUNK].tolist(), check)
            for i in range(0, len(positions), _CHUNK)]
  labels_per_example = collections.Counter()
  class_counts = collections.Counter()
  corrupt = []
  bar = progress.progress_bar(len(positions), "Checking" if check else "Scanning labels",
                              show=show_progress)
  if workers > 1 and len(chunks) > 1:
    pool = multiprocessing.get_context("spawn").Pool(
        min(workers, len(chunks)), initializer=_init_worker, initargs=(source,))
    results = pool.imap(_scan, chunks)
  else:
    pool = None
    _init_worker(source)
    results = map(_scan, chunks)
  with bar:
    for result in results:
      labels_per_example.update(result["labels_per_example"])
      class_counts.update(result["class_counts"])
      corrupt.extend(result["corrupt"])
      bar.update(result["scanned"])
  if pool is not None:
    pool.close()
    pool.join()
  counts = np.asarray(sorted(labels_per_example.elements()), np.int64)
  max_label = max(class_counts) if class_counts else None
  return {
      "source": source.spec,
      "num_examples": len(source),
      # The metadata's count when there is one, else what the labels imply.
      "num_classes": source.num_classes or (max_label + 1 if max_label is not None else None),
      "num_classes_from": "metadata" if source.num_classes else "labels",
      # The metadata's kind when it says; else what the labels show (several
      # or none on one example), as --write-info records it.
      "multi_label": (source.multi_label if source.num_classes
                      else labels_look_multi_label(labels_per_example)),
      "multi_label_from": "metadata" if source.num_classes else "labels",
      "observed_num_classes": len(class_counts),
      "max_label": max_label,
      "scanned": int(len(positions)),
      "labels_per_example": {
          "min": int(counts.min()) if counts.size else None,
          "mean": float(counts.mean()) if counts.size else None,
          "max": int(counts.max()) if counts.size else None,
          "histogram": {str(k): v for k, v in sorted(labels_per_example.items())},
      },
      "checked": check,
      "corrupt": corrupt,
  }


def labels_look_multi_label(labels_per_example) -> bool:
  """Whether examples hold other than exactly one label (several, or none),
  given the numbers of labels per example seen (a histogram's keys)."""
  return any(int(count) != 1 for count in labels_per_example)


def _info_directory(source: sources_lib.Source) -> str:
  paths = getattr(source, "paths", None)
  if not paths:
    raise ValueError(f"--write-info needs a file-based source (arrayrecord/tfrecord), "
                     f"not {source.spec}.")
  directories = {os.path.dirname(os.path.abspath(p)) for p in paths}
  if len(directories) != 1:
    raise ValueError(f"--write-info needs the shards in one directory; got {sorted(directories)}.")
  return directories.pop()


def write_info_from_report(source: sources_lib.Source, report: dict[str, Any]) -> str:
  directory = _info_directory(source)
  if report["max_label"] is None:
    raise ValueError(f"{source.spec}: no labels found in the {report['scanned']} "
                     "records scanned, so the class count cannot be inferred; "
                     "write dataset_info.json by hand (num_classes, multi_label).")
  info = dataset_info.read_info(directory) or {}
  multi_label = labels_look_multi_label(report["labels_per_example"]["histogram"])
  info.update(num_classes=int(report["max_label"]) + 1, multi_label=multi_label,
              image_key=getattr(source, "image_key", None),
              label_key=getattr(source, "label_key", None))
  return dataset_info.write_info(directory, info)


def _print_text(report: dict[str, Any]) -> None:
  per = report["labels_per_example"]
  print(f"source:              {report['source']}")
  print(f"examples:            {report['num_examples']}")
  print(f"classes:             {report['num_classes']} (from the {report['num_classes_from']}); "
        f"{report['observed_num_classes']} seen in {report['scanned']} records, "
        f"largest label {report['max_label']}")
  print(f"multi-label:         {report['multi_label']} (from the {report['multi_label_from']})")
  print(f"labels per example:  min {per['min']}, mean {per['mean']:.3f}, max {per['max']}"
        if per["min"] is not None else "labels per example:  (nothing scanned)")
  # Label problems (a label out of range, several in a single-label source)
  # are found while scanning, with or without --check: always list them.
  if report["checked"] or report["corrupt"]:
    print(f"corrupt records:     {len(report['corrupt'])}"
          + ("" if report["checked"] else f" (in the {report['scanned']} scanned)"))
    for item in report["corrupt"]:
      print(f"  {item['file']} [record {item['index']}] (position {item['position']}): "
            f"{item['error']}")


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m data.inspect", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  cli.add_source_arguments(parser)
  parser.add_argument("--check", action="store_true",
                      help="decode every record and list the corrupt ones")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("--write-info", action="store_true",
                      help="scan all labels and write dataset_info.json beside the shards")
  parser.add_argument("--sample", type=int, default=10000,
                      help="records scanned for label statistics without --check (0 = all)")
  parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
  args = parser.parse_args(argv)
  try:
    source = sources_lib.open_source(args.source, **cli.source_options(args))
  except (FileNotFoundError, ValueError, TypeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  report = inspect_source(source, check=args.check, sample=0 if args.write_info else args.sample,
                          workers=args.workers, show_progress=True)
  if args.write_info:
    try:
      path = write_info_from_report(source, report)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    print(f"wrote {path}", file=sys.stderr)
  if args.json:
    print(json.dumps(report))
  else:
    _print_text(report)
  return 1 if report["corrupt"] else 0


if __name__ == "__main__":
  sys.exit(main())
