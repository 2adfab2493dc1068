"""Command-line flags shared by the data tools for opening a source."""

from __future__ import annotations

import argparse
from typing import Any

from data import sources


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("source", help="arrayrecord:GLOB | tfrecord:GLOB | "
                      "tfds:NAME[:VERSION]/SPLIT | folder:PATH (quote globs)")
  group = parser.add_argument_group("source options (see data/sources.py)")
  group.add_argument("--image-key", default=None, help="tf.train.Example key of the image")
  group.add_argument("--label-key", default=None, help="tf.train.Example key of the labels")
  group.add_argument("--id-key", default=None, help="tf.train.Example key of the id")
  group.add_argument("--num-classes", type=int, default=None)
  group.add_argument("--multi-label", action="store_const", const=True, default=None,
                     help="treat the labels as multi-label")
  group.add_argument("--data-dir", default=None, help="TFDS data directory (tfds: sources)")
  group.add_argument("--index-dir", default=None, help="TFRecord index directory")


def source_options(args: argparse.Namespace) -> dict[str, Any]:
  """The open_source options set on the command line, for the source's kind."""
  return sources.options_for(
      args.source, num_classes=args.num_classes, multi_label=args.multi_label,
      image_key=args.image_key, label_key=args.label_key, id_key=args.id_key,
      data_dir=args.data_dir, index_dir=args.index_dir)
