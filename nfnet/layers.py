"""The building blocks every NFNet layer is made of.

* `WSConv2D`: scaled weight-standardized convolution (always with gain and bias).
* `ACTIVATIONS`: nonlinearities paired with the gamma that keeps a unit
  Gaussian input at unit variance (the `act(x) * gamma` of the paper).
* `SqueezeExcite`, `StochasticDepth`, `avg_pool_same`.

Numerics follow the DeepMind reference (docs/reference.md section 2). The timm port
standardizes with an additive epsilon instead of a floor: `ws_eps_mode="add"`
reproduces it so imported timm weights compute exactly what timm computes.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# Gamma of each nonlinearity: 1 / std(act(z)) for z ~ N(0, 1), from the reference.
ACTIVATION_GAMMAS = {
    "gelu": 1.7015043497085571,
    "gelu_exact": 1.7015043497085571,
    "relu": 1.7139588594436646,
    "silu": 1.7881293296813965,
    "elu": 1.2716004848480225,
    "celu": 1.270926833152771,
    "leaky_relu": 1.70590341091156,
    "tanh": 1.5939117670059204,
    "softplus": 1.9203323125839233,
    "sigmoid": 4.803835391998291,
    "selu": 1.0008515119552612,
    "relu6": 1.7131484746932983,
}

_ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # The reference uses jax.nn.gelu's default tanh approximation; timm uses erf.
    "gelu": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_exact": functools.partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "celu": jax.nn.celu,
    "leaky_relu": jax.nn.leaky_relu,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "selu": jax.nn.selu,
    "relu6": jax.nn.relu6,
}


def gamma_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Returns `x -> act(x) * gamma` for a named nonlinearity."""
  if name not in _ACTIVATION_FNS:
    raise ValueError(f"Unknown activation {name!r}; choose one of "
                     f"{sorted(_ACTIVATION_FNS)}.")
  fn, gamma = _ACTIVATION_FNS[name], ACTIVATION_GAMMAS[name]

  def activation(x):
    return fn(x) * jnp.asarray(gamma, x.dtype)

  return activation


def standardize_weight(kernel: jax.Array, gain: jax.Array, *, eps: float = 1e-4,
                       eps_mode: str = "floor") -> jax.Array:
  """Scaled weight standardization of an HWIO kernel, per output channel.

  floor (reference): w * s - mean * s with s = rsqrt(max(var * fan_in, eps)) * gain.
  add (timm):        (w - mean) * rsqrt(var + eps) * gain / sqrt(fan_in).
  """
  fan_in = np.prod(kernel.shape[:-1])
  mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
  if eps_mode == "floor":
    scale = jax.lax.rsqrt(jnp.maximum(var * fan_in, eps)) * gain
  elif eps_mode == "add":
    scale = jax.lax.rsqrt(var + eps) * gain / np.sqrt(fan_in)
  else:
    raise ValueError(f"eps_mode must be 'floor' or 'add', got {eps_mode!r}.")
  return kernel * scale - mean * scale


def resolve_conv_impl(conv_impl: str) -> str:
  """'auto' -> 'per_group' on XLA:CPU (grouped convs are 4-10x slower there,
  docs/design.md), 'native' on GPU/TPU."""
  if conv_impl == "auto":
    return "per_group" if jax.default_backend() == "cpu" else "native"
  if conv_impl not in ("native", "per_group"):
    raise ValueError(
        f"conv_impl must be 'auto', 'native' or 'per_group', got {conv_impl!r}.")
  return conv_impl


def conv2d_same(x: jax.Array, kernel: jax.Array, *, stride: int = 1,
                groups: int = 1, conv_impl: str = "native") -> jax.Array:
  """NHWC x HWIO convolution with TF/JAX 'SAME' padding.

  With conv_impl='per_group' a grouped conv runs as `groups` dense convs over
  channel slices, concatenated: the same values and gradients, but far faster
  on XLA:CPU, and XLA's SPMD partitioner never sees a grouped conv.
  """
  conv = functools.partial(
      jax.lax.conv_general_dilated, window_strides=(stride, stride),
      padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  if groups == 1 or conv_impl == "native":
    return conv(x, kernel, feature_group_count=groups)
  x_groups = jnp.split(x, groups, axis=-1)
  k_groups = jnp.split(kernel, groups, axis=-1)
  return jnp.concatenate([conv(xg, kg) for xg, kg in zip(x_groups, k_groups)],
                         axis=-1)


class WSConv2D(nn.Module):
  """Scaled weight-standardized conv with a learnable gain and bias.

  Parameters: `kernel` (HWIO, float32), `gain` [O] (init 1), `bias` [O] (init 0).
  The kernel is standardized in float32, then cast with the input to `dtype`.
  """

  features: int
  kernel_size: int = 1
  stride: int = 1
  groups: int = 1
  dtype: Dtype = jnp.float32
  conv_impl: str = "native"
  ws_eps: float = 1e-4
  ws_eps_mode: str = "floor"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_ch = x.shape[-1]
    if in_ch % self.groups:
      raise ValueError(f"{self.name}: {in_ch} input channels do not split into "
                       f"{self.groups} groups.")
    k = self.kernel_size
    kernel = self.param(
        "kernel", nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
        (k, k, in_ch // self.groups, self.features), jnp.float32)
    gain = self.param("gain", nn.initializers.ones, (self.features,),
                      jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,),
                      jnp.float32)
    weight = standardize_weight(kernel, gain, eps=self.ws_eps,
                                eps_mode=self.ws_eps_mode)
    out = conv2d_same(x.astype(self.dtype), weight.astype(self.dtype),
                      stride=self.stride, groups=self.groups,
                      conv_impl=self.conv_impl)
    return out + bias.astype(self.dtype)


class SqueezeExcite(nn.Module):
  """Mean-pool -> Dense -> ReLU (no gamma) -> Dense -> sigmoid, per channel.

  Returns the [B, 1, 1, C] gate; the block applies `2 * gate * x`.
  """

  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    h = jnp.mean(x, axis=(1, 2))
    h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc0")(h))
    h = nn.Dense(channels, dtype=self.dtype, name="fc1")(h)
    return nn.sigmoid(h)[:, None, None, :]


class StochasticDepth(nn.Module):
  """Drops the whole residual branch per example with probability `rate`.

  As in the reference there is no 1/keep rescaling, and eval is the identity.
  Uses the 'dropout' rng stream.
  """

  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    if not is_training or self.rate <= 0.0:
      return x
    keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.rate,
                                (x.shape[0],) + (1,) * (x.ndim - 1))
    return x * keep.astype(x.dtype)


def avg_pool_same(x: jax.Array) -> jax.Array:
  """2x2 stride-2 SAME average pool that divides by the valid (unpadded) count."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME",
                     count_include_pad=False)
