"""Convert a TFRecord corpus, an image folder or a TFDS split to ArrayRecord shards.

    python -m data.convert SOURCE --out DIR [--split train] [--num-shards N]
        [--workers N] [--skip-corrupt] [source options]

writes ``DIR/<split>-NNNNN-of-MMMMM.array_record`` (records in source order,
split contiguously over the shards) and adds the split to ``DIR/dataset_info.json``
(num_classes, multi_label, label names when the source knows them). Records
are written as canonical ``tf.train.Example`` s (``image/encoded``,
``image/class/label``, ``image/id``); the encoded image bytes are copied, not
re-encoded. Shards are written in ``--workers`` processes with a progress line.

Restartable: a shard is written under a temporary name and renamed when
complete, and what it holds (its source range, records written and skipped)
is recorded in ``DIR/.convert/``, so re-running the same command skips
finished shards (their record counts are verified against that record, with
``--skip-corrupt`` too) and redoes only the rest. Before any
record is written the command refuses an ``--out`` holding the split's shards
of another shard count (``split-*`` would read both) or a dataset_info.json
with another class count.

Examples::

    python -m data.convert 'tfrecord:/data/in21k/train-*' --out /data/in21k_ar --num-shards 1024
    python -m data.convert folder:/data/flowers/train --out /data/flowers_ar --split train
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

from data import cli
from data import dataset_info
from data import progress
from data import sources as sources_lib
from data import tf_example
from data.errors import DataError

SUFFIX = ".array_record"
_worker: dict[str, Any] = {}


def shard_path(out_dir: str, split: str, shard: int, num_shards: int) -> str:
  return os.path.join(out_dir, f"{split}-{shard:05d}-of-{num_shards:05d}{SUFFIX}")


def done_path(shard: str) -> str:
  """Where a finished shard's record is kept: beside the shards, hidden, so
  the split's pattern never reads it."""
  return os.path.join(os.path.dirname(shard), ".convert", os.path.basename(shard) + ".json")


def _record_done(shard: str, start: int, stop: int, written: int,
                 skipped: list[str]) -> None:
  os.makedirs(os.path.dirname(done_path(shard)), exist_ok=True)
  with open(done_path(shard), "w", encoding="utf-8") as f:
    json.dump({"start": start, "stop": stop, "written": written, "skipped": skipped}, f)


def finished_shard(shard: str, start: int, stop: int) -> Optional[dict[str, Any]]:
  """What an earlier run recorded for `shard` if it wrote exactly the records
  [start, stop) (its record count checked), else None: redo it."""
  if not os.path.exists(shard):
    return None
  try:
    with open(done_path(shard), encoding="utf-8") as f:
      done = json.load(f)
  except (OSError, ValueError):
    # Shards written before this record existed: whole when every record is.
    done = {"start": start, "stop": stop, "written": stop - start, "skipped": []}
  if (done.get("start"), done.get("stop")) != (start, stop):
    return None
  return done if _count_records(shard) == done["written"] else None


def _count_records(path: str) -> int:
  from array_record.python.array_record_module import ArrayRecordReader  # pylint: disable=import-outside-toplevel
  reader = ArrayRecordReader(path)
  try:
    return reader.num_records()
  finally:
    reader.close()


def canonical_example(record: sources_lib.Record) -> bytes:
  features = {"image/encoded": bytes(record.image), "image/class/label": record.labels}
  if record.id is not None:
    features["image/id"] = record.id
  return tf_example.serialize_example(features)


def _init_worker(source: sources_lib.Source, counter, skip_corrupt: bool) -> None:
  _worker.update(source=source, counter=counter, skip_corrupt=skip_corrupt)


def _write_shard(job: tuple[str, int, int]) -> tuple[str, int, list[str]]:
  """Writes source records [start, stop) to ``path``; returns (path, written, skipped)."""
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=import-outside-toplevel
  path, start, stop = job
  source, counter = _worker["source"], _worker["counter"]
  tmp = path + ".tmp"
  writer = ArrayRecordWriter(tmp, "group_size:1")
  written, skipped, pending = 0, [], 0
  try:
    for position in range(start, stop):
      try:
        writer.write(canonical_example(source[position]))
        written += 1
      except sources_lib.CorruptRecordError as e:
        if not _worker["skip_corrupt"]:
          raise
        skipped.append(f"{e.location}: {e.reason}")
      pending += 1
      if pending == 100:
        with counter.get_lock():
          counter.value += pending
        pending = 0
  finally:
    writer.close()
  with counter.get_lock():
    counter.value += pending
  os.replace(tmp, path)
  _record_done(path, start, stop, written, skipped)
  return path, written, skipped


def plan_shards(num_examples: int, num_shards: int) -> list[tuple[int, int]]:
  bounds = np.linspace(0, num_examples, num_shards + 1).astype(np.int64)
  return [(int(bounds[i]), int(bounds[i + 1])) for i in range(num_shards)]


def convert(source: sources_lib.Source, out_dir: str, *, split: str = "train",
            num_shards: Optional[int] = None, workers: int = 1, skip_corrupt: bool = False,
            show_progress: bool = True) -> dict[str, Any]:
  """Converts ``source``; returns ``{"written", "skipped", "reused_shards", "shards"}``."""
  os.makedirs(out_dir, exist_ok=True)
  num_shards = num_shards or max(1, min(1024, len(source) // 10000 or 1))
  num_shards = max(1, min(num_shards, len(source)))
  ranges = plan_shards(len(source), num_shards)
  paths = [shard_path(out_dir, split, i, num_shards) for i in range(num_shards)]
  # Both refusals come before any record is written, not after hours of it.
  dataset_info.check_no_foreign_shards(out_dir, split, SUFFIX, paths)
  _check_label_space(out_dir, source)
  jobs, reused, skipped = [], 0, []
  for path, (start, stop) in zip(paths, ranges):
    done = finished_shard(path, start, stop)
    if done is not None:  # finished by an earlier run
      reused += 1
      skipped.extend(done["skipped"])
    else:
      jobs.append((path, start, stop))
  context = multiprocessing.get_context("spawn")
  counter = context.Value("q", 0)
  todo = sum(stop - start for _, start, stop in jobs)
  written = 0
  with progress.progress_bar(todo, f"Converting to {out_dir}",
                             show=show_progress) as bar:
    if workers > 1 and len(jobs) > 1:
      with context.Pool(min(workers, len(jobs)), initializer=_init_worker,
                        initargs=(source, counter, skip_corrupt)) as pool:
        pending = pool.map_async(_write_shard, jobs)
        while not pending.ready():
          pending.wait(0.5)
          bar.update(counter.value - bar.n)
        results = pending.get()
    else:
      _init_worker(source, counter, skip_corrupt)
      results = []
      for job in jobs:
        results.append(_write_shard(job))
        bar.update(counter.value - bar.n)
    bar.update(counter.value - bar.n)
  for _, count, skipped_here in results:
    written += count
    skipped.extend(skipped_here)
  _update_info(out_dir, source, split, len(source) - len(skipped))
  return {"written": written, "skipped": skipped, "reused_shards": reused, "shards": paths}


def _check_label_space(out_dir: str, source: sources_lib.Source) -> None:
  """The other splits already in `out_dir` must share the source's classes."""
  info = dataset_info.read_info(out_dir) or {}
  if info.get("num_classes") not in (None, source.num_classes):
    raise DataError(
        f"{dataset_info.info_path(out_dir)} says {info['num_classes']} classes but "
        f"{source.spec} has {source.num_classes}; use another --out.")


def _update_info(out_dir: str, source: sources_lib.Source, split: str,
                 num_examples: Optional[int]) -> None:
  info = dataset_info.read_info(out_dir) or {}
  if source.num_classes is None:
    print("note: the source does not say its number of classes; run `python -m data.inspect "
          f"'arrayrecord:{out_dir}/*{SUFFIX}' --write-info` to record it.", file=sys.stderr)
    return
  info.update(num_classes=source.num_classes, multi_label=source.multi_label,
              image_key="image/encoded", label_key="image/class/label")
  if source.label_names:
    info["label_names"] = list(source.label_names)
  info.setdefault("converted_from", {})[split] = source.spec
  splits = info.setdefault("splits", {})
  entry = {"pattern": f"{split}-*{SUFFIX}"}
  if num_examples is not None:
    entry["num_examples"] = num_examples
  splits[split] = {**splits.get(split, {}), **entry}
  dataset_info.write_info(out_dir, info)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m data.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  cli.add_source_arguments(parser)
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--split", default="train", help="split name used in the shard names")
  parser.add_argument("--num-shards", type=int, default=None,
                      help="default: one per 10,000 records, at most 1024")
  parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
  parser.add_argument("--skip-corrupt", action="store_true",
                      help="skip records that cannot be parsed (listed at the end)")
  args = parser.parse_args(argv)
  try:
    source = sources_lib.open_source(args.source, **cli.source_options(args))
  except (FileNotFoundError, ValueError, TypeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  start = time.perf_counter()
  try:
    result = convert(source, args.out, split=args.split, num_shards=args.num_shards,
                     workers=args.workers, skip_corrupt=args.skip_corrupt)
  except DataError as e:  # a corrupt record, a label space or shards in the way
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"Wrote {result['written']} records to {len(result['shards'])} shards in "
        f"{time.perf_counter() - start:.1f}s ({result['reused_shards']} shards already done). "
        f"Source: arrayrecord:{os.path.join(args.out, args.split)}-*{SUFFIX}")
  for message in result["skipped"]:
    print(f"skipped corrupt record {message}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
