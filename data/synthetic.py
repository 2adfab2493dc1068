"""A procedurally drawn, learnable image corpus for demos and tests, plus a downstream set.

    python -m data.synthetic --out /tmp/synth            # ~20k + 1k images, seconds
    python -m data.synthetic --out /tmp/synth --format tfrecord --num-train 5000

writes real shards of serialized ``tf.train.Example`` (``image/encoded`` JPEG,
``image/class/label`` int64 list, ``image/id``) and a ``dataset_info.json``
beside them::

    OUT/pretrain/{train,eval}-NNNNN-of-MMMMM.array_record   multi-label, 1000 classes
    OUT/downstream/{train,eval}-NNNNN-of-MMMMM.array_record single-label, 16 classes

Pre-training images (64 x 64 by default) show 2-4 objects on a smooth random
background, one per cell of a 2 x 2 grid with jittered position and size.
An object has three visual factors: a shape (10), a colour (10) and a surface
pattern (10). Its class is the combination, so there are 10 x 10 x 10 = 1000
classes (``"disc/red/hstripes"``), and an image's labels are the classes of
its objects: a multi-label corpus with several labels per image.

Downstream images show one larger object; its class groups the same factors
differently: (shape, pattern) over 4 shapes x 4 patterns = 16 classes, with
the colour random (a nuisance the classifier must ignore). The downstream
train split is small (40 per class) and eval is held out (25 per class), so a
network that learnt shape and pattern detectors in pre-training should
fine-tune faster and better than one trained from scratch.

Everything is a pure function of ``--seed``: example ``i`` of a split is drawn
from its own generator seeded with ``(seed, corpus, split, i)``, so the shard
count and the number of writer processes do not change the data. Patterns
have periods of a quarter of the object size (>= 5 px at 64 px), so they
survive downscaling to 32 px.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np
import simplejpeg
from PIL import Image

from data import dataset_info
from data import tf_example
from data import tfrecord
from data.errors import DataError

SHAPES = ("disc", "square", "triangle_up", "triangle_down", "diamond", "plus", "ring",
          "hbar", "vbar", "x_cross")
COLOURS = {
    "red": (225, 35, 35), "green": (35, 190, 55), "blue": (45, 85, 235),
    "yellow": (240, 225, 40), "cyan": (35, 215, 225), "magenta": (220, 45, 215),
    "orange": (250, 140, 20), "purple": (135, 55, 205), "white": (245, 245, 245),
    "brown": (150, 95, 40),
}
PATTERNS = ("solid", "hstripes", "vstripes", "diagonal", "antidiagonal", "checker", "dots",
            "grid", "rings", "gradient")
DOWNSTREAM_SHAPES = ("disc", "square", "triangle_up", "plus")
DOWNSTREAM_PATTERNS = ("solid", "hstripes", "vstripes", "checker")
_CORPUS_IDS = {"pretrain": 0, "downstream": 1}
_SPLIT_IDS = {"train": 0, "eval": 1}
GENERATOR_VERSION = 1


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
  """What one corpus looks like. Plain data."""

  name: str
  shapes: tuple = SHAPES
  colours: tuple = tuple(COLOURS)
  patterns: tuple = PATTERNS
  # The label of an object is (shape, colour, pattern) when colour_in_label,
  # else (shape, pattern).
  colour_in_label: bool = True
  objects_per_image: tuple[int, int] = (2, 4)  # inclusive range
  # Balanced: example i's first object has class i % num_classes (small sets).
  balanced: bool = False
  object_size: tuple[float, float] = (0.34, 0.48)  # fraction of the image side
  image_size: int = 64
  jpeg_quality: int = 90

  @property
  def num_classes(self) -> int:
    colours = len(self.colours) if self.colour_in_label else 1
    return len(self.shapes) * colours * len(self.patterns)

  @property
  def multi_label(self) -> bool:
    return self.objects_per_image[1] > 1

  def class_id(self, shape: int, colour: int, pattern: int) -> int:
    if not self.colour_in_label:
      return shape * len(self.patterns) + pattern
    return (shape * len(self.colours) + colour) * len(self.patterns) + pattern

  def label_names(self) -> list[str]:
    names = []
    for shape in self.shapes:
      for colour in (self.colours if self.colour_in_label else (None,)):
        for pattern in self.patterns:
          names.append("/".join(p for p in (shape, colour, pattern) if p))
    return names


def pretrain_config(image_size: int = 64) -> CorpusConfig:
  return CorpusConfig("pretrain", image_size=image_size)


def downstream_config(image_size: int = 64) -> CorpusConfig:
  return CorpusConfig("downstream", shapes=DOWNSTREAM_SHAPES, patterns=DOWNSTREAM_PATTERNS,
                      colour_in_label=False, objects_per_image=(1, 1), balanced=True,
                      object_size=(0.55, 0.8), image_size=image_size)


# ------------------------------------------------------------------ drawing


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Inside-test on object coordinates u (right) and v (down), both in [-1, 1]."""
  au, av = np.abs(u), np.abs(v)
  if shape == "disc":
    return u * u + v * v <= 1.0
  if shape == "square":
    return np.maximum(au, av) <= 0.8
  if shape == "triangle_up":
    return (v <= 0.8) & (au <= (v + 0.95) * 0.55)
  if shape == "triangle_down":
    return (v >= -0.8) & (au <= (0.95 - v) * 0.55)
  if shape == "diamond":
    return au + av <= 1.0
  if shape == "plus":
    return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
  if shape == "ring":
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.5 * 0.5)
  if shape == "hbar":
    return (au <= 0.98) & (av <= 0.38)
  if shape == "vbar":
    return (au <= 0.38) & (av <= 0.98)
  if shape == "x_cross":
    return ((np.abs(u - v) <= 0.4) | (np.abs(u + v) <= 0.4)) & (np.maximum(au, av) <= 0.9)
  raise ValueError(f"unknown shape {shape!r}")


def _pattern(pattern: str, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
  """Shade factor in [0.3, 1] on pixel offsets x, y from the object's corner."""
  p = period
  if pattern == "solid":
    on = np.ones(np.broadcast_shapes(x.shape, y.shape), bool)
  elif pattern == "hstripes":
    on = (y // (p / 2)) % 2 == 0
  elif pattern == "vstripes":
    on = (x // (p / 2)) % 2 == 0
  elif pattern == "diagonal":
    on = ((x + y) // (p / 1.4)) % 2 == 0
  elif pattern == "antidiagonal":
    on = ((x - y) // (p / 1.4)) % 2 == 0
  elif pattern == "checker":
    on = ((x // (p / 2)) + (y // (p / 2))) % 2 == 0
  elif pattern == "dots":
    on = ((x % p - p / 2) ** 2 + (y % p - p / 2) ** 2) > (p * 0.3) ** 2
  elif pattern == "grid":
    on = ((x % p) >= p * 0.3) & ((y % p) >= p * 0.3)
  elif pattern == "rings":
    return np.where((np.hypot(x - x.mean(), y - y.mean()) // (p / 2)) % 2 == 0, 1.0, 0.3)
  elif pattern == "gradient":
    return 0.3 + 0.7 * (x / max(float(x.max()), 1.0))
  else:
    raise ValueError(f"unknown pattern {pattern!r}")
  return np.where(on, 1.0, 0.3)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  coarse = rng.uniform(0, 90, size=(3, 3, 3)).astype(np.uint8)
  smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR),
                      np.float32)
  smooth += 6.0 * rng.standard_normal((size, size, 3), dtype=np.float32)
  return smooth


def _draw_object(canvas: np.ndarray, rng: np.random.Generator, config: CorpusConfig,
                 cell: tuple[int, int, int], shape: int, colour: int, pattern: int) -> None:
  """Draws one object inside the square cell (top, left, side) of ``canvas`` in place."""
  top, left, side = cell
  obj = int(round(config.image_size * rng.uniform(*config.object_size)))
  obj = max(6, min(obj, side))
  y0 = top + int(rng.integers(0, side - obj + 1))
  x0 = left + int(rng.integers(0, side - obj + 1))
  coords = (np.arange(obj, dtype=np.float32) + 0.5) / obj * 2 - 1
  u, v = coords[None, :], coords[:, None]
  mask = _shape_mask(config.shapes[shape], u, v)
  pixels = np.arange(obj, dtype=np.float32)
  shade = _pattern(config.patterns[pattern], pixels[None, :], pixels[:, None],
                   period=max(5.0, obj / 4))
  shade = np.broadcast_to(shade, mask.shape)
  rgb = np.asarray(COLOURS[config.colours[colour]], np.float32)
  rgb = rgb * rng.uniform(0.85, 1.0)  # a little brightness jitter within a colour
  region = canvas[y0:y0 + obj, x0:x0 + obj]
  region[mask] = (shade[..., None] * rgb)[mask]


def _factors_of(config: CorpusConfig, class_id: int) -> tuple[int, Optional[int], int]:
  """(shape, colour or None, pattern) of a class id (inverse of class_id)."""
  rest, pattern = divmod(class_id, len(config.patterns))
  if not config.colour_in_label:
    return rest, None, pattern
  shape, colour = divmod(rest, len(config.colours))
  return shape, colour, pattern


def draw_example(rng: np.random.Generator, config: CorpusConfig,
                 first_class: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
  """One image (uint8 [S, S, 3]) and its sorted, unique int64 labels.

  ``first_class`` fixes the class of the first object (balanced corpora).
  """
  size = config.image_size
  canvas = _background(rng, size)
  low, high = config.objects_per_image
  num_objects = int(rng.integers(low, high + 1))
  if high == 1:
    cells = [(0, 0, size)]
  else:
    half = size // 2
    corners = [(0, 0), (0, half), (half, 0), (half, half)]
    chosen = rng.choice(4, size=num_objects, replace=False)
    cells = [(corners[c][0], corners[c][1], half) for c in chosen]
  labels = []
  for k, cell in enumerate(cells):
    shape = int(rng.integers(len(config.shapes)))
    colour = int(rng.integers(len(config.colours)))
    pattern = int(rng.integers(len(config.patterns)))
    if k == 0 and first_class is not None:
      shape, fixed_colour, pattern = _factors_of(config, first_class)
      colour = colour if fixed_colour is None else fixed_colour
    _draw_object(canvas, rng, config, cell, shape, colour, pattern)
    labels.append(config.class_id(shape, colour, pattern))
  image = np.clip(canvas, 0, 255).astype(np.uint8)
  return image, np.unique(np.asarray(labels, np.int64))


def example_rng(seed: int, corpus: str, split: str, index: int) -> np.random.Generator:
  return np.random.default_rng([seed, _CORPUS_IDS[corpus], _SPLIT_IDS[split], index])


def serialized_example(seed: int, config: CorpusConfig, split: str, index: int) -> bytes:
  first_class = index % config.num_classes if config.balanced else None
  image, labels = draw_example(example_rng(seed, config.name, split, index), config, first_class)
  jpeg = simplejpeg.encode_jpeg(image, quality=config.jpeg_quality, colorspace="RGB")
  return tf_example.serialize_example({
      "image/encoded": jpeg,
      "image/class/label": labels,
      "image/id": f"{config.name}-{split}-{index:07d}",
  })


# ------------------------------------------------------------------ writing

FORMATS = {"arrayrecord": ".array_record", "tfrecord": ".tfrecord"}


def shard_paths(directory: str, split: str, num_shards: int, file_format: str) -> list[str]:
  suffix = FORMATS[file_format]
  return [os.path.join(directory, f"{split}-{i:05d}-of-{num_shards:05d}{suffix}")
          for i in range(num_shards)]


def open_writer(path: str, file_format: str):
  if file_format == "arrayrecord":
    from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=import-outside-toplevel
    # group_size:1 makes every record independently addressable (fast random access).
    return ArrayRecordWriter(path, "group_size:1")
  return tfrecord.TFRecordWriter(path)


def _write_shard(job: tuple) -> int:
  path, file_format, seed, config, split, start, stop = job
  tmp = path + ".tmp"
  writer = open_writer(tmp, file_format)
  for index in range(start, stop):
    writer.write(serialized_example(seed, config, split, index))
  writer.close()
  os.replace(tmp, path)
  return stop - start


def write_split(directory: str, config: CorpusConfig, split: str, num_examples: int, *,
                seed: int, num_shards: int, file_format: str, pool=None) -> list[str]:
  """Writes one split's shards (examples split contiguously over shards)."""
  os.makedirs(directory, exist_ok=True)
  num_shards = max(1, min(num_shards, num_examples))
  paths = shard_paths(directory, split, num_shards, file_format)
  dataset_info.check_no_foreign_shards(directory, split, FORMATS[file_format], paths)
  bounds = np.linspace(0, num_examples, num_shards + 1).astype(int)
  jobs = [(p, file_format, seed, config, split, int(bounds[i]), int(bounds[i + 1]))
          for i, p in enumerate(paths)]
  list(pool.imap(_write_shard, jobs) if pool else map(_write_shard, jobs))
  return paths


def _info(config: CorpusConfig, seed: int, splits: dict, file_format: str) -> dict:
  meaning = ("class = shape/colour/pattern of one object; an image's labels are the classes "
             "of its objects" if config.colour_in_label else
             "class = shape/pattern of the single object; its colour is random")
  return {
      "name": f"synthetic_{config.name}",
      "num_classes": config.num_classes,
      "multi_label": config.multi_label,
      "label_names": config.label_names(),
      "label_meaning": meaning,
      "factors": {"shapes": list(config.shapes), "colours": list(config.colours),
                  "patterns": list(config.patterns)},
      "image_size": config.image_size,
      "seed": seed,
      "generator_version": GENERATOR_VERSION,
      "image_key": "image/encoded",
      "label_key": "image/class/label",
      "splits": {split: {"num_examples": n,
                         "pattern": f"{split}-*{FORMATS[file_format]}"}
                 for split, n in splits.items()},
  }


def spec_for(out_dir: str, corpus: str, split: str, file_format: str = "arrayrecord") -> str:
  """The source spec of a written split, e.g. ``arrayrecord:OUT/pretrain/train-*.array_record``."""
  return f"{file_format}:{os.path.join(out_dir, corpus, split)}-*{FORMATS[file_format]}"


def generate(out_dir: str, *, seed: int = 0, num_train: int = 20000, num_eval: int = 1000,
             downstream_train_per_class: int = 40, downstream_eval_per_class: int = 25,
             image_size: int = 64, file_format: str = "arrayrecord", num_shards: int = 4,
             num_processes: int = 1, progress: bool = False) -> dict[str, str]:
  """Writes both corpora and their infos; returns ``{"pretrain/train": spec, ...}``."""
  if file_format not in FORMATS:
    raise ValueError(f"file_format must be one of {sorted(FORMATS)}, got {file_format!r}.")
  corpora = [
      (pretrain_config(image_size), {"train": num_train, "eval": num_eval}),
      (downstream_config(image_size), {
          "train": downstream_train_per_class * downstream_config().num_classes,
          "eval": downstream_eval_per_class * downstream_config().num_classes}),
  ]
  pool = (multiprocessing.get_context("spawn").Pool(num_processes)
          if num_processes > 1 else None)
  specs = {}
  try:
    for config, splits in corpora:
      directory = os.path.join(out_dir, config.name)
      for split, count in splits.items():
        start = time.perf_counter()
        shards = num_shards if split == "train" else max(1, num_shards // 2)
        write_split(directory, config, split, count, seed=seed, num_shards=shards,
                    file_format=file_format, pool=pool)
        specs[f"{config.name}/{split}"] = spec_for(out_dir, config.name, split, file_format)
        if progress:
          print(f"  {config.name}/{split}: {count} images in "
                f"{time.perf_counter() - start:.1f}s -> {specs[f'{config.name}/{split}']}",
                file=sys.stderr, flush=True)
      dataset_info.write_info(directory, _info(config, seed, splits, file_format))
  finally:
    if pool is not None:
      pool.close()
      pool.join()
  return specs


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m data.synthetic", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num-train", type=int, default=20000, help="pre-training train images")
  parser.add_argument("--num-eval", type=int, default=1000, help="pre-training eval images")
  parser.add_argument("--downstream-train-per-class", type=int, default=40)
  parser.add_argument("--downstream-eval-per-class", type=int, default=25)
  parser.add_argument("--image-size", type=int, default=64)
  parser.add_argument("--format", choices=sorted(FORMATS), default="arrayrecord")
  parser.add_argument("--num-shards", type=int, default=4, help="shards per train split")
  parser.add_argument("--processes", type=int, default=1, help="writer processes")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  print(f"Writing the synthetic corpora to {args.out} ...", file=sys.stderr, flush=True)
  try:
    specs = generate(args.out, seed=args.seed, num_train=args.num_train,
                     num_eval=args.num_eval,
                     downstream_train_per_class=args.downstream_train_per_class,
                     downstream_eval_per_class=args.downstream_eval_per_class,
                     image_size=args.image_size, file_format=args.format,
                     num_shards=args.num_shards, num_processes=args.processes,
                     progress=True)
  except DataError as e:  # shards of another run in --out
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"Done in {time.perf_counter() - start:.1f}s. Sources:", file=sys.stderr)
  for name, spec in specs.items():
    print(f"{name}\t{spec}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
