"""Reading PyTorch checkpoints without PyTorch (nfnet/weights/torch_zip.py).

tests/data/torch_checkpoint.pth was written by torch.save itself (PyTorch
2.14, tests/data/write_torch_checkpoint.py); the damaged and hostile archives
below are built here in the same layout.
"""
import collections
import io
import os
import pickle
import sys
import types
import zipfile

import ml_dtypes
import numpy as np
import pytest

from nfnet.errors import WeightImportError
from nfnet.weights import timm_file, torch_zip

CHECKPOINT = os.path.join(os.path.dirname(__file__), "data", "torch_checkpoint.pth")


def base() -> np.ndarray:
  """write_torch_checkpoint.py's `base`: k / 8 - 1 for k = 0..23."""
  return np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8 - 1


def test_a_torch_save_checkpoint_reads_without_torch():
  checkpoint = torch_zip.load(CHECKPOINT)
  state = checkpoint["state_dict"]
  expected = {
      "module.stem.conv1.weight": base(),
      "module.stem.conv1.bias": base()[1, :, 1],
      "module.head.fc.weight": base().transpose(2, 1, 0),
      "module.half": base().astype(np.float16),
      "module.bfloat16": base().astype(ml_dtypes.bfloat16),
      "module.double": base().astype(np.float64),
      "module.skipinit_gain": np.array(0.5, np.float32),
      "module.num_batches_tracked": np.array(7, np.int64),
      "module.parameter": base()[0],
      "module.empty": np.zeros((0, 3), np.float32),
      "module.uint16": np.arange(5, dtype=np.uint16),
  }
  assert list(state) == list(expected)
  for name, value in expected.items():
    assert state[name].dtype == value.dtype, name
    np.testing.assert_array_equal(state[name], value, err_msg=name)
  # Views of one storage come back as arrays of their own.
  state["module.stem.conv1.weight"][0, 0, 0] = 5
  assert state["module.head.fc.weight"][0, 0, 0] == -1

  # The rest of a timm training checkpoint reads too; classes this reader
  # does not rebuild keep their state and run nothing.
  assert (checkpoint["epoch"], checkpoint["arch"]) == (3, "dm_nfnet_f0")
  assert isinstance(checkpoint["args"], torch_zip.OpaqueObject)
  assert checkpoint["args"].qualified_name == "argparse.Namespace"
  assert checkpoint["args"].args == ()  # built without arguments, then its state
  assert checkpoint["args"].state == {"lr": 0.1, "model": "dm_nfnet_f0"}
  np.testing.assert_array_equal(
      checkpoint["optimizer"]["state"][0]["momentum_buffer"], np.ones((2, 3, 4)))
  assert checkpoint["optimizer"]["param_groups"][0]["momentum"] == 0.9


def test_timm_reader_takes_the_state_dict_out_of_a_training_checkpoint():
  state = timm_file.read_timm_state_dict(CHECKPOINT)
  # "module." (DataParallel) is dropped, every tensor is float32, and the
  # weights are the state_dict's, not its EMA copy (all zeros).
  assert "stem.conv1.weight" in state and "state_dict_ema" not in state
  assert {v.dtype for v in state.values()} == {np.dtype(np.float32)}
  np.testing.assert_array_equal(state["bfloat16"], base())
  np.testing.assert_array_equal(state["num_batches_tracked"], 7)


def test_a_file_that_is_no_torch_archive_is_named_as_such(tmp_path):
  legacy = tmp_path / "old.pth"
  legacy.write_bytes(pickle.dumps({"weight": [1.0]}))
  if not _torch_installed():
    with pytest.raises(WeightImportError, match="before 1.6.*needs torch"):
      timm_file.read_timm_state_dict(legacy)
  other_zip = tmp_path / "other.pth"
  with zipfile.ZipFile(other_zip, "w") as archive:
    archive.writestr("weights.txt", "1 2 3")
  assert not torch_zip.is_torch_zip(other_zip)
  with pytest.raises(WeightImportError, match="not one written by torch.save"):
    torch_zip.load(other_zip)


# ---------------------------------------------------------------------------
# Archives built here: torch.save's layout with chosen pickles and storages.
# ---------------------------------------------------------------------------


class Storage:
  """A float32 storage of the archive: its key and values."""

  def __init__(self, key: str, values):
    self.key, self.values = key, np.asarray(values, np.float32)


class Tensor:
  """Pickles as torch.save pickles a tensor: _rebuild_tensor_v2 over a
  storage, with its offset, size and stride (in elements)."""

  def __init__(self, storage: Storage, offset: int, size, stride):
    self.args = (storage, offset, tuple(size), tuple(stride), False,
                 collections.OrderedDict())

  def __reduce__(self):
    return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


def write_archive(path, obj, monkeypatch) -> None:
  """torch.save's zip layout for `obj`, whose Tensors refer to Storages. The
  pickle names torch's globals, so stand-in modules are registered while it
  is written (and only then)."""
  torch_module = types.ModuleType("torch")
  utils_module = types.ModuleType("torch._utils")
  float_storage = type("FloatStorage", (), {"__module__": "torch",
                                             "__qualname__": "FloatStorage"})
  torch_module.FloatStorage = float_storage

  def _rebuild_tensor_v2(*args):
    del args
  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  utils_module._rebuild_tensor_v2 = _rebuild_tensor_v2
  storages = {}

  class Pickler(pickle.Pickler):
    def persistent_id(self, o):
      if isinstance(o, Storage):
        storages[o.key] = o.values
        return ("storage", float_storage, o.key, "cpu", o.values.size)
      return None

  with monkeypatch.context() as patch:
    patch.setitem(sys.modules, "torch", torch_module)
    patch.setitem(sys.modules, "torch._utils", utils_module)
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", buffer.getvalue())
    archive.writestr("archive/byteorder", "little")
    archive.writestr("archive/version", "3\n")
    for key, values in storages.items():
      archive.writestr(f"archive/data/{key}", values.tobytes())


def test_hand_built_archive_matches_what_it_was_built_from(tmp_path, monkeypatch):
  storage = Storage("0", np.arange(10))
  path = tmp_path / "built.pth"
  write_archive(path, {"w": Tensor(storage, 2, (2, 3), (1, 2))}, monkeypatch)
  np.testing.assert_array_equal(torch_zip.load(path)["w"],
                                [[2, 4, 6], [3, 5, 7]])


def test_damaged_archives_are_refused_not_read_past_their_storage(tmp_path,
                                                                  monkeypatch):
  storage = Storage("0", np.arange(6))
  past_the_end = tmp_path / "past.pth"
  # Element 2 + 2 * 2 + 1 * 1 = 7 of a storage of 6.
  write_archive(past_the_end, {"w": Tensor(storage, 2, (3, 2), (2, 1))},
                monkeypatch)
  with pytest.raises(WeightImportError, match="reads element 7 of a storage "
                     "of 6: the file is damaged"):
    torch_zip.load(past_the_end)

  truncated = tmp_path / "truncated.pth"
  write_archive(truncated, {"w": Tensor(storage, 0, (6,), (1,))}, monkeypatch)
  with zipfile.ZipFile(truncated) as archive:
    files = {n: archive.read(n) for n in archive.namelist()}
  files["archive/data/0"] = files["archive/data/0"][:-4]
  with zipfile.ZipFile(truncated, "w") as archive:
    for name, data in files.items():
      archive.writestr(name, data)
  with pytest.raises(WeightImportError, match="storage 0 holds 20 bytes, not "
                     "the 6 float32 values"):
    timm_file.read_timm_state_dict(truncated)


class RunsACommand:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_a_hostile_pickle_runs_nothing(tmp_path, monkeypatch):
  marker = tmp_path / "ran"
  path = tmp_path / "hostile.pth"
  write_archive(path, {"w": RunsACommand(marker)}, monkeypatch)
  loaded = torch_zip.load(path)
  assert not marker.exists()
  assert isinstance(loaded["w"], torch_zip.OpaqueObject)
  assert loaded["w"].qualified_name.endswith(".system")
  assert loaded["w"].args == (f"touch {marker}",)
  # As a weight file it holds no tensor, so nothing maps.
  assert timm_file.read_timm_state_dict(path) == {}


def _torch_installed() -> bool:
  import importlib.util  # pylint: disable=import-outside-toplevel
  return importlib.util.find_spec("torch") is not None
