"""Reading timm state dicts (.safetensors; .pth and pytorch_model.bin without
PyTorch)."""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from nfnet.errors import WeightImportError
from nfnet.weights import torch_zip


def _is_safetensors(path) -> bool:
  """safetensors files start with a little-endian u64 header size, then '{'."""
  with open(path, "rb") as f:
    head = f.read(9)
  return len(head) == 9 and head[8:9] == b"{"


def read_timm_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a timm state dict as {name: float32 numpy array}."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No such weight file: {path}")
  if str(path).endswith(".safetensors") or _is_safetensors(path):
    from safetensors.numpy import load_file
    try:
      state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types.
      raise WeightImportError(f"{path} is not a readable safetensors file "
                              f"({e}).") from None
  else:
    state = _read_torch_state_dict(path)
  if state and all(k.startswith("module.") for k in state):  # DataParallel.
    state = {k[len("module."):]: v for k, v in state.items()}
  return {k: np.asarray(v, np.float32) for k, v in state.items()}


def _read_torch_state_dict(path) -> dict[str, np.ndarray]:
  """A .pth / pytorch_model.bin state dict. torch.save's zip archives (PyTorch
  1.6 and later: every timm and Hugging Face file) are read without PyTorch;
  the older format needs torch itself."""
  if torch_zip.is_torch_zip(path):
    state = torch_zip.load(path)
  else:
    state = _torch_load_legacy(path)
  for wrapper in ("state_dict", "model"):  # Training checkpoints nest it.
    if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
      state = state[wrapper]
  if not isinstance(state, Mapping):
    raise WeightImportError(f"{path} holds a {type(state).__name__}, not a "
                            "state dict")
  return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


def _torch_load_legacy(path):
  """Files in PyTorch's format from before 1.6 (not a zip archive)."""
  try:
    import torch  # Optional: only the pre-1.6 format needs it.
  except ImportError:
    raise WeightImportError(
        f"{path} is not a safetensors file nor a torch.save zip archive; if "
        "it was saved by PyTorch before 1.6, reading it needs torch, which "
        "is not installed. Either `pip install torch`, or use the "
        ".safetensors file of the same weights (timm publishes one, e.g. "
        "model.safetensors in the Hugging Face repository "
        "timm/dm_nfnet_f0.dm_in1k).") from None
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for bad or unsafe files.
    raise WeightImportError(f"{path} could not be read by torch.load("
                            f"weights_only=True): {e}") from None
  return _numpy_tensors(state, torch)


def _numpy_tensors(state, torch):
  if isinstance(state, Mapping):
    return {k: _numpy_tensors(v, torch) for k, v in state.items()}
  return state.detach().float().numpy() if torch.is_tensor(state) else state
