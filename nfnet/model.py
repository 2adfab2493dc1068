"""NFNet and NF-ResNet in Flax linen, following the DeepMind reference.

    model = NFNet(variant="F0", num_classes=1000)
    params = model.init(rng, images, is_training=False)["params"]
    logits = model.apply({"params": params}, images, is_training=False)
    # Training mode draws stochastic depth and dropout from the 'dropout' stream:
    logits = model.apply({"params": params}, images, is_training=True,
                         rngs={"dropout": key})
    # Pooled pre-logit features (linear probes, few-shot):
    logits, features = model.apply({"params": params}, images,
                                   return_features=True)

Images are NHWC floats already normalized with `normalize_images`. Logits are
float32 whatever the compute `dtype`.

Parameter tree (stable; weight import and head surgery rely on it):
  NFNet:     stem_conv0..stem_conv3, nf_block_{i}/{conv0, conv1, conv1b, conv2,
             conv_shortcut?, squeeze_excite/{fc0, fc1}, skip_gain},
             final_conv, classifier
  NF-ResNet: stem_conv, nf_block_{i}/{conv0, conv1, conv2, conv_shortcut?,
             skip_gain}, classifier
Every conv holds kernel (HWIO), gain, bias; every dense layer kernel, bias.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nfnet import variants as variants_lib
from nfnet.errors import UserError
from nfnet.layers import (SqueezeExcite, StochasticDepth, WSConv2D,
                          avg_pool_same, gamma_activation, resolve_conv_impl)

Dtype = Any

IMAGENET_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CLASSIFIER = "classifier"  # Name of the head; optimizer masks and head surgery key on it.


def normalize_images(images: jax.Array, dtype: Dtype = jnp.float32) -> jax.Array:
  """uint8 or float 0..255 NHWC pixels -> the model's normalized input."""
  mean = jnp.asarray(IMAGENET_MEAN_RGB, jnp.float32)
  std = jnp.asarray(IMAGENET_STDDEV_RGB, jnp.float32)
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """Static description of one residual block, computed before any module exists."""

  index: int
  in_ch: int
  out_ch: int
  stride: int
  beta: float
  stochdepth_rate: float


def block_specs(stem_ch: int, widths: Sequence[int], depths: Sequence[int],
                strides: Sequence[int], alpha: float,
                stochdepth_rate: float) -> list[BlockSpec]:
  """Expected-variance bookkeeping of the reference, as plain data.

  beta = 1 / expected_std before each block; after each block
  expected_std = sqrt(expected_std^2 + alpha^2), where the first block of a
  stage first resets expected_std to 1 (its shortcut is a fresh projection).
  Block i of N drops its branch with rate `stochdepth_rate * i / N`.
  """
  specs, expected_std, in_ch = [], 1.0, stem_ch
  num_blocks, index = sum(depths), 0
  for width, depth, stride in zip(widths, depths, strides):
    for block_index in range(depth):
      specs.append(BlockSpec(index, in_ch, width,
                             stride if block_index == 0 else 1,
                             1.0 / expected_std,
                             stochdepth_rate * index / num_blocks))
      if block_index == 0:
        expected_std = 1.0
      expected_std = (expected_std**2 + alpha**2)**0.5
      in_ch, index = width, index + 1
  return specs


def bottleneck_groups(spec: BlockSpec, expansion: float, group_size: int) -> int:
  """The groups of an NFNet block's 3x3 convs (at least one)."""
  groups = int(spec.out_ch * expansion) // group_size
  if groups < 1:
    raise UserError(
        f"Block {spec.index}: bottleneck width {int(spec.out_ch * expansion)}"
        f" is below group_size={group_size}; lower group_size for narrow "
        "models.")
  return groups


class NFBlock(nn.Module):
  """NFNet bottleneck: 1x1 -> 3x3 grouped -> 3x3 grouped -> 1x1, SE, SkipInit."""

  spec: BlockSpec
  alpha: float
  activation: str
  expansion: float = 0.5
  group_size: int = 128
  se_ratio: float = 0.5
  use_two_convs: bool = True
  dtype: Dtype = jnp.float32
  conv_impl: str = "native"
  ws_eps: float = 1e-4
  ws_eps_mode: str = "floor"

  @nn.compact
  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    spec, act = self.spec, gamma_activation(self.activation)
    groups = bottleneck_groups(spec, self.expansion, self.group_size)
    width = groups * self.group_size
    conv = lambda features, k, name, stride=1, g=1: WSConv2D(
        features, k, stride, g, dtype=self.dtype, conv_impl=self.conv_impl,
        ws_eps=self.ws_eps, ws_eps_mode=self.ws_eps_mode, name=name)

    out = act(x) * jnp.asarray(spec.beta, x.dtype)
    use_projection = spec.stride > 1 or spec.in_ch != spec.out_ch
    if spec.stride > 1:
      shortcut = conv(spec.out_ch, 1, "conv_shortcut")(avg_pool_same(out))
    elif use_projection:
      shortcut = conv(spec.out_ch, 1, "conv_shortcut")(out)
    else:
      shortcut = x
    out = conv(width, 1, "conv0")(out)
    out = conv(width, 3, "conv1", spec.stride, groups)(act(out))
    if self.use_two_convs:
      out = conv(width, 3, "conv1b", 1, groups)(act(out))
    out = conv(spec.out_ch, 1, "conv2")(act(out))
    se_hidden = max(1, int(spec.out_ch * self.se_ratio))
    out = 2 * SqueezeExcite(se_hidden, self.dtype, name="squeeze_excite")(out) * out
    out = StochasticDepth(spec.stochdepth_rate)(out, is_training)
    skip_gain = self.param("skip_gain", nn.initializers.zeros, (), jnp.float32)
    return out * (skip_gain * self.alpha).astype(out.dtype) + shortcut


class NFResBlock(nn.Module):
  """NF-ResNet pre-activation bottleneck: 1x1 -> 3x3 (strided) -> 1x1, SkipInit."""

  spec: BlockSpec
  alpha: float
  activation: str
  bottleneck_ratio: float = 0.25
  dtype: Dtype = jnp.float32
  conv_impl: str = "native"
  ws_eps: float = 1e-4
  ws_eps_mode: str = "floor"

  @nn.compact
  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    spec, act = self.spec, gamma_activation(self.activation)
    width = int(spec.out_ch * self.bottleneck_ratio)
    conv = lambda features, k, name, stride=1: WSConv2D(
        features, k, stride, dtype=self.dtype, conv_impl=self.conv_impl,
        ws_eps=self.ws_eps, ws_eps_mode=self.ws_eps_mode, name=name)
    out = act(x) * jnp.asarray(spec.beta, x.dtype)
    if spec.stride > 1 or spec.in_ch != spec.out_ch:
      shortcut = conv(spec.out_ch, 1, "conv_shortcut", spec.stride)(out)
    else:
      shortcut = x
    out = conv(width, 1, "conv0")(out)
    out = conv(width, 3, "conv1", spec.stride)(act(out))
    out = conv(spec.out_ch, 1, "conv2")(act(out))
    out = StochasticDepth(spec.stochdepth_rate)(out, is_training)
    skip_gain = self.param("skip_gain", nn.initializers.zeros, (), jnp.float32)
    return out * (skip_gain * self.alpha).astype(out.dtype) + shortcut


class NFNet(nn.Module):
  """The NFNet family (F0-F7, F0+-F7+) and NF-ResNets, selected by `variant`.

  Every constant of the reference is a field. `width` multiplies the stage
  widths, `depths` overrides the per-stage block counts and `group_size` the
  grouped-conv width (tiny test and demo models use all three). `drop_rate`
  None takes the variant's dropout. `conv_impl` picks how every conv runs
  (`layers.conv2d_same`): 'auto' ('matmul' on CPU: grouped convs per group,
  1x1 convs and kernel gradients as matmuls; 'native' elsewhere), 'native',
  'per_group', 'matmul'. `remat` recomputes each block in the backward pass.
  `ws_eps_mode='add'`, `ws_eps=1e-5`, `activation='gelu_exact'` reproduce
  the timm port's numerics. `stem_stride` is the stem's total stride: the
  reference's 4 leaves a 1x1 final map at 32 px, so small images may take 2
  (the stem's last conv, or NF-ResNets' 7x7 conv, does not stride) or 1
  (nothing in the stem strides); the parameters are the same for all three.
  `stem_width` multiplies the widths (16, 32, 64) of the NFNet stem's first
  three convs: they are fixed in the reference, so at 1/4 width they take
  over half of the model's MACs.
  """

  variant: str = "F0"
  num_classes: int = 1000
  width: float = 1.0
  depths: Sequence[int] | None = None
  group_size: int = 128
  activation: str | None = None  # None: the variant's (GELU for F, ReLU for ResNets).
  alpha: float = 0.2
  stochdepth_rate: float = 0.1
  drop_rate: float | None = None
  se_ratio: float = 0.5
  use_two_convs: bool = True
  final_conv_mult: float = 2.0
  head_bias_init: float = 0.0  # e.g. -10 for sigmoid losses over many classes
  dtype: Dtype = jnp.float32
  remat: bool = False
  conv_impl: str = "auto"
  ws_eps: float = 1e-4
  ws_eps_mode: str = "floor"
  stem_stride: int = 4
  stem_width: float = 1.0

  @property
  def spec(self) -> variants_lib.Variant:
    return variants_lib.get_variant(self.variant)

  def stage_widths(self) -> tuple[int, ...]:
    return tuple(int(w * self.width) for w in self.spec.widths)

  def stage_depths(self) -> tuple[int, ...]:
    depths = tuple(self.depths) if self.depths is not None else self.spec.depths
    if len(depths) != len(self.spec.widths) or min(depths) < 1:
      raise UserError(f"depths must be {len(self.spec.widths)} positive ints, "
                       f"got {depths}.")
    return depths

  def check_fields(self) -> None:
    """Raises the UserError building the model would, without building it
    (a plan checks a later stage's model before an earlier stage runs)."""
    gamma_activation(self.activation or self.spec.activation)
    if self.conv_impl != "auto":  # resolving 'auto' would start a backend
      resolve_conv_impl(self.conv_impl)
    _stem_strides(self.stem_stride)
    if self.spec.family == "nfnet":
      for spec in self.blocks():
        bottleneck_groups(spec, variants_lib.NFNET_EXPANSION, self.group_size)
    elif self.stem_width != 1.0:
      raise UserError(NF_RESNET_STEM_WIDTH_ERROR)

  def _stem_channels(self) -> int:
    if self.spec.family == "nf_resnet":
      return int(variants_lib.NF_RESNET_STEM_WIDTH * self.width)
    return self.stage_widths()[0] // 2

  def blocks(self) -> list[BlockSpec]:
    strides = (variants_lib.NFNET_STRIDES if self.spec.family == "nfnet" else
               variants_lib.NF_RESNET_STRIDES)
    return block_specs(self._stem_channels(), self.stage_widths(),
                       self.stage_depths(), strides, self.alpha,
                       self.stochdepth_rate)

  @nn.compact
  def __call__(self, images: jax.Array, is_training: bool = False,
               return_features: bool = False):
    act_name = self.activation or self.spec.activation
    act = gamma_activation(act_name)
    conv_impl = resolve_conv_impl(self.conv_impl)
    ws = dict(dtype=self.dtype, ws_eps=self.ws_eps, ws_eps_mode=self.ws_eps_mode,
              conv_impl=conv_impl)
    x = images.astype(self.dtype)

    first_stride, second_stride = _stem_strides(self.stem_stride)
    if self.spec.family == "nfnet":
      stem = ((int(16 * self.stem_width), first_stride),
              (int(32 * self.stem_width), 1), (int(64 * self.stem_width), 1),
              (self._stem_channels(), second_stride))
      for i, (features, stride) in enumerate(stem):
        x = WSConv2D(features, 3, stride, name=f"stem_conv{i}", **ws)(x)
        if i < len(stem) - 1:
          x = act(x)
      block_cls = NFBlock
      block_kwargs = dict(group_size=self.group_size, se_ratio=self.se_ratio,
                          use_two_convs=self.use_two_convs,
                          expansion=variants_lib.NFNET_EXPANSION)
    else:
      if self.stem_width != 1.0:
        raise UserError(NF_RESNET_STEM_WIDTH_ERROR)
      x = WSConv2D(self._stem_channels(), 7, second_stride, name="stem_conv",
                   **ws)(x)
      if first_stride > 1:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
      block_cls = NFResBlock
      block_kwargs = dict(bottleneck_ratio=variants_lib.NF_RESNET_BOTTLENECK_RATIO)

    if self.remat:
      block_cls = nn.remat(block_cls, static_argnums=(2,))
    for spec in self.blocks():
      x = block_cls(spec, self.alpha, act_name, name=f"nf_block_{spec.index}",
                    **ws, **block_kwargs)(x, is_training)

    if self.spec.family == "nfnet":
      final_ch = int(self.final_conv_mult * x.shape[-1])
      x = WSConv2D(final_ch, 1, name="final_conv", **ws)(x)
    features = jnp.mean(act(x), axis=(1, 2)).astype(jnp.float32)

    drop_rate = self.spec.drop_rate if self.drop_rate is None else self.drop_rate
    pooled = nn.Dropout(drop_rate, deterministic=not is_training)(features)
    # The head runs in float32: the loss wants float32 logits, and it is cheap.
    logits = nn.Dense(self.num_classes,
                      kernel_init=nn.initializers.normal(stddev=0.01),
                      bias_init=nn.initializers.constant(self.head_bias_init),
                      name=CLASSIFIER)(pooled)
    return (logits, features) if return_features else logits


NF_RESNET_STEM_WIDTH_ERROR = ("stem_width applies to NFNet stems; NF-ResNets' "
                              "one-conv stem is set by `width`.")


def _stem_strides(stem_stride: int) -> tuple[int, int]:
  """The stem's two strided steps for a total stride of 4, 2 or 1."""
  strides = {4: (2, 2), 2: (2, 1), 1: (1, 1)}
  if stem_stride not in strides:
    raise UserError(f"stem_stride must be 4, 2 or 1, got {stem_stride}.")
  return strides[stem_stride]


def count_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
