"""``dataset_info.json``: what a directory of shards holds, written beside the shards.

The loader needs a source's number of classes and whether it is multi-label
before it reads a record; for a huge TFRecord/ArrayRecord corpus that must not
require a scan. ``data.synthetic`` and ``data.convert`` write this file;
``python -m data.inspect SOURCE --write-info`` writes it for shards made
elsewhere (after one pass over the labels). Format (all keys optional except
``num_classes``)::

    {
      "name": "synthetic_pretrain",
      "num_classes": 1000,
      "multi_label": true,
      "label_names": ["disc/red/solid", ...],        # index -> name
      "label_meaning": "free text",
      "image_key": "image/encoded",                  # tf.train.Example keys
      "label_key": "image/class/label",
      "splits": {"train": {"num_examples": 20000, "pattern": "train-*.array_record"}}
    }
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Optional, Sequence
from data.errors import DataError

INFO_FILENAME = "dataset_info.json"


def info_path(directory: str) -> str:
  return os.path.join(directory, INFO_FILENAME)


def write_info(directory: str, info: dict[str, Any]) -> str:
  """Writes ``info`` as ``directory/dataset_info.json`` (atomically); returns the path."""
  if "num_classes" not in info:
    raise DataError("dataset info needs num_classes.")
  path = info_path(directory)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(info, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)
  return path


def read_info(directory: str) -> Optional[dict[str, Any]]:
  path = info_path(directory)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise DataError(f"{path} is not valid JSON ({e}); fix or delete it.") from None


def read_info_for_files(paths: Sequence[str]) -> Optional[dict[str, Any]]:
  """The info beside ``paths`` (all must share one, or have none)."""
  directories = sorted({os.path.dirname(os.path.abspath(p)) for p in paths})
  infos = [(d, read_info(d)) for d in directories]
  found = [(d, i) for d, i in infos if i is not None]
  if not found:
    return None
  first_dir, first = found[0]
  for directory, info in found[1:]:
    for key in ("num_classes", "multi_label", "label_key"):
      if info.get(key) != first.get(key):
        raise DataError(
            f"{info_path(first_dir)} and {info_path(directory)} disagree on {key!r}; "
            "shards of one source must share one label space.")
  return first


def _check_split_names_apart(directory: str, split: str, suffix: str,
                             names: Sequence[str]) -> None:
  """Refuses a split whose name is another's plus '-...' (or the reverse):
  `train-*` would read `train-small-*` shards as its own."""
  any_shard = re.compile(rf"(.+)-\d{{5}}-of-\d{{5}}{re.escape(suffix)}$")
  others = {m.group(1) for m in map(any_shard.match, names) if m} - {split}
  for other in sorted(others):
    shorter, longer = sorted((split, other), key=len)
    if longer.startswith(f"{shorter}-"):
      raise DataError(
          f"{directory} holds split '{other}', and its shards and those of split "
          f"'{split}' would both match {shorter}-*{suffix}: split '{shorter}' "
          f"would read '{longer}' as its own. Name the split without a hyphen "
          f"after the other's name (e.g. '{longer.replace('-', '_')}'), or write "
          "it elsewhere.")


def check_no_foreign_shards(directory: str, split: str, suffix: str,
                            shards: Sequence[str]) -> None:
  """Refuses to write `shards` where other `split-*` shards already lie.

  A split is read as `split-*<suffix>`: shards left by an earlier run with
  another shard count (`-of-00004` beside `-of-00002`) would be read too, and
  every example twice. Nothing is deleted: the directory may hold data.
  """
  pattern = re.compile(rf"{re.escape(split)}-\d{{5}}-of-\d{{5}}{re.escape(suffix)}$")
  wanted = {os.path.basename(path) for path in shards}
  names = os.listdir(directory) if os.path.isdir(directory) else []
  foreign = sorted(name for name in names if pattern.match(name) and name not in wanted)
  _check_split_names_apart(directory, split, suffix, names)
  if foreign:
    raise DataError(
        f"{directory} already holds {len(foreign)} '{split}' shards of another "
        f"shard count ({foreign[0]}, ...), which the split's pattern "
        f"{split}-*{suffix} would read as well: remove them or write elsewhere.")
