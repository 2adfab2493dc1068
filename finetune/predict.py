r"""Classify image files with trained weights; optionally export their features.

    python -m finetune.predict --weights /ckpt/f0_flowers [--top-k 5] [--json] \
        photo.jpg more_photos/ [--features feats.npy] [--labels names.txt]

`--weights` is anything `nfnet.load` reads (our workdir or checkpoint, a
`python -m nfnet.convert` output, DeepMind's `*_haiku.npz`, a timm file);
`--ema` takes a checkpoint's EMA weights. Folders are searched recursively
for images (.jpg .jpeg .png .bmp .gif .webp), in sorted order.

Each image gets the training runs' eval transform (the whole image resized,
bicubic, then the centre S x S crop keeping the fraction of each side the
run's eval kept, or `--eval-crop-fraction`; S from `--resolution`, else the
weights' eval resolution) and one output line, tab-separated: the path, then
the top-k classes as `index:name:probability` (`index::probability` when no
names are known). Class names come from the training source when the run
recorded them, or from `--labels FILE` (one name per line, in class-index
order; e.g. the 1000 ImageNet names for DeepMind's released heads).
Probabilities are a softmax over the classes, or per-class sigmoids for
weights trained with the sigmoid loss; `--flip-average` averages them with
the mirror image's (what `eval/flip_top1` scores). With `--json`, one
object per image instead:
    {"path": ..., "top_k": [{"index": 3, "name": "tulip", "probability": 0.91}, ...]}

`--features OUT.npy` also writes the pooled pre-logit features, float32
[N, D] (D = the head's input width), row i for the i-th image read; the image
paths in the same order go to OUT.paths.txt, one per line. Use them for
linear probes and retrieval.

Images are decoded in parallel threads and run in fixed-size batches (one
compilation), with a progress line on stderr. A file that cannot be read or
decoded is named on stderr and skipped; the run goes on, and the exit status
is 1 if any file was skipped (0 otherwise).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import sys
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import nfnet
from data import decode, sources, transforms
from data.progress import progress_bar
from nfnet import loading
from nfnet.errors import UserError
from nfnet.train import training
from nfnet.train.cli import USER_ERRORS
from nfnet.train.metrics import quiet_library_logs

FEATURES_PATHS_SUFFIX = ".paths.txt"


def find_images(paths: Sequence[str]) -> list[str]:
  """Files as given, folders expanded recursively to their images (sorted)."""
  found = []
  for path in paths:
    if os.path.isdir(path):
      for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        found.extend(os.path.join(dirpath, name) for name in sorted(filenames)
                     if name.lower().endswith(sources.IMAGE_EXTENSIONS))
    else:
      found.append(path)  # a missing file is reported, like an unreadable one
  return found


def features_paths_file(features_file: str) -> str:
  """'feats.npy' -> 'feats.paths.txt' (the sidecar listing the rows' images)."""
  root = features_file[:-4] if features_file.endswith(".npy") else features_file
  return root + FEATURES_PATHS_SUFFIX


@dataclasses.dataclass
class Prediction:
  path: str
  top_k: list[dict[str, Any]]


def read_image(path: str, config: transforms.TransformConfig) -> np.ndarray:
  """The eval transform of one file; OSError / ImageDecodeError when it cannot."""
  with open(path, "rb") as f:
    data = f.read()
  return transforms.eval_image(data, config)


def read_batches(paths: Sequence[str], config: transforms.TransformConfig,
                 batch_size: int, threads: int = 4
                 ) -> Iterator[tuple[list[str], np.ndarray, list[tuple[str, str]]]]:
  """(readable paths, uint8 images [n, S, S, 3], [(path, why), ...] skipped)
  per chunk of `batch_size` files, decoded in `threads` threads."""
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    for start in range(0, len(paths), batch_size):
      chunk = paths[start:start + batch_size]
      futures = [pool.submit(read_image, p, config) for p in chunk]
      good, images, bad = [], [], []
      for path, future in zip(chunk, futures):
        try:
          images.append(future.result())
          good.append(path)
        except (OSError, decode.ImageDecodeError, ValueError) as e:
          bad.append((path, str(e) or type(e).__name__))
      yield good, np.stack(images) if images else None, bad


def make_forward(model, loss: str, flip_average: bool = False):
  """jitted (params, uint8 images) -> (probabilities float32 [B, C], features [B, D]).

  flip_average: the probabilities are the mean of each image's and its mirror
  image's (the features stay the image's own).
  """

  def apply(params, images):
    return model.apply({"params": params},
                       nfnet.normalize_images(images, model.dtype),
                       is_training=False, return_features=True)

  @jax.jit
  def forward(params, images):
    logits, features = apply(params, images)
    scores = training.class_probabilities(logits, loss)
    if flip_average:
      mirrored, _ = apply(params, jnp.flip(images, axis=2))  # NHWC: W
      scores = (scores + training.class_probabilities(mirrored, loss)) / 2
    return scores, features

  return forward


def pad_batch(images: np.ndarray, batch_size: int) -> np.ndarray:
  """Zero rows up to `batch_size`, so every batch has one shape (one compile)."""
  missing = batch_size - len(images)
  if missing == 0:
    return images
  return np.concatenate([images, np.zeros((missing,) + images.shape[1:], images.dtype)])


def top_k_entries(scores: np.ndarray, k: int,
                  names: Sequence[str] | None) -> list[dict[str, Any]]:
  """The k best classes of one image, best first."""
  order = np.argsort(-scores, kind="stable")[:k]
  return [{"index": int(i), "name": names[i] if names else None,
           "probability": float(scores[i])} for i in order]


def format_prediction(prediction: Prediction) -> str:
  entries = [f"{e['index']}:{e['name'] or ''}:{e['probability']:.4f}"
             for e in prediction.top_k]
  return "\t".join([prediction.path, *entries])


def predict(weights: str, paths: Sequence[str], *, top_k: int = 5,
            ema: bool = False, resolution: int | None = None,
            eval_crop_fraction: float | None = None,
            labels_file: str | None = None, batch_size: int = 32,
            features_file: str | None = None, on_prediction=None,
            flip_average: bool = False,
            show_progress: bool = False) -> tuple[list[Prediction], list[tuple[str, str]]]:
  """Runs the model over `paths` (files or folders); returns (predictions,
  skipped files with the reason). `on_prediction` is called with each one as
  soon as its batch is done."""
  model, params, info = nfnet.load(weights, ema=ema)
  names = (loading.read_label_names(labels_file, model.num_classes) if labels_file
           else info["label_names"])
  resolution = resolution or info["eval_resolution"]
  if not resolution:
    raise UserError(f"{weights} does not say which resolution it was evaluated "
                     "at; pass --resolution.")
  files = find_images(paths)
  if not files:
    raise FileNotFoundError(f"No images found in {list(paths)}.")
  config = transforms.TransformConfig(
      resolution,
      eval_crop_fraction=eval_crop_fraction or info["eval_crop_fraction"])
  forward = make_forward(model, info["loss"], flip_average)
  params = jax.device_put(params)
  predictions, skipped, features = [], [], []
  with progress_bar(len(files), "Predicting", unit="images",
                    show=show_progress) as bar:
    for good, images, bad in read_batches(files, config, batch_size):
      for path, why in bad:
        print(f"error: cannot read {path}: {why}; skipped.", file=sys.stderr,
              flush=True)
      skipped.extend(bad)
      if good:
        scores, batch_features = jax.device_get(
            forward(params, pad_batch(images, batch_size)))
        for row, path in enumerate(good):
          prediction = Prediction(path, top_k_entries(scores[row], top_k, names))
          predictions.append(prediction)
          if on_prediction:
            on_prediction(prediction)
        features.append(np.asarray(batch_features[:len(good)], np.float32))
      bar.update(len(good) + len(bad))
  if features_file:
    feature_dim = params["classifier"]["kernel"].shape[0]  # the head's input
    write_features(features_file, features, [p.path for p in predictions],
                   feature_dim)
  return predictions, skipped


def write_features(features_file: str, chunks: list[np.ndarray],
                   paths: Sequence[str], dim: int) -> None:
  """OUT.npy [N, D] float32 (D = `dim`, also when no image was read) and
  OUT.paths.txt (row order)."""
  array = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
  np.save(features_file, array)
  with open(features_paths_file(features_file), "w", encoding="utf-8") as f:
    f.writelines(f"{path}\n" for path in paths)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m finetune.predict",
      description="Top-k classes (and optionally pooled features) of image "
      "files under trained weights.")
  parser.add_argument("images", nargs="+", help="image files and/or folders")
  parser.add_argument("--weights", required=True,
                      help="workdir / checkpoint of ours, nfnet.convert output, "
                      "*_haiku.npz or timm .safetensors/.pth")
  parser.add_argument("--top-k", type=int, default=5)
  parser.add_argument("--json", action="store_true", help="one JSON object per image")
  parser.add_argument("--labels", default=None,
                      help="class names file, one per line in index order")
  parser.add_argument("--features", default=None, metavar="OUT.npy",
                      help="also write pooled pre-logit features [N, D] here "
                      "(image order in OUT.paths.txt)")
  parser.add_argument("--resolution", type=int, default=None,
                      help="eval size S (default: the weights' eval resolution)")
  parser.add_argument("--eval-crop-fraction", type=float, default=None,
                      help="fraction of each side the centre crop keeps "
                      "(default: the run's own; 1.0: the whole image)")
  parser.add_argument("--flip-average", action="store_true",
                      help="average each image's probabilities with its mirror "
                      "image's (test-time flip averaging; twice the compute)")
  parser.add_argument("--ema", action="store_true",
                      help="use the checkpoint's EMA weights")
  parser.add_argument("--batch-size", type=int, default=32)
  args = parser.parse_args(argv)
  if args.top_k < 1 or args.batch_size < 1:
    parser.error("--top-k and --batch-size must be positive.")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  quiet_library_logs()

  def emit(prediction: Prediction) -> None:
    line = (json.dumps(dataclasses.asdict(prediction)) if args.json
            else format_prediction(prediction))
    print(line, flush=True)

  try:
    _, skipped = predict(
        args.weights, args.images, top_k=args.top_k, ema=args.ema,
        resolution=args.resolution,
        eval_crop_fraction=args.eval_crop_fraction, labels_file=args.labels,
        batch_size=args.batch_size, features_file=args.features,
        on_prediction=emit, flip_average=args.flip_average, show_progress=True)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if skipped:
    print(f"error: {len(skipped)} file(s) could not be read and were skipped: "
          + ", ".join(path for path, _ in skipped), file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
