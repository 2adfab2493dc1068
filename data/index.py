"""Build the random-access indexes of TFRecord shards (once per corpus).

    python -m data.index '/data/imagenet21k/train-*.tfrecord' [--index-dir DIR]
        [--workers N] [--check-crc]

Each shard gets ``<shard>.index.npy`` beside it (or in ``--index-dir`` /
``$NFNET_DATA_INDEX_DIR`` / the cache directory when the shard's directory is
read-only); see data/tfrecord.py for the format. Opening a ``tfrecord:``
source builds missing indexes itself, but on a many-host job it is better to
build them once here. The programs look beside the shards and in
``$NFNET_DATA_INDEX_DIR`` (else the cache directory): after ``--index-dir DIR``
run them with ``NFNET_DATA_INDEX_DIR=DIR``. ``--check-crc`` also verifies
every record's checksums and lists the bad ones (the command then exits with
status 1).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from typing import Optional, Sequence

from data import progress
from data import sources
from data import tfrecord


def _index_one(job: tuple[str, Optional[str], bool]) -> tuple[str, int, str, list[str]]:
  path, index_dir, check_crc = job
  where = tfrecord.write_index(path, index_dir)
  offsets = tfrecord.load_index(path, index_dir, build=False)
  bad = []
  if check_crc:
    with open(path, "rb", buffering=0) as f:
      for i in range(len(offsets) - 1):
        try:
          tfrecord.read_record(f.fileno(), int(offsets[i]), int(offsets[i + 1]), True, path, i)
        except tfrecord.TFRecordError as e:
          bad.append(str(e))
  return path, len(offsets) - 1, where, bad


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m data.index", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("pattern", help="glob of TFRecord shards (quote it)")
  parser.add_argument("--index-dir", default=None, help="store indexes here instead of beside")
  parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
  parser.add_argument("--check-crc", action="store_true", help="verify every record's CRCs")
  args = parser.parse_args(argv)
  pattern = args.pattern.removeprefix("tfrecord:")
  try:
    paths = sources.expand_glob(pattern)
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.check_crc and tfrecord.crc32c is tfrecord._crc32c_python:  # pylint: disable=protected-access
    print("note: pure-Python CRC32C (~10 MB/s); `pip install google-crc32c` makes it fast.",
          file=sys.stderr)
  jobs = [(p, args.index_dir, args.check_crc) for p in paths]
  total_records, all_bad = 0, []
  context = multiprocessing.get_context("spawn")
  with progress.progress_bar(len(paths), "Indexing", unit="shards") as bar, \
      context.Pool(max(1, min(args.workers, len(paths)))) as pool:
    for path, count, where, bad in pool.imap_unordered(_index_one, jobs):
      total_records += count
      all_bad.extend(bad)
      bar.update()
  print(f"Indexed {len(paths)} shards, {total_records} records "
        f"(indexes beside the shards or under {tfrecord._cache_dir(args.index_dir)}).")  # pylint: disable=protected-access
  for message in all_bad:
    print(f"bad record: {message}")
  return 1 if all_bad else 0


if __name__ == "__main__":
  sys.exit(main())
