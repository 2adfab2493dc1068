"""Importing DeepMind and timm NFNet weights (nfnet/convert.py).

The source files are built here, by writers that follow the sources' own
layouts (DeepMind's nfnets/nfnet.py module names, timm/models/nfnet.py), not
nfnet.convert's tables. Each format is checked against a small NumPy
re-implementation of its source's forward pass that reads the file's tensors
by their own names: DeepMind's Haiku NFNet (nfnets/nfnet.py, nfnets/base.py)
and timm's NormFreeNet.
"""
import json
import os
import pickle
import subprocess
import sys
import types

import dill
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import nfnet
from flax import traverse_util
from numpy.lib.stride_tricks import sliding_window_view
from safetensors.numpy import save_file
from scipy.special import erf
from test_torch_zip import Storage, Tensor, write_archive

from data import synthetic
from finetune import main as finetune_main
from finetune.configs import synthetic as finetune_synthetic
from nfnet import convert
from nfnet.train import checkpoints, setup
from nfnet.weights import run_checkpoint
from nfnet.train import state as state_lib
from nfnet import variants
from nfnet.info import abstract_params
from nfnet.model import NFNet, count_params

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(variant="F0", num_classes=10, width=0.125, depths=(1, 1, 1, 1),
            group_size=16)
# A tiny timm-layout net: F0 widths / 8, two blocks in stages 1 and 3 so that
# per-stage block numbering and identity shortcuts are exercised.
TIMM_TINY = dict(widths=(32, 64, 192, 192), depths=(1, 2, 1, 2), group_size=16,
                 num_classes=10)


# ---------------------------------------------------------------------------
# Source-format writers.
# ---------------------------------------------------------------------------


def to_haiku_layout(params):
  """Our params -> DeepMind's {module path: {leaf: array}}, through our own
  names: for tests whose point is not the name mapping."""
  haiku = {}

  def put(module, leaf, value):
    haiku.setdefault("NFNet/~/" + module, {})[leaf] = value

  def put_conv(module, conv):
    put(module, "w", conv["kernel"])
    put(module, "gain", conv["gain"])
    put(module, "bias", conv["bias"])

  for name, sub in params.items():
    if name.startswith("stem_conv") or name == "final_conv":
      put_conv(name, sub)
    elif name == "classifier":
      put("linear", "w", sub["kernel"])
      put("linear", "b", sub["bias"])
    else:
      index = int(name.rsplit("_", 1)[1])
      block = "nf_block" if index == 0 else f"nf_block_{index}"
      put(block, "skip_gain", sub["skip_gain"])
      for conv in ("conv0", "conv1", "conv1b", "conv2", "conv_shortcut"):
        if conv in sub:
          put_conv(f"{block}/~/{conv}", sub[conv])
      for ours, linear in (("fc0", "linear"), ("fc1", "linear_1")):
        se = sub["squeeze_excite"][ours]
        put(f"{block}/~/squeeze_excite/~/{linear}", "w", se["kernel"])
        put(f"{block}/~/squeeze_excite/~/{linear}", "b", se["bias"])
  return haiku


def haiku_params(make, widths, depths, group_size, num_classes):
  """Parameters as DeepMind's Haiku NFNet creates and names them.

  nfnets/nfnet.py: modules are created under "NFNet"; the stem's WSConv2Ds are
  stem_conv0..3 (16, 32, 64, widths[0] // 2 channels); the NFBlocks are
  nf_block, nf_block_1, ... (Haiku names the first instance without a
  suffix), each with conv0 (1x1), conv1 and conv1b (3x3, groups of
  `group_size`), conv2 (1x1), conv_shortcut (1x1, when the block strides or
  changes width) and a SqueezeExcite with hk.Linear linear / linear_1
  (hidden = int(width * 0.5)); then final_conv (1x1, 2x width) and the
  classifier hk.Linear "linear". WSConv2D leaves: w HWIO, gain [O], bias [O];
  hk.Linear: w [in, out], b [out]; NFBlock: skip_gain (scalar).
  `make(shape, kind)` makes each tensor.
  """
  params = {}

  def conv(module, out_ch, in_ch, k):
    params[f"NFNet/~/{module}"] = {"w": make((k, k, in_ch, out_ch), "conv"),
                                   "gain": make((out_ch,), "gain"),
                                   "bias": make((out_ch,), "bias")}

  def linear(module, in_ch, out_ch):
    params[f"NFNet/~/{module}"] = {"w": make((in_ch, out_ch), "dense"),
                                   "b": make((out_ch,), "bias")}

  in_ch = 3
  for j, ch in enumerate((16, 32, 64, widths[0] // 2)):
    conv(f"stem_conv{j}", ch, in_ch, 3)
    in_ch = ch
  index = 0
  for s, (width, depth) in enumerate(zip(widths, depths)):
    mid = int(width * 0.5) // group_size * group_size
    for b in range(depth):
      block = "nf_block" if index == 0 else f"nf_block_{index}"
      stride = 2 if s > 0 and b == 0 else 1
      if stride > 1 or in_ch != width:
        conv(f"{block}/~/conv_shortcut", width, in_ch, 1)
      conv(f"{block}/~/conv0", mid, in_ch, 1)
      conv(f"{block}/~/conv1", mid, group_size, 3)
      conv(f"{block}/~/conv1b", mid, group_size, 3)
      conv(f"{block}/~/conv2", width, mid, 1)
      hidden = max(1, int(width * 0.5))
      linear(f"{block}/~/squeeze_excite/~/linear", width, hidden)
      linear(f"{block}/~/squeeze_excite/~/linear_1", hidden, width)
      params[f"NFNet/~/{block}"] = {"skip_gain": make((), "skip")}
      in_ch, index = width, index + 1
  conv("final_conv", 2 * in_ch, in_ch, 1)
  linear("linear", 2 * in_ch, num_classes)
  return params


def timm_state_dict(make, widths, depths, group_size, num_classes):
  """A dm_nfnet state dict laid out as timm's NormFreeNet names and stores it.

  Convs (ScaledStdConv2dSame): weight OIHW, gain [O,1,1,1], bias [O]. SE
  (attn_last): 1x1 nn.Conv2d fc1/fc2 with bias. Head: nn.Linear [C, in].
  The stem is the F-series 16/32/64/(widths[0] // 2) stem at every width.
  `make(shape, kind)` makes each tensor.
  """
  sd = {}

  def conv(name, out_ch, in_ch, k):
    sd[f"{name}.weight"] = make((out_ch, in_ch, k, k), "conv")
    sd[f"{name}.gain"] = make((out_ch, 1, 1, 1), "gain")
    sd[f"{name}.bias"] = make((out_ch,), "bias")

  in_ch = 3
  for j, ch in enumerate((16, 32, 64, widths[0] // 2)):
    conv(f"stem.conv{j + 1}", ch, in_ch, 3)
    in_ch = ch
  for s, (width, depth) in enumerate(zip(widths, depths)):
    mid = width // 2 // group_size * group_size
    for b in range(depth):
      p = f"stages.{s}.{b}"
      if b == 0:
        conv(f"{p}.downsample.conv", width, in_ch, 1)
      conv(f"{p}.conv1", mid, in_ch, 1)
      conv(f"{p}.conv2", mid, group_size, 3)
      conv(f"{p}.conv2b", mid, group_size, 3)
      conv(f"{p}.conv3", width, mid, 1)
      sd[f"{p}.attn_last.fc1.weight"] = make((width // 2, width, 1, 1), "dense")
      sd[f"{p}.attn_last.fc1.bias"] = make((width // 2,), "bias")
      sd[f"{p}.attn_last.fc2.weight"] = make((width, width // 2, 1, 1), "dense")
      sd[f"{p}.attn_last.fc2.bias"] = make((width,), "bias")
      sd[f"{p}.skipinit_gain"] = make((), "skip")
      in_ch = width
  conv("final_conv", 2 * widths[-1], in_ch, 1)
  sd["head.fc.weight"] = make((num_classes, 2 * widths[-1]), "dense")
  sd["head.fc.bias"] = make((num_classes,), "bias")
  return sd


def random_maker(seed=0):
  """Tensors of trained-looking scale. Conv weights have std 0.01 so that
  timm's additive 1e-5 epsilon visibly changes the standardization."""
  rng = np.random.default_rng(seed)
  draw = {
      "conv": lambda s: rng.normal(0, 0.01, s),
      "dense": lambda s: rng.normal(0, 0.1, s),
      "gain": lambda s: rng.uniform(0.5, 1.5, s),
      "bias": lambda s: rng.normal(0, 0.1, s),
      "skip": lambda s: rng.normal(0, 1.0, s),
  }
  return lambda shape, kind: np.asarray(draw[kind](shape), np.float32)


def zeros_maker(shape, kind):
  """Full-size tensors without memory: one zero broadcast to the shape."""
  del kind
  return np.broadcast_to(np.float32(0), shape)


def tiny_timm_state_dict(seed=0):
  return timm_state_dict(random_maker(seed), **TIMM_TINY)


def random_params(model, seed=0):
  """Random parameters of the model's shapes (non-zero SkipInit gains too)."""
  rng = np.random.default_rng(seed)
  shapes = flat(abstract_params(model, resolution=32))
  return traverse_util.unflatten_dict({
      tuple(path.split("/")): np.asarray(
          rng.normal(0, 0.2, s.shape) + (path.endswith("gain") and
                                         not path.endswith("skip_gain")),
          np.float32)
      for path, s in shapes.items()})


def logits(model, params, images):
  """Jitted inference: eager dispatch of every op is far slower here."""
  return np.asarray(jax.jit(
      lambda p, x: model.apply({"params": p}, x, is_training=False))(
          params, images))


def flat(params):
  return traverse_util.flatten_dict(params, sep="/")


# ---------------------------------------------------------------------------
# timm's forward pass in NumPy (float64, NCHW, OIHW), from timm/models/nfnet.py
# (NormFreeNet with _dm_nfnet_cfg) and timm/layers (ScaledStdConv2dSame,
# pad_same, SEModule).
# ---------------------------------------------------------------------------

GELU_GAMMA = 1.7015043497085571
ALPHA = 0.2


def timm_act(x):
  """GammaAct('gelu'): torch's exact erf GELU times the gamma."""
  return 0.5 * x * (1 + erf(x / np.sqrt(2))) * GELU_GAMMA


def timm_standardized_weight(sd, name):
  """F.batch_norm(w.reshape(1, O, -1), weight=gain * fan_in**-0.5, eps=1e-5)."""
  w = sd[f"{name}.weight"].astype(np.float64)
  rows = w.reshape(w.shape[0], -1)
  mean, var = rows.mean(1, keepdims=True), rows.var(1, keepdims=True)
  scale = sd[f"{name}.gain"].reshape(-1, 1) * rows.shape[1] ** -0.5
  return ((rows - mean) / np.sqrt(var + 1e-5) * scale).reshape(w.shape)


def timm_pad_same(x, k, stride):
  """timm.layers.padding.pad_same: TF 'SAME', the odd pixel bottom/right."""
  pads = []
  for size in x.shape[2:]:
    total = max((-(-size // stride) - 1) * stride + k - size, 0)
    pads.append((total // 2, total - total // 2))
  return np.pad(x, ((0, 0), (0, 0), *pads))


def timm_conv(sd, name, x, stride=1):
  w = timm_standardized_weight(sd, name)
  out_ch, in_per_group, k, _ = w.shape
  groups = x.shape[1] // in_per_group
  windows = sliding_window_view(timm_pad_same(x, k, stride), (k, k),
                                axis=(2, 3))[:, :, ::stride, ::stride]
  out_per_group = out_ch // groups
  out = np.concatenate([
      np.einsum("nchwij,ocij->nohw",
                windows[:, g * in_per_group:(g + 1) * in_per_group],
                w[g * out_per_group:(g + 1) * out_per_group], optimize=True)
      for g in range(groups)], axis=1)
  return out + sd[f"{name}.bias"][None, :, None, None]


def timm_avg_pool(x):
  """nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)."""
  n, c, h, w = x.shape
  padded = np.full((n, c, h + h % 2, w + w % 2), np.nan)
  padded[:, :, :h, :w] = x
  windows = padded.reshape(n, c, (h + 1) // 2, 2, (w + 1) // 2, 2)
  return np.nanmean(windows, axis=(3, 5))


def timm_squeeze_excite(sd, name, x):
  """SEModule: mean -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid, times x."""
  h = x.mean((2, 3)) @ sd[f"{name}.fc1.weight"][:, :, 0, 0].T
  h = np.maximum(h + sd[f"{name}.fc1.bias"], 0)
  h = h @ sd[f"{name}.fc2.weight"][:, :, 0, 0].T + sd[f"{name}.fc2.bias"]
  return x / (1 + np.exp(-h))[:, :, None, None]


def timm_forward(sd, images_nchw, depths):
  x = images_nchw.astype(np.float64)
  for j, stride in enumerate((2, 1, 1, 2)):  # stem, 'deep_quad'
    x = timm_conv(sd, f"stem.conv{j + 1}", x, stride)
    x = timm_act(x) if j < 3 else x
  expected_var = 1.0
  for s, depth in enumerate(depths):
    for b in range(depth):
      p, stride = f"stages.{s}.{b}", 2 if s > 0 and b == 0 else 1
      out = timm_act(x) * expected_var ** -0.5
      shortcut = x
      if f"{p}.downsample.conv.weight" in sd:
        shortcut = timm_conv(sd, f"{p}.downsample.conv",
                             timm_avg_pool(out) if stride == 2 else out)
      out = timm_conv(sd, f"{p}.conv1", out)
      out = timm_conv(sd, f"{p}.conv2", timm_act(out), stride)
      out = timm_conv(sd, f"{p}.conv2b", timm_act(out))
      out = timm_conv(sd, f"{p}.conv3", timm_act(out))
      out = 2.0 * timm_squeeze_excite(sd, f"{p}.attn_last", out)
      x = out * sd[f"{p}.skipinit_gain"] * ALPHA + shortcut
      expected_var = (1.0 if b == 0 else expected_var) + ALPHA**2
  x = timm_act(timm_conv(sd, "final_conv", x))
  return x.mean((2, 3)) @ sd["head.fc.weight"].T + sd["head.fc.bias"]


# ---------------------------------------------------------------------------
# DeepMind's forward pass in NumPy (float64, NHWC, HWIO), from nfnets/nfnet.py
# (NFNet, NFBlock) and nfnets/base.py (WSConv2D, SqueezeExcite,
# nonlinearities['gelu']), reading each tensor by its Haiku name.
# ---------------------------------------------------------------------------


def dm_gelu(x):
  """nonlinearities['gelu']: jax.nn.gelu (tanh approximation) times gamma."""
  tanh_gelu = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
  return tanh_gelu * GELU_GAMMA


def dm_standardized_weight(conv):
  """WSConv2D.standardize_weight: per output channel over H, W, I,
  scale = gain * rsqrt(max(var * fan_in, 1e-4)); w * scale - mean * scale."""
  w = conv["w"].astype(np.float64)
  fan_in = np.prod(w.shape[:-1])
  mean, var = w.mean((0, 1, 2), keepdims=True), w.var((0, 1, 2), keepdims=True)
  scale = conv["gain"] / np.sqrt(np.maximum(var * fan_in, 1e-4))
  return w * scale - mean * scale


def dm_same_pads(size, k, stride):
  """lax 'SAME': ceil(size / stride) outputs, the odd pixel bottom/right."""
  total = max((-(-size // stride) - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


def dm_conv(conv, x, stride=1):
  """WSConv2D: lax.conv_general_dilated (NHWC, HWIO, SAME, grouped) + bias."""
  w = dm_standardized_weight(conv)
  k, _, in_per_group, out_ch = w.shape
  groups = x.shape[-1] // in_per_group
  padded = np.pad(x, ((0, 0), dm_same_pads(x.shape[1], k, stride),
                      dm_same_pads(x.shape[2], k, stride), (0, 0)))
  # [N, H', W', C, k, k] windows at the strided output positions.
  windows = sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::stride, ::stride]
  out_per_group = out_ch // groups
  out = np.concatenate([
      np.einsum("nhwcij,ijco->nhwo",
                windows[:, :, :, g * in_per_group:(g + 1) * in_per_group],
                w[..., g * out_per_group:(g + 1) * out_per_group], optimize=True)
      for g in range(groups)], axis=-1)
  return out + conv["bias"]


def dm_avg_pool(x):
  """hk.avg_pool(window 2, stride 2, 'SAME'): the mean of the in-image pixels
  of each window (Haiku divides by the count of non-padded positions)."""
  n, h, w, c = x.shape
  padded = np.full((n, h + h % 2, w + w % 2, c), np.nan)
  padded[:, :h, :w] = x
  windows = padded.reshape(n, (h + 1) // 2, 2, (w + 1) // 2, 2, c)
  return np.nanmean(windows, axis=(2, 4))


def dm_squeeze_excite(params, module, x):
  """SqueezeExcite: mean over H, W -> linear -> ReLU -> linear_1 -> sigmoid."""
  fc0, fc1 = params[f"{module}/~/linear"], params[f"{module}/~/linear_1"]
  h = np.maximum(x.mean((1, 2)) @ fc0["w"] + fc0["b"], 0)
  return 1 / (1 + np.exp(-(h @ fc1["w"] + fc1["b"])))[:, None, None]


def deepmind_forward(params, images_nhwc, depths, alpha=ALPHA):
  """NFNet.__call__(is_training=False)["logits"]."""
  p = lambda module: params[f"NFNet/~/{module}"]
  x = images_nhwc.astype(np.float64)
  for j, stride in enumerate((2, 1, 1, 2)):
    x = dm_conv(p(f"stem_conv{j}"), x, stride)
    x = dm_gelu(x) if j < 3 else x
  expected_std, index = 1.0, 0
  for s, depth in enumerate(depths):
    for b in range(depth):
      block = "nf_block" if index == 0 else f"nf_block_{index}"
      stride = 2 if s > 0 and b == 0 else 1  # stride_pattern [1, 2, 2, 2]
      projection = f"NFNet/~/{block}/~/conv_shortcut" in params
      out = dm_gelu(x) * (1.0 / expected_std)  # beta
      if stride > 1:
        shortcut = dm_avg_pool(out)
        if projection:
          shortcut = dm_conv(p(f"{block}/~/conv_shortcut"), shortcut)
      elif projection:
        shortcut = dm_conv(p(f"{block}/~/conv_shortcut"), out)
      else:
        shortcut = x
      out = dm_conv(p(f"{block}/~/conv0"), out)
      out = dm_conv(p(f"{block}/~/conv1"), dm_gelu(out), stride)
      out = dm_conv(p(f"{block}/~/conv1b"), dm_gelu(out))
      out = dm_conv(p(f"{block}/~/conv2"), dm_gelu(out))
      out = (dm_squeeze_excite(params, f"NFNet/~/{block}/~/squeeze_excite",
                               out) * 2) * out
      x = out * p(block)["skip_gain"] * alpha + shortcut
      if b == 0:  # reset, but still give it one block of growth
        expected_std = 1.0
      expected_std = (expected_std**2 + alpha**2) ** 0.5
      index += 1
  x = dm_gelu(dm_conv(p("final_conv"), x))
  return x.mean((1, 2)) @ p("linear")["w"] + p("linear")["b"]


# ---------------------------------------------------------------------------
# DeepMind pickles.
# ---------------------------------------------------------------------------


def tiny_haiku_params(seed=0):
  """TIMM_TINY's net in DeepMind's layout. Two convs get weights so small that
  var * fan_in is under WSConv2D's 1e-4 floor, so that the floor, not an
  epsilon added to the variance, sets their scale."""
  params = haiku_params(random_maker(seed), **TIMM_TINY)
  for module in ("NFNet/~/stem_conv0", "NFNet/~/nf_block/~/conv_shortcut"):
    params[module]["w"] = params[module]["w"] * np.float32(0.1)
  return params


def test_deepmind_weights_reproduce_the_reference_forward(tmp_path):
  haiku = tiny_haiku_params()
  path = tmp_path / "F0_haiku.npz"
  with open(path, "wb") as f:
    dill.dump(haiku, f)

  model, params = convert.load_deepmind(path)

  assert model.stage_widths() == TIMM_TINY["widths"]
  assert model.stage_depths() == TIMM_TINY["depths"]
  assert (model.group_size, model.num_classes) == (16, 10)
  assert count_params(params) == sum(v.size for leaves in haiku.values()
                                     for v in leaves.values())
  # 34 px makes odd feature maps (17 -> 9 -> 5 -> 3 -> 2): asymmetric SAME
  # padding in strided convs and partial windows in the shortcut pooling.
  images = np.random.default_rng(2).normal(size=(2, 34, 34, 3)).astype(np.float32)
  reference = deepmind_forward(haiku, images, TIMM_TINY["depths"])
  ours = logits(model, params, images)
  # float32 against float64: measured 4e-7 of the logit scale; the tolerance
  # is 5e-6 of it, under the smallest departure from the reference below.
  tolerance = 5e-6 * np.abs(reference).max()
  np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=tolerance)

  # Each reference setting matters at this tolerance: the same weights with
  # erf GELU (measured 1.4e-4 of the logit scale off) or an epsilon added to
  # the variance (0.6 off) miss it.
  description = convert.model_to_description(model)
  for other_numerics in (dict(activation="gelu_exact"),
                         dict(ws_eps_mode="add", ws_eps=1e-4)):
    other = convert.model_from_description(description, **other_numerics)
    assert np.abs(logits(other, params, images) - reference).max() > 5 * tolerance


def test_deepmind_pickle_of_old_haiku_flatmapping_loads(tmp_path, monkeypatch):
  """Haiku once returned FlatMapping; its pickles are `FlatMapping(dict)` and
  must load without Haiku installed."""
  fake = types.ModuleType("haiku._src.data_structures")

  class FlatMapping(dict):
    __module__ = "haiku._src.data_structures"
    __qualname__ = "FlatMapping"

    def __reduce__(self):
      return FlatMapping, (dict(self),)

  fake.FlatMapping = FlatMapping
  monkeypatch.setitem(sys.modules, "haiku", types.ModuleType("haiku"))
  monkeypatch.setitem(sys.modules, "haiku._src", types.ModuleType("haiku._src"))
  monkeypatch.setitem(sys.modules, "haiku._src.data_structures", fake)
  model = NFNet(**TINY)
  params = random_params(model, seed=3)
  haiku = to_haiku_layout(params)
  path = tmp_path / "F0_haiku.npz"
  with open(path, "wb") as f:
    pickle.dump(FlatMapping({m: FlatMapping(v) for m, v in haiku.items()}), f)
  assert b"FlatMapping" in path.read_bytes()
  monkeypatch.undo()

  _, loaded = convert.load_deepmind(path)
  for key, value in flat(params).items():
    np.testing.assert_array_equal(flat(loaded)[key], value, err_msg=key)


class _RunsACommand:
  """Unpickling this calls os.system: what a hostile weight file would do."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


def test_deepmind_pickle_with_code_is_refused_unrun(tmp_path):
  marker = tmp_path / "executed"
  path = tmp_path / "F0_haiku.npz"
  with open(path, "wb") as f:
    dill.dump({"NFNet/~/linear": {"w": _RunsACommand(f"touch {marker}")}}, f)

  with pytest.raises(convert.WeightImportError,
                     match=r"refusing to load '(posix|nt|os)\.system'"):
    convert.load_deepmind(path)
  assert not marker.exists()


@pytest.mark.parametrize("content", [b"<html>404 Not Found</html>",
                                     b"\x89PNG\r\n\x1a\n" + bytes(40)])
def test_a_file_that_is_not_a_pickle_says_so(tmp_path, content):
  path = tmp_path / "F0_haiku.npz"
  path.write_bytes(content)
  with pytest.raises(convert.WeightImportError,
                     match="is not a readable Haiku parameter pickle"):
    convert.load_deepmind(path)


def test_deepmind_mismatches_are_listed_together(tmp_path):
  haiku = to_haiku_layout(random_params(NFNet(**TINY)))
  del haiku["NFNet/~/nf_block_1/~/conv1b"]["w"]
  haiku["NFNet/~/nf_block_1/~/mystery"] = {"w": np.zeros((3,), np.float32)}
  haiku["NFNet/~/linear"]["b"] = np.zeros((7,), np.float32)
  path = tmp_path / "F0_haiku.npz"
  with open(path, "wb") as f:
    dill.dump(haiku, f)

  with pytest.raises(convert.WeightImportError) as error:
    convert.load_deepmind(path)
  message = str(error.value)
  assert "3 problem(s)" in message
  assert "missing NFNet/~/nf_block_1/~/conv1b:w" in message
  assert "unexpected NFNet/~/nf_block_1/~/mystery:w" in message
  assert "wrong shape NFNet/~/linear:b: (7,)" in message


@pytest.mark.parametrize("variant,num_params", [
    ("F0", 71_489_284), ("F6", 438_359_116), ("F4+", 524_954_484)])
def test_full_size_deepmind_variant_is_inferred(variant, num_params):
  spec = variants.get_variant(variant)
  haiku = haiku_params(zeros_maker, spec.widths, spec.depths, 128, 1000)
  model, params = convert.convert_haiku_params(haiku)
  assert convert.model_to_description(model) == convert.model_to_description(
      NFNet(variant=variant, activation="gelu", ws_eps_mode="floor",
            ws_eps=1e-4))
  assert count_params(params) == num_params


# ---------------------------------------------------------------------------
# timm state dicts.
# ---------------------------------------------------------------------------


def test_timm_weights_reproduce_timm_forward(tmp_path):
  sd = tiny_timm_state_dict()
  path = tmp_path / "dm_nfnet_tiny.safetensors"
  save_file(sd, str(path))

  model, params = convert.load_timm(path)

  assert model.stage_widths() == TIMM_TINY["widths"]
  assert model.stage_depths() == TIMM_TINY["depths"]
  assert (model.group_size, model.num_classes) == (16, 10)
  # 34 px makes odd feature maps (17 -> 9 -> 5 -> 3 -> 2): asymmetric SAME
  # padding in strided convs and partial windows in the shortcut pooling.
  images = np.random.default_rng(2).normal(size=(2, 34, 34, 3)).astype(np.float32)
  reference = timm_forward(sd, images.transpose(0, 3, 1, 2),
                           TIMM_TINY["depths"])
  ours = logits(model, params, images)
  # float32 against float64: measured 5e-7 of the logit scale.
  tolerance = 2e-5 * np.abs(reference).max()
  np.testing.assert_allclose(ours, reference, rtol=2e-5, atol=tolerance)

  # Each timm setting matters at this tolerance: the same weights with tanh
  # GELU (measured 4e-4 off) or the reference's variance floor (0.5 off)
  # miss it.
  description = convert.model_to_description(model)
  for reference_numerics in (dict(activation="gelu"),
                             dict(ws_eps_mode="floor", ws_eps=1e-4)):
    other = convert.model_from_description(description, **reference_numerics)
    assert np.abs(logits(other, params, images) - reference).max() > 5 * tolerance


def test_timm_mismatches_are_listed_together(tmp_path):
  sd = tiny_timm_state_dict()
  del sd["stages.1.1.conv2b.weight"]
  sd["stages.0.0.attn.fc1.weight"] = np.zeros((4, 4, 1, 1), np.float32)
  sd["final_conv.bias"] = sd["final_conv.bias"][:5]
  path = tmp_path / "bad.safetensors"
  save_file(sd, str(path))

  with pytest.raises(convert.WeightImportError) as error:
    convert.load_timm(path)
  message = str(error.value)
  assert "3 problem(s)" in message
  assert "missing stages.1.1.conv2b.weight" in message
  assert "unexpected stages.0.0.attn.fc1.weight" in message
  assert "wrong shape final_conv.bias: (5,)" in message


@pytest.mark.parametrize("variant,num_params", [
    ("F0", 71_489_284), ("F3", 254_924_200), ("F6", 438_359_116)])
def test_full_size_timm_variant_is_inferred(variant, num_params):
  spec = variants.get_variant(variant)
  sd = timm_state_dict(zeros_maker, spec.widths, spec.depths, 128, 1000)
  model, params = convert.convert_timm_state_dict(sd)
  assert model.variant == variant and model.depths is None
  assert (model.activation, model.ws_eps_mode, model.ws_eps) == (
      "gelu_exact", "add", 1e-5)
  assert count_params(params) == num_params


def test_timm_pth_reads_without_torch_and_matches_safetensors(tmp_path,
                                                              monkeypatch):
  """The same state dict as a torch.save archive (.pth, Hugging Face's
  pytorch_model.bin) and as safetensors gives the same parameters; no torch
  is needed. The archive is built in torch.save's layout
  (tests/test_torch_zip.py checks that layout against torch.save's own
  output)."""
  sd = tiny_timm_state_dict()
  strides = lambda shape: [int(np.prod(shape[i + 1:])) for i in range(len(shape))]
  archive = {name: Tensor(Storage(str(i), value.ravel()), 0, value.shape,
                          strides(value.shape))
             for i, (name, value) in enumerate(sd.items())}
  pth = tmp_path / "pytorch_model.bin"
  write_archive(pth, {"state_dict": archive, "epoch": 10}, monkeypatch)
  st = tmp_path / "dm_nfnet_tiny.safetensors"
  save_file(sd, str(st))
  _, from_pth = convert.load_timm(pth)
  _, from_st = convert.load_timm(st)
  for key, value in flat(from_st).items():
    np.testing.assert_array_equal(flat(from_pth)[key], value, err_msg=key)


# ---------------------------------------------------------------------------
# Model description and the command line.
# ---------------------------------------------------------------------------


def test_architecture_check_takes_variant_names_in_any_case():
  """`variant=f0` in a config fits F0 weights (variant names are
  case-insensitive everywhere); a different variant is named."""
  tiny = {k: v for k, v in TINY.items() if k != "variant"}
  checkpoints.check_same_architecture(NFNet(variant="F0", **tiny),
                                      NFNet(variant="f0", **tiny))
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match="variant: weights 'F0', config 'F1'"):
    checkpoints.check_same_architecture(NFNet(variant="F0", **tiny),
                                        NFNet(variant="f1", **tiny))


def test_architecture_check_compares_resolved_widths_and_depths():
  """The variant's own depths spelled out, or a width multiplier that gives
  the same channels, describe the same model."""
  checkpoints.check_same_architecture(NFNet(variant="F0"),
                                      NFNet(variant="F0", depths=(1, 2, 6, 3)))
  checkpoints.check_same_architecture(NFNet(variant="F0", width=0.25),
                                      NFNet(variant="F0", width=0.2502))
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"stage_depths: weights \[1, 2, 6, 3\], config \[1, 2, 6, 2\]"):
    checkpoints.check_same_architecture(NFNet(variant="F0"),
                                        NFNet(variant="F0", depths=(1, 2, 6, 2)))


def test_model_description_round_trips_through_json():
  model = NFNet(**TINY, dtype=jnp.bfloat16, drop_rate=0.3,
                ws_eps_mode="add", ws_eps=1e-5)
  description = json.loads(json.dumps(convert.model_to_description(model)))
  assert description["dtype"] == "bfloat16"
  back = convert.model_from_description(description)
  assert back.dtype == jnp.bfloat16 and back.depths == (1, 1, 1, 1)
  assert convert.model_to_description(back) == description
  assert convert.model_from_description(description, dtype="float32").dtype \
      == jnp.float32
  with pytest.raises(convert.WeightImportError, match="colour"):
    convert.model_from_description({**description, "colour": "red"})


def test_cli_converts_timm_weights_and_never_overwrites(tmp_path):
  sd = tiny_timm_state_dict()
  src = tmp_path / "dm_nfnet_tiny.safetensors"
  save_file(sd, str(src))
  dst = tmp_path / "converted"
  command = [sys.executable, "-m", "nfnet.convert", "timm", str(src), str(dst)]
  env = {**os.environ, "PYTHONPATH": REPO_ROOT}

  run = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT,
                       env=env, timeout=300)
  assert run.returncode == 0, run.stderr
  assert "Inferred NFNet-F0 x0.125 (widths 32/64/192/192, depths 1/2/1/2" \
      in run.stdout
  assert f"Mapped {len(sd)} tensors" in run.stdout

  model, params = convert.load_converted(dst)
  expected_model, expected = convert.load_timm(src)
  assert convert.model_to_description(model) == \
      convert.model_to_description(expected_model)
  assert flat(params).keys() == flat(expected).keys()
  for key, value in flat(expected).items():
    np.testing.assert_array_equal(flat(params)[key], value, err_msg=key)

  again = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT,
                         env=env, timeout=300)
  assert again.returncode == 1
  assert "already exists" in again.stderr and "Traceback" not in again.stderr


# ---------------------------------------------------------------------------
# Fine-tuning straight from the released formats.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def downstream_corpus(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synth"))
  synthetic.generate(out, seed=0, num_train=16, num_eval=8, downstream_train_per_class=2,
                     downstream_eval_per_class=1, image_size=32, num_shards=1)
  return out


def _finetune_config(corpus, init_from, **model_fields):
  config = finetune_synthetic.get_config(f"data_dir={corpus},steps=2,res=32")
  config.model.update(width=0.125, depths=(1, 1, 1, 1), group_size=16, **model_fields)
  config.update(init_from=str(init_from), batch_size=8, log_every_steps=1,
                eval_every_steps=1000, checkpoint_every_steps=2)
  return config


def _model_and_fresh_params(config):
  model = setup.build_model(config, num_classes=16)
  return model, state_lib.init_params(model, config.resolution, config.seed)


def test_finetune_runs_from_a_deepmind_pickle(tmp_path, downstream_corpus,
                                              assert_backbone_loaded_and_head_fresh):
  source = random_params(NFNet(**{**TINY, "num_classes": 1000}))
  path = tmp_path / "F0_haiku.npz"
  with open(path, "wb") as f:
    dill.dump(to_haiku_layout(source), f)
  config = _finetune_config(downstream_corpus, path)

  model, fresh = _model_and_fresh_params(config)
  assert_backbone_loaded_and_head_fresh(state_lib.initial_params(model, config), source, fresh)
  metrics = finetune_main.train(config, str(tmp_path / "ft"))
  assert metrics["eval/examples"] == 16 and np.isfinite(metrics["eval/top1"])
  assert os.listdir(tmp_path / "ft" / run_checkpoint.CHECKPOINT_DIRNAME) == ["2"]
  # The run itself starts from the pickle: at lr 0 its weights stay the
  # pickle's (the head aside).
  config.lr = 0.0
  finetune_main.train(config, str(tmp_path / "ft_lr0"))
  _, trained, _ = nfnet.load(str(tmp_path / "ft_lr0"))
  np.testing.assert_array_equal(trained["stem_conv0"]["kernel"],
                                source["stem_conv0"]["kernel"])


def test_finetune_starts_from_timm_weights_with_timm_numerics(
    tmp_path, downstream_corpus, assert_backbone_loaded_and_head_fresh):
  path = tmp_path / "dm_nfnet_f0.safetensors"
  save_file(timm_state_dict(random_maker(0), (32, 64, 192, 192), (1, 1, 1, 1), 16, 1000),
            str(path))
  _, source = convert.load_timm(path)

  # The config must say it wants timm's numerics; otherwise the run names the fields.
  config = _finetune_config(downstream_corpus, path)
  with pytest.raises(checkpoints.CheckpointMismatchError, match="activation.*\n.*ws_eps"):
    state_lib.initial_params(setup.build_model(config, num_classes=16), config)
  config = _finetune_config(downstream_corpus, path, **convert.TIMM_NUMERICS)
  model, fresh = _model_and_fresh_params(config)
  assert_backbone_loaded_and_head_fresh(state_lib.initial_params(model, config), source, fresh)
