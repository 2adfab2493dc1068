"""Training input pipeline throughput: this toolkit's grain loader vs tf.data.

    python3 benchmarks/input_pipeline.py                    # table, workers 1 and 2
    python3 benchmarks/input_pipeline.py --workers 1,2,4 --json

Writes ``--num-images`` real-size JPEGs (500 x 375, 4:2:0, quality 90, photo-like
texture; ~80 kB each, ImageNet's average is ~110 kB) into one TFRecord file of
``tf.train.Example`` records, then reads that same file with two pipelines
producing uint8 224 x 224 training batches:

- ours: ``data.loader.make_train_loader`` -- the real loader (global shuffle,
  simplejpeg decode at the smallest sufficient DCT scale, Inception crop,
  bicubic resize, flip; data/transforms.py), optionally with the paper's batch
  augmentation (data/augment.py: MixUp/CutMix halves from 2B examples,
  RandAugment 4 layers at magnitude 10 after mixing, label smoothing);
- tf.data: the classic TPU ImageNet pipeline -- ``TFRecordDataset``, shuffle,
  ``parse_single_example``, ``sample_distorted_bounding_box`` +
  ``tf.image.decode_and_crop_jpeg``, bicubic ``tf.image.resize``, random flip,
  cast to uint8, batch; the heavy variant adds the same MixUp/CutMix halves and
  a per-image RandAugment with the same 16 ops written in TensorFlow ops (as
  the reference's own tf.data pipeline did it).

"Workers" means parallel lanes of work: for tf.data, the map's
``num_parallel_calls`` and a private thread pool of that size (intra-op
parallelism 1); for ours, ``num_workers`` grain worker processes with one read
thread each ("ours (processes)") and, separately, in-process threads
(``num_workers=0, read_threads=w``, "ours (threads)"). Each measurement skips
warm-up batches, times
``--batches`` batches, and the rounds alternate between pipelines; medians are
reported, as images/s and as images per CPU-second (CPU time of this process,
its threads and its live worker processes, via psutil when installed): on a
shared machine the latter is the robust per-core figure. ``--json`` prints one
object; its ``ours_images_per_s`` and
``tfdata_images_per_s`` are the base pipelines at the largest worker count
that fits the machine's cores (ours: the faster of processes and threads).

A decoder table (single thread, ms per image) shows where the time goes and why
simplejpeg (libjpeg-turbo, with DCT-domain downscaling) is the decoder.
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
from typing import Callable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import simplejpeg  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import augment, dataset_info, decode, loader, mixing, tf_example  # noqa: E402
from data import tfrecord, transforms  # noqa: E402
from data.randaugment import RandAugment  # noqa: E402

NUM_CLASSES = 1000
HEAVY_VARIANT = "F1"  # RandAugment magnitude 10, the paper's setting at 224 px


# --------------------------------------------------------------------------
# Data: real-size JPEGs in a TFRecord file both pipelines read.
# --------------------------------------------------------------------------


def photo_like_image(rng: np.random.Generator, width: int = 500, height: int = 375) -> np.ndarray:
  """Smooth colour regions + mid-frequency texture + sensor-like noise."""
  coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
  base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC),
                    np.float32)
  texture = rng.normal(0, 40, (height // 6, width // 6, 3)) + 128
  texture = np.asarray(Image.fromarray(np.uint8(np.clip(texture, 0, 255))).resize(
      (width, height), Image.Resampling.BILINEAR), np.float32) - 128
  noise = rng.normal(0, 9, (height, width, 3))
  return np.uint8(np.clip(base + texture + noise, 0, 255))


def write_corpus(directory: str, num_images: int, seed: int = 0) -> tuple[str, list[bytes]]:
  """Writes the TFRecord file (+ dataset_info.json); returns its spec and the JPEGs."""
  rng = np.random.default_rng(seed)
  path = os.path.join(directory, "train-00000-of-00001.tfrecord")
  writer = tfrecord.TFRecordWriter(path)
  jpegs = []
  for i in range(num_images):
    jpeg = simplejpeg.encode_jpeg(photo_like_image(rng), quality=90, colorspace="RGB",
                                  colorsubsampling="420")
    jpegs.append(jpeg)
    writer.write(tf_example.serialize_example({
        "image/encoded": jpeg, "image/class/label": [int(rng.integers(NUM_CLASSES))],
        "image/id": f"bench-{i:06d}"}))
  writer.close()
  dataset_info.write_info(directory, {"name": "input_pipeline_benchmark",
                                      "num_classes": NUM_CLASSES, "multi_label": False})
  return f"tfrecord:{path}", jpegs


# --------------------------------------------------------------------------
# Ours.
# --------------------------------------------------------------------------


def ours_iterator(spec: str, *, batch_size: int, resolution: int, workers: int, heavy: bool,
                  mode: str) -> Iterator[dict]:
  transform = (augment.make_batch_augment(augment.imagenet_recipe(HEAVY_VARIANT), NUM_CLASSES)
               if heavy else None)
  if mode == "processes":
    num_workers, read_threads = workers, 1
  else:
    num_workers, read_threads = 0, workers
  return loader.make_train_loader(
      spec, global_batch_size=batch_size, resolution=resolution, seed=0,
      num_workers=num_workers, read_threads=read_threads, prefetch_batches=2,
      batch_transform=transform)


# --------------------------------------------------------------------------
# tf.data: the classic pipeline, and the same heavy augmentation in TF ops.
# --------------------------------------------------------------------------


def _tf():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf


def tf_inception_crop_decode(tf, jpeg, resolution: int):
  shape = tf.image.extract_jpeg_shape(jpeg)
  begin, size, _ = tf.image.sample_distorted_bounding_box(
      shape, tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
      min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  offset_y, offset_x, _ = tf.unstack(begin)
  height, width, _ = tf.unstack(size)
  image = tf.image.decode_and_crop_jpeg(
      jpeg, tf.stack([offset_y, offset_x, height, width]), channels=3)
  image = tf.image.resize(image, [resolution, resolution], method="bicubic")
  image = tf.image.random_flip_left_right(image)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _blend(tf, degenerate, image, factor):
  degenerate = tf.cast(degenerate, tf.float32)
  out = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.clip_by_value(out, 0, 255), tf.uint8)


def _transform(tf, image, coeffs):
  """Projective transform output -> input (8 coefficients), nearest, grey fill."""
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.cast(tf.stack(coeffs)[None], tf.float32),
      output_shape=tf.shape(image)[:2], fill_value=128.0, interpolation="NEAREST",
      fill_mode="CONSTANT")
  return out[0]


def _lut(tf, image, table):
  return tf.gather(tf.cast(table, tf.uint8), tf.cast(image, tf.int32))


def _equalize(tf, image):
  def channel(c):
    values = tf.cast(c, tf.int32)
    hist = tf.histogram_fixed_width(values, [0, 255], nbins=256)
    nonzero = tf.boolean_mask(hist, hist > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    lut = (tf.cumsum(hist) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    return tf.where(step == 0, c, tf.cast(tf.gather(lut, values), tf.uint8))
  return tf.stack([channel(image[..., i]) for i in range(3)], -1)


def _auto_contrast(tf, image):
  x = tf.cast(image, tf.float32)
  lo = tf.reduce_min(x, axis=[0, 1])
  hi = tf.reduce_max(x, axis=[0, 1])
  scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
  offset = tf.where(hi > lo, lo, 0.0)
  return tf.cast(tf.clip_by_value((x - offset) * scale, 0, 255), tf.uint8)


def _sharpness(tf, image, factor):
  x = tf.cast(image, tf.float32)[None]
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID")[0]
  smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  border = tf.pad(tf.ones_like(smooth[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(border > 0, smooth, x[0])
  return _blend(tf, degenerate, image, factor)


def _cutout(tf, image, half):
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  cy = tf.random.uniform([], 0, h, tf.int32)
  cx = tf.random.uniform([], 0, w, tf.int32)
  rows = tf.range(h)[:, None]
  cols = tf.range(w)[None, :]
  inside = (rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half)
  return tf.where(inside[..., None], tf.constant(128, tf.uint8), image)


def tf_randaugment(tf, image, num_layers: int, magnitude: float):
  """Per-image RandAugment with the same 16 ops and mappings, each layer one op."""
  m = magnitude / 10.0
  h = tf.cast(tf.shape(image)[0], tf.float32)
  w = tf.cast(tf.shape(image)[1], tf.float32)
  cy, cx = (h - 1) / 2, (w - 1) / 2

  def signed(value):
    return tf.where(tf.random.uniform([]) < 0.5, -value, value)

  def rotate(x):
    theta = signed(m * 30.0) * np.pi / 180.0
    c, s = tf.cos(theta), tf.sin(theta)
    return _transform(tf, x, [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy, 0.0, 0.0])

  factor = m * 1.8 + 0.1
  bits = int(m * 4)
  threshold = int(m * 256)
  addition = int(m * 110)
  values = np.arange(256)
  posterize_lut = values & ((0xFF << (8 - min(bits, 8))) & 0xFF)
  solarize_lut = np.where(values < threshold, values, 255 - values)
  solarize_add_lut = np.where(values < 128, np.minimum(values + addition, 255), values)
  ops = [
      lambda x: _auto_contrast(tf, x),
      lambda x: _equalize(tf, x),
      lambda x: 255 - x,
      rotate,
      lambda x: _lut(tf, x, posterize_lut),
      lambda x: _lut(tf, x, solarize_lut),
      lambda x: _blend(tf, tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x)), x, factor),
      lambda x: _blend(tf, tf.reduce_mean(tf.image.rgb_to_grayscale(tf.cast(x, tf.float32))),
                       x, factor),
      lambda x: _blend(tf, tf.zeros_like(x), x, factor),
      lambda x: _sharpness(tf, x, factor),
      lambda x: _transform(tf, x, [1.0, signed(m * 0.3), 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
      lambda x: _transform(tf, x, [1.0, 0.0, 0.0, signed(m * 0.3), 1.0, 0.0, 0.0, 0.0]),
      lambda x: _transform(tf, x, [1.0, 0.0, signed(m * 100.0), 0.0, 1.0, 0.0, 0.0, 0.0]),
      lambda x: _transform(tf, x, [1.0, 0.0, 0.0, 0.0, 1.0, signed(m * 100.0), 0.0, 0.0]),
      lambda x: _cutout(tf, x, int(m * 40)),
      lambda x: _lut(tf, x, solarize_add_lut),
  ]
  for _ in range(num_layers):
    index = tf.random.uniform([], 0, len(ops), tf.int32)
    image = tf.switch_case(index, [lambda op=op, x=image: op(x) for op in ops])
    image = tf.ensure_shape(image, [None, None, 3])
  return image


def tf_mix_halves(tf, images, labels):
  """2B -> B: MixUp (Beta(0.2, 0.2)) on the first half, CutMix on the rest; smoothing 0.1."""
  batch = tf.shape(images)[0] // 2
  num_mixup = (batch + 1) // 2
  num_cutmix = batch - num_mixup
  a, b = images[:batch], images[batch:]
  size = tf.shape(images)[1]  # square images: one range serves rows and columns
  targets = tf.one_hot(labels, NUM_CLASSES)

  g1 = tf.random.gamma([num_mixup], 0.2)
  g2 = tf.random.gamma([num_mixup], 0.2)
  ratio = g1 / (g1 + g2)
  r4 = ratio[:, None, None, None]
  mixed = tf.round(r4 * tf.cast(a[:num_mixup], tf.float32)
                   + (1 - r4) * tf.cast(b[:num_mixup], tf.float32))

  side = tf.sqrt(1.0 - tf.random.uniform([num_cutmix]))
  box = tf.cast(side * tf.cast(size, tf.float32), tf.int32)
  cy = tf.random.uniform([num_cutmix], 0, size, tf.int32)
  cx = tf.random.uniform([num_cutmix], 0, size, tf.int32)
  top, left = cy - box // 2, cx - box // 2
  rows = tf.range(size)[None, :]
  in_rows = (rows >= top[:, None]) & (rows < (top + box)[:, None])
  in_cols = (rows >= left[:, None]) & (rows < (left + box)[:, None])
  inside = in_rows[:, :, None] & in_cols[:, None, :]
  cut = tf.where(inside[..., None], b[num_mixup:], a[num_mixup:])
  cut_ratio = 1.0 - tf.reduce_mean(tf.cast(inside, tf.float32), axis=[1, 2])

  out_images = tf.concat([tf.cast(mixed, tf.uint8), cut], 0)
  weights = tf.concat([ratio, cut_ratio], 0)[:, None]
  out_targets = weights * targets[:batch] + (1 - weights) * targets[batch:]
  return out_images, out_targets * 0.9 + 0.1 / NUM_CLASSES


def tfdata_iterator(path: str, *, batch_size: int, resolution: int, workers: int, heavy: bool,
                    num_images: int):
  tf = _tf()
  features = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
              "image/class/label": tf.io.FixedLenFeature([1], tf.int64)}

  def example(serialized):
    parsed = tf.io.parse_single_example(serialized, features)
    image = tf_inception_crop_decode(tf, parsed["image/encoded"], resolution)
    return image, tf.cast(parsed["image/class/label"][0], tf.int32)

  # 0 workers: tf.data maps in sequence, as ours decodes in-process.
  parallel_calls = workers or None
  ds = tf.data.TFRecordDataset(path).repeat().shuffle(min(num_images, 10_000), seed=0)
  ds = ds.map(example, num_parallel_calls=parallel_calls)
  if heavy:
    magnitude = augment.imagenet_recipe(HEAVY_VARIANT).randaugment_magnitude
    ds = ds.batch(2 * batch_size, drop_remainder=True)
    ds = ds.map(lambda x, y: tf_mix_halves(tf, x, y), num_parallel_calls=parallel_calls)
    ds = ds.unbatch().map(lambda x, y: (tf_randaugment(tf, x, 4, magnitude), y),
                          num_parallel_calls=parallel_calls)
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(2)
  options = tf.data.Options()
  options.threading.private_threadpool_size = workers
  options.threading.max_intra_op_parallelism = 1
  ds = ds.with_options(options)
  return (dict(image=x.numpy()) for x, _ in ds)


# --------------------------------------------------------------------------
# Measurement.
# --------------------------------------------------------------------------


_CPU_CLOCK_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _cpu_seconds() -> float:
  """CPU time (user + system) of this process and its live children (grain workers)."""
  try:
    import psutil  # pylint: disable=import-outside-toplevel
  except ImportError:  # then worker processes are not counted: see --help
    return time.process_time()
  me = psutil.Process()
  total = sum(me.cpu_times()[:2])
  for child in me.children(recursive=True):
    try:
      total += sum(child.cpu_times()[:2])
    except psutil.NoSuchProcess:
      pass
  return total


def measure(make: Callable[[], Iterator], *, batches: int, warmup: int) -> tuple[float, float]:
  """(images per second, images per CPU-second) over ``batches`` after ``warmup``."""
  iterator = make()
  try:
    for _ in range(warmup):
      batch = next(iterator)
    # CPU clock first: reading it (psutil, and its import on the first call)
    # takes milliseconds that must not count as the pipeline's wall time.
    start_cpu = _cpu_seconds()
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
      batch = next(iterator)
      count += len(batch["image"])
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - start_cpu
    # The kernel counts CPU time in clock ticks (usually 10 ms), so a very short
    # run can read 0 s; one tick is then the honest upper bound on what it used.
    return count / wall, count / max(cpu, _CPU_CLOCK_TICK_S)
  finally:
    close = getattr(iterator, "close", None)
    if close:
      close()


def decoder_table(jpegs: list[bytes], resolution: int) -> dict[str, float]:
  """Single-thread ms per image for the decoders and the stages of our pipeline."""
  tf = _tf()
  rng = np.random.default_rng(0)
  config = transforms.TransformConfig(resolution)
  sample = jpegs[:64]

  def per_image_ms(fn, repeats=3):
    start = time.perf_counter()
    for _ in range(repeats):
      for data in sample:
        fn(data)
    return (time.perf_counter() - start) / (repeats * len(sample)) * 1e3

  def tf_map_ms(fn):
    ds = tf.data.Dataset.from_tensor_slices(sample).repeat(3).map(fn)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    ds = ds.with_options(options)
    start = time.perf_counter()
    for _ in ds:
      pass
    return (time.perf_counter() - start) / (3 * len(sample)) * 1e3

  table = {
      "PIL full decode": per_image_ms(
          lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB"))),
      "simplejpeg full decode": per_image_ms(lambda d: simplejpeg.decode_jpeg(d)),
      "simplejpeg 1/2-scale decode": per_image_ms(
          lambda d: simplejpeg.decode_jpeg(d, min_height=188, min_width=250)),
      "tf.io.decode_jpeg full": tf_map_ms(lambda d: tf.io.decode_jpeg(d, channels=3)),
      "tf decode_and_crop_jpeg (60% crop)": tf_map_ms(
          lambda d: tf.image.decode_and_crop_jpeg(d, [40, 50, 290, 387], channels=3)),
      "ours: decode+crop+resize+flip (data.transforms.train_image)": per_image_ms(
          lambda d: transforms.train_image(d, rng, config)),
      "tf: decode_and_crop+resize+flip": tf_map_ms(
          lambda d: tf_inception_crop_decode(tf, d, resolution)),
  }
  decoded = [simplejpeg.decode_jpeg(d) for d in sample]
  crops = [transforms.sample_inception_crop(*p.shape[:2], rng, config)[0] for p in decoded]

  def each_crop_ms(fn, repeats=3):
    start = time.perf_counter()
    for _ in range(repeats):
      for pixels, (top, left, h, w) in zip(decoded, crops):
        fn(pixels, top, left, h, w)
    return (time.perf_counter() - start) / (repeats * len(sample)) * 1e3

  size = (resolution, resolution)
  table["ours: bicubic resize of the crop (OpenCV, like tf)"] = each_crop_ms(
      lambda p, t, l, h, w: transforms.resize_bicubic(p[t:t + h, l:l + w], size))
  table["PIL bicubic resize of the crop (antialiased)"] = each_crop_ms(
      lambda p, t, l, h, w: Image.fromarray(p).resize(
          size, Image.Resampling.BICUBIC, box=(l, t, l + w, t + h)))
  table["cv2.imdecode full"] = per_image_ms(
      lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR))

  images = np.stack([transforms.train_image(d, rng, config) for d in sample])
  augment_rng = np.random.default_rng(1)
  start = time.perf_counter()
  RandAugment(4, 10)(images, augment_rng)
  table["ours: RandAugment 4 layers, m=10"] = (time.perf_counter() - start) / len(images) * 1e3
  targets = mixing.one_hot(np.arange(len(images)) % NUM_CLASSES, NUM_CLASSES)
  start = time.perf_counter()
  mixing.mix_halves(images, targets, augment_rng)
  table["ours: MixUp/CutMix per output image"] = (
      (time.perf_counter() - start) / (len(images) // 2) * 1e3)
  return table


def _worker_counts(text: str) -> list[int]:
  try:
    counts = [int(w) for w in text.split(",")]
  except ValueError:
    counts = []
  if not counts or min(counts) < 0:
    raise argparse.ArgumentTypeError(f"expected counts like 1,2, got {text!r}")
  return counts


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workers", default="1,2", type=_worker_counts,
                      help="comma-separated worker counts")
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--num-images", type=int, default=512)
  parser.add_argument("--batches", type=int, default=8, help="timed batches per measurement")
  parser.add_argument("--heavy-batches", type=int, default=4)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
  parser.add_argument("--no-heavy", action="store_true", help="skip the heavy pipelines")
  parser.add_argument("--no-decoders", action="store_true", help="skip the decoder table")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  args = parser.parse_args()
  worker_counts = args.workers
  cores = os.cpu_count() or 1
  log = (lambda *a: print(*a, file=sys.stderr, flush=True))

  with tempfile.TemporaryDirectory() as tmp:
    log(f"Writing {args.num_images} JPEGs (500x375) ...")
    spec, jpegs = write_corpus(tmp, args.num_images)
    path = spec.split(":", 1)[1]
    mean_kb = float(np.mean([len(j) for j in jpegs]) / 1e3)
    log(f"  mean JPEG size {mean_kb:.1f} kB; machine has {cores} cores")

    pipelines = {
        "ours (processes)": lambda w, heavy: ours_iterator(
            spec, batch_size=args.batch_size, resolution=args.resolution, workers=w,
            heavy=heavy, mode="processes"),
        "ours (threads)": lambda w, heavy: ours_iterator(
            spec, batch_size=args.batch_size, resolution=args.resolution, workers=w,
            heavy=heavy, mode="threads"),
        "tf.data": lambda w, heavy: tfdata_iterator(
            path, batch_size=args.batch_size, resolution=args.resolution, workers=w,
            heavy=heavy, num_images=args.num_images),
    }
    results = {}  # (workers, heavy, pipeline) -> [(images/s, images/CPU-s) per round]
    settings = [(w, False) for w in worker_counts]
    if not args.no_heavy:
      settings += [(w, True) for w in worker_counts]
    for round_index in range(args.rounds):
      for w, heavy in settings:
        for name, make in pipelines.items():
          batches = args.heavy_batches if heavy else args.batches
          rate, per_cpu = measure(lambda: make(w, heavy), batches=batches, warmup=args.warmup)
          results.setdefault((w, heavy, name), []).append((rate, per_cpu))
          log(f"  round {round_index + 1}/{args.rounds} workers={w} "
              f"{'heavy' if heavy else 'base '} {name:17s} {rate:7.1f} images/s "
              f"{per_cpu:7.1f} images/CPU-s")

    def median(key, i):
      return statistics.median(r[i] for r in results[key])

    rows = []
    for w, heavy in settings:
      kind = "heavy" if heavy else "base"
      ours_name = max(("ours (processes)", "ours (threads)"),
                      key=lambda n: median((w, heavy, n), 0))
      ours, tfdata = median((w, heavy, ours_name), 0), median((w, heavy, "tf.data"), 0)
      ours_cpu, tf_cpu = median((w, heavy, ours_name), 1), median((w, heavy, "tf.data"), 1)
      rows.append({
          "workers": w, "pipeline": kind, "ours_mode": ours_name,
          "ours_processes_images_per_s": round(median((w, heavy, "ours (processes)"), 0), 1),
          "ours_threads_images_per_s": round(median((w, heavy, "ours (threads)"), 0), 1),
          "ours_images_per_s": round(ours, 1), "tfdata_images_per_s": round(tfdata, 1),
          "ratio": round(ours / tfdata, 2),
          "ours_images_per_cpu_s": round(ours_cpu, 1),
          "tfdata_images_per_cpu_s": round(tf_cpu, 1),
          "ratio_per_cpu": round(ours_cpu / tf_cpu, 2)})

    decoders = {} if args.no_decoders else decoder_table(jpegs, args.resolution)

  fitting = [w for w in worker_counts if w <= cores] or [min(worker_counts)]
  headline = next(r for r in rows if r["workers"] == max(fitting) and r["pipeline"] == "base")
  if args.json:
    print(json.dumps({
        "ours_images_per_s": headline["ours_images_per_s"],
        "tfdata_images_per_s": headline["tfdata_images_per_s"],
        "ratio": headline["ratio"], "workers": headline["workers"], "cores": cores,
        "ours_images_per_cpu_s": headline["ours_images_per_cpu_s"],
        "tfdata_images_per_cpu_s": headline["tfdata_images_per_cpu_s"],
        "resolution": args.resolution, "batch_size": args.batch_size,
        "mean_jpeg_kb": round(mean_kb, 1), "rounds": args.rounds,
        "rows": rows, "decoder_ms_per_image": {k: round(v, 3) for k, v in decoders.items()},
    }))
    return

  print(f"\n{args.resolution} px, batch {args.batch_size}, {args.num_images} JPEGs of "
        f"{mean_kb:.0f} kB, {cores} cores; median of {args.rounds} rounds. images/s of the "
        "pipeline, and images per CPU-second (all threads and worker processes counted).")
  print(f"{'pipeline':8s} {'workers':>7s} {'ours(proc)':>10s} {'ours(thr)':>9s} "
        f"{'tf.data':>8s} {'ours/tf':>7s} | {'ours/CPU-s':>10s} {'tf/CPU-s':>8s} {'ratio':>6s}")
  for r in rows:
    print(f"{r['pipeline']:8s} {r['workers']:7d} {r['ours_processes_images_per_s']:10.1f} "
          f"{r['ours_threads_images_per_s']:9.1f} {r['tfdata_images_per_s']:8.1f} "
          f"{r['ratio']:7.2f} | {r['ours_images_per_cpu_s']:10.1f} "
          f"{r['tfdata_images_per_cpu_s']:8.1f} {r['ratio_per_cpu']:6.2f}")
  if decoders:
    print("\nSingle-thread cost, ms per image:")
    for name, ms in decoders.items():
      print(f"  {name:62s} {ms:6.2f}")


if __name__ == "__main__":
  main()
