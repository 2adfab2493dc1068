"""Input-pipeline throughput on real-size JPEGs (baseline transforms, 224 px).

    python benchmarks/loader_throughput.py [--images 512] [--batch 64] [--batches 6]

Writes ``--images`` photo-like 500 x 375 JPEGs (about ImageNet's median size
and file size) into an ArrayRecord shard in a temporary directory, then
measures images/s of

- decoding alone: simplejpeg at full size and at 1/2 and 1/4 DCT scale, and PIL;
- the training loader (Inception crop, flip, bicubic resize to 224) with 0
  workers (1 and 2 threads) and 2 worker processes;
- DCT-scaled decoding on and off at 224 px and at 128 px (a 500 x 375 image
  rarely allows a reduced scale at 224: a crop of height h needs a scale of at
  least 224 / h >= 0.6, so 1/2 only helps at lower resolutions or for larger
  images);
- the eval loader (resize to 256, centre crop 224).

Configurations are timed round-robin (``--repeats`` rounds, each a fresh
iterator, one warm-up batch, then ``--batches`` timed batches) and each
figure is the median over rounds, so load from other processes on a shared
machine hits all configurations alike. Compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import simplejpeg
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import loader  # pylint: disable=wrong-import-position
from data import sources  # pylint: disable=wrong-import-position
from data import synthetic  # pylint: disable=wrong-import-position
from data import tf_example  # pylint: disable=wrong-import-position
from data import transforms  # pylint: disable=wrong-import-position


def photo_like(rng: np.random.Generator, height: int = 375, width: int = 500) -> np.ndarray:
  """Smooth shapes plus fine texture, so JPEG sizes resemble photographs (~100 kB at q90)."""
  base = rng.integers(0, 256, (height // 24, width // 24, 3), dtype=np.uint8)
  image = np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC),
                     np.float32)
  texture = rng.normal(0, 14, (height, width, 1)).astype(np.float32)
  return np.clip(image + texture, 0, 255).astype(np.uint8)


def write_corpus(directory: str, num_images: int, seed: int = 0) -> tuple[str, float]:
  rng = np.random.default_rng(seed)
  path = os.path.join(directory, "bench.array_record")
  writer = synthetic.open_writer(path, "arrayrecord")
  total = 0
  for i in range(num_images):
    jpeg = simplejpeg.encode_jpeg(photo_like(rng), quality=90)
    total += len(jpeg)
    writer.write(tf_example.serialize_example(
        {"image/encoded": jpeg, "image/class/label": [i % 1000]}))
  writer.close()
  return f"arrayrecord:{path}", total / num_images


def decode_rates(source, count: int = 100, repeats: int = 3) -> dict[str, float]:
  images = [bytes(source[i].image) for i in range(count)]
  decoders = {
      "simplejpeg_full": lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB"),
      "simplejpeg_half": lambda d: simplejpeg.decode_jpeg(
          d, colorspace="RGB", min_height=188, min_width=250),
      "simplejpeg_quarter": lambda d: simplejpeg.decode_jpeg(
          d, colorspace="RGB", min_height=94, min_width=125),
      "pil_full": lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")),
  }
  rates = {name: [] for name in decoders}
  for _ in range(repeats):
    for name, fn in decoders.items():
      start = time.perf_counter()
      for data in images:
        fn(data)
      rates[name].append(count / (time.perf_counter() - start))
  return {name: statistics.median(r) for name, r in rates.items()}


def loader_round(make, batch: int, batches: int) -> float:
  """images/s of one fresh iterator over ``batches`` batches after a warm-up batch."""
  iterator = make()
  try:
    next(iterator)  # warm-up (and worker start-up)
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    return batches * batch / (time.perf_counter() - start)
  finally:
    iterator.close()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--images", type=int, default=512)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--batches", type=int, default=6)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args()
  results = {}
  with tempfile.TemporaryDirectory() as directory:
    spec, mean_bytes = write_corpus(directory, args.images)
    source = sources.open_source(spec, num_classes=1000)
    results["mean_jpeg_kb"] = mean_bytes / 1024
    results["decode_images_per_s"] = decode_rates(source)
    no_dct = lambda res: transforms.TransformConfig(res, dct_scaled_decode=False)
    runs = {
        "train_224_0_workers_1_thread": dict(num_workers=0, read_threads=1),
        "train_224_0_workers_2_threads": dict(num_workers=0, read_threads=2),
        "train_224_2_workers": dict(num_workers=2, read_threads=1),
        "train_224_0_workers_2_threads_no_dct": dict(
            num_workers=0, read_threads=2, transform_config=no_dct(224)),
        "train_128_0_workers_2_threads": dict(num_workers=0, read_threads=2, resolution=128),
        "train_128_0_workers_2_threads_no_dct": dict(
            num_workers=0, read_threads=2, transform_config=no_dct(128)),
    }
    rounds = {name: [] for name in runs}
    rounds["eval_224_0_workers_2_threads"] = []
    for round_index in range(args.repeats):
      for name, options in runs.items():
        options = {"resolution": 224, **options}
        make = lambda o=options: loader.make_train_loader(
            source, global_batch_size=args.batch, seed=round_index, **o)
        rounds[name].append(loader_round(make, args.batch, args.batches))
      eval_loader = loader.make_eval_loader(source, global_batch_size=args.batch,
                                            resolution=224)
      rounds["eval_224_0_workers_2_threads"].append(
          loader_round(lambda: iter(eval_loader), args.batch,
                       min(args.batches, eval_loader.num_steps - 1)))
      print(f"  round {round_index + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    results["loader_images_per_s"] = {n: statistics.median(r) for n, r in rounds.items()}
  results["cpu_count"] = os.cpu_count()
  if args.json:
    print(json.dumps(results, indent=2))
    return
  print(f"JPEG 500x375, mean {results['mean_jpeg_kb']:.0f} kB, {os.cpu_count()} CPUs")
  for name, value in results["decode_images_per_s"].items():
    print(f"decode {name:38s} {value:8.0f} images/s (1 thread)")
  for name, value in results["loader_images_per_s"].items():
    print(f"loader {name:38s} {value:8.0f} images/s")


if __name__ == "__main__":
  main()
