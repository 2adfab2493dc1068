"""`nfnet.load`: any trained weights -> (model, params, info), ready to apply.

    import nfnet
    model, params, info = nfnet.load("/ckpt/f0_flowers")            # our workdir
    images = nfnet.normalize_images(batch_uint8)                     # [N, S, S, 3]
    logits, features = model.apply({"params": params}, images, return_features=True)
    names = info["label_names"]                                      # or None

`path` is anything a run's `init_from` accepts:

* a workdir of ours (local or gs://), its `checkpoints/` folder or one step
  folder of it (the latest step is taken); `ema=True` returns the EMA weights
  instead of the raw ones (an error when the run kept none);
* a `python -m nfnet.convert` output (orbax params + model.json);
* DeepMind's `F*_haiku.npz` (read with the restricted unpickler);
* a timm `dm_nfnet_*` `.safetensors` / `.pth` state dict (timm's numerics).

`info` says where the weights came from and how they were trained:

    kind             "checkpoint", "converted", "deepmind" or "timm"
    path             the path given
    ema              whether `params` are EMA weights
    step             the checkpoint's step, from its folder's name (None for
                     imported files or a step folder renamed, e.g. best/)
    label_names      index -> class name, when the training source had them
                     (folder class names, TFDS label names, dataset_info.json)
    resolution       the training resolution (None when unknown)
    eval_resolution  the resolution the run evaluated at; for released weights
                     the variant's test resolution (None when unknown)
    eval_crop_fraction  the fraction of each side the run's eval crop kept
                     (None: the default rule, data/transforms.py)
    loss             "softmax" or "sigmoid" (how to turn logits into scores)
    multi_label      whether the training source was multi-label (None when
                     a checkpoint predates this field)
    config           the run's resolved config as a dict (checkpoints only)

Nothing heavy is imported until `load` is called: orbax and grain come in
with `nfnet/weights/run_checkpoint.py` only when a checkpoint directory is read.
"""
from __future__ import annotations

import os
from typing import Any

from nfnet import convert
from nfnet.weights import run_checkpoint
from nfnet.errors import UserError

KINDS = ("checkpoint", "converted", "deepmind", "timm")
TIMM_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def weights_kind(path: str) -> str:
  """Which of KINDS `path` is, from its name and layout alone (reads nothing).
  A URL (gs://...) is read as a run of ours: a workdir or checkpoint."""
  if run_checkpoint.is_url(path):
    return "checkpoint"
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path!r} does not exist; expected a workdir or checkpoint of ours, a "
        "`python -m nfnet.convert` output, a DeepMind *_haiku.npz or a timm "
        ".safetensors/.pth file.")
  if os.path.isfile(path):
    return "timm" if path.endswith(TIMM_SUFFIXES) else "deepmind"
  if os.path.isfile(os.path.join(path, convert.MODEL_DESCRIPTION_FILE)):
    return "converted"
  return "checkpoint"


def _variant_resolutions(model) -> tuple[int | None, int | None]:
  """The paper's (train, test) px for a full-width released variant."""
  if model.width != 1.0 or model.depths not in (None, tuple(model.spec.depths)):
    return None, None
  return model.spec.train_resolution, model.spec.test_resolution


def _imported_info(kind: str, path: str, model) -> dict[str, Any]:
  train_px, test_px = _variant_resolutions(model)
  # DeepMind's and timm's released heads are ImageNet softmax classifiers.
  return {"kind": kind, "path": path, "ema": False, "step": None,
          "label_names": None, "resolution": train_px,
          "eval_resolution": test_px, "eval_crop_fraction": None,
          "loss": "softmax", "multi_label": False, "config": None}


def _checkpoint_info(path: str, step_dir: str, run: dict,
                     ema: bool) -> dict[str, Any]:
  config = run.get("config", {})
  resolution = config.get("resolution")
  # Orbax names step folders by their step; a copied one may be named anything.
  folder = os.path.basename(os.path.normpath(step_dir))
  return {"kind": "checkpoint", "path": path, "ema": ema,
          "step": int(folder) if folder.isdigit() else None,
          "label_names": run.get("label_names"), "resolution": resolution,
          "eval_resolution": config.get("eval_resolution") or resolution,
          "eval_crop_fraction": config.get("eval_crop_fraction"),
          "loss": config.get("loss", "softmax"),
          "multi_label": run.get("multi_label"), "config": config}


def load(path: str | os.PathLike, *, ema: bool = False,
         **model_overrides: Any) -> tuple[Any, Any, dict[str, Any]]:
  """(NFNet, params as numpy arrays, info) for any weights we accept.

  `model_overrides` replace NFNet fields of the loaded model that do not
  change the weights' shapes (e.g. `dtype=jnp.bfloat16`, `conv_impl`).
  """
  path = os.fspath(path)
  kind = weights_kind(path)
  if ema and kind != "checkpoint":
    raise UserError(f"{path} is a {kind} file: only our checkpoints hold EMA "
                     "weights; drop ema=True / --ema.")
  if kind == "timm":
    model, params = convert.load_timm(path, **model_overrides)
    return model, params, _imported_info(kind, path, model)
  if kind == "deepmind":
    model, params = convert.load_deepmind(path, **model_overrides)
    return model, params, _imported_info(kind, path, model)
  if kind == "converted":
    model, params = convert.load_converted(path, **model_overrides)
    return model, params, _imported_info(kind, path, model)
  step_dir = run_checkpoint.find_checkpoint_step_dir(path)
  params, run = run_checkpoint.load_checkpoint_params(step_dir, ema=ema)
  model = convert.model_from_description(run["model"], **model_overrides)
  return model, params, _checkpoint_info(path, step_dir, run, ema)


def read_label_names(path: str | os.PathLike, num_classes: int | None = None
                     ) -> list[str]:
  """A names file, one class name per line (index = line number; blank
  lines at the end are ignored); checked against the head's class count."""
  with open(path, encoding="utf-8") as f:
    names = [line.rstrip("\r\n") for line in f]
  while names and not names[-1].strip():
    names.pop()
  if num_classes is not None and len(names) != num_classes:
    raise UserError(f"{path} has {len(names)} class names but the model's head "
                     f"has {num_classes} classes; give one name per line, in "
                     "class-index order.")
  return names
