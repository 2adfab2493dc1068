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
from nfnet.errors import UserError

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
    raise UserError(f"Unknown activation {name!r}; choose one of "
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

  Computed as `(w - mean) * s` on the [fan_in, out] view with a hand-written
  gradient (`_standardize_2d`); `standardize_weight_reference` is the plain
  formula autodiff differentiates, which the tests compare against.
  """
  if eps_mode not in ("floor", "add"):
    raise UserError(f"eps_mode must be 'floor' or 'add', got {eps_mode!r}.")
  fan_in = int(np.prod(kernel.shape[:-1]))
  out = _standardize_2d(kernel.reshape(fan_in, kernel.shape[-1]), gain,
                        float(eps), eps_mode)
  return out.reshape(kernel.shape)


def standardize_weight_reference(kernel: jax.Array, gain: jax.Array, *,
                                 eps: float = 1e-4,
                                 eps_mode: str = "floor") -> jax.Array:
  """The formula of `standardize_weight`, differentiated by autodiff."""
  fan_in = np.prod(kernel.shape[:-1])
  mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
  if eps_mode == "floor":
    scale = jax.lax.rsqrt(jnp.maximum(var * fan_in, eps)) * gain
  elif eps_mode == "add":
    scale = jax.lax.rsqrt(var + eps) * gain / np.sqrt(fan_in)
  else:
    raise UserError(f"eps_mode must be 'floor' or 'add', got {eps_mode!r}.")
  return kernel * scale - mean * scale


def _column_mean(x: jax.Array) -> jax.Array:
  """[N, O] -> [O] as one matrix-vector product: XLA:CPU's fused column
  reductions over big kernels are an order of magnitude slower."""
  return jnp.full((x.shape[0],), 1.0 / x.shape[0], x.dtype) @ x


def _standardize_2d_forward(w, gain, eps, eps_mode):
  n = w.shape[0]
  mean = _column_mean(w)
  centered = w - mean
  var = _column_mean(jnp.square(centered))
  if eps_mode == "floor":
    denom = jnp.maximum(var * n, eps)
    rsqrt = jax.lax.rsqrt(denom)
    scale = rsqrt * gain
  else:
    denom = var + eps
    rsqrt = jax.lax.rsqrt(denom)
    scale = rsqrt * gain / np.sqrt(n)
  return centered * scale, (centered, var, denom, rsqrt, scale, gain)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _standardize_2d(w, gain, eps, eps_mode):
  return _standardize_2d_forward(w, gain, eps, eps_mode)[0]


def _standardize_2d_backward(eps, eps_mode, residuals, grad):
  """With c = w - mean and A = sum_n(grad * c) per column:
  d/dw = scale * (grad - mean_n(grad)) - A * d(scale)/d(var) * 2c / N, where
  floor: scale = gain / sqrt(max(N var, eps)), zero slope when the floor holds;
  add:   scale = gain / sqrt(N (var + eps)).
  d/dgain = A * scale / gain.
  """
  centered, var, denom, rsqrt, scale, gain = residuals
  n = centered.shape[0]
  total = _column_mean(grad * centered) * n
  if eps_mode == "floor":
    grad_gain = total * rsqrt
    # d(scale)/d(var) * 2 / N = -gain * rsqrt / denom (N cancels), if unfloored.
    coef = jnp.where(var * n > eps, total * gain * rsqrt / denom, 0.0)
  else:
    grad_gain = total * rsqrt / np.sqrt(n)
    coef = total * gain * rsqrt / (denom * np.sqrt(n) * n)
  grad_w = scale * (grad - _column_mean(grad)) - coef * centered
  return grad_w, grad_gain.astype(gain.dtype)


_standardize_2d.defvjp(
    lambda w, gain, eps, eps_mode: _standardize_2d_forward(w, gain, eps, eps_mode),
    _standardize_2d_backward)


CONV_IMPLS = ("native", "per_group", "matmul")


def resolve_conv_impl(conv_impl: str) -> str:
  """'auto' -> 'matmul' on XLA:CPU (its grouped convs and its convolution
  kernel gradients are several times slower than matmuls there), 'native' on
  GPU/TPU."""
  if conv_impl == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "native"
  if conv_impl not in CONV_IMPLS:
    raise UserError(f"conv_impl must be 'auto' or one of {CONV_IMPLS}, got "
                     f"{conv_impl!r}.")
  return conv_impl


def _xla_conv(x: jax.Array, kernel: jax.Array, stride: int,
              groups: int = 1) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride), padding="SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def _same_pads(x: jax.Array, k: int, stride: int):
  return jax.lax.padtype_to_pads(x.shape[1:3], (k, k), (stride, stride), "SAME")


def kernel_grad_by_matmul(x: jax.Array, grad_out: jax.Array, k: int,
                          stride: int) -> jax.Array:
  """d(loss)/d(kernel) of a dense SAME conv, as k*k matmuls [I, BHW] @ [BHW, O].

  Tap (i, j) of the kernel sees the input shifted by (i, j) and subsampled by
  the stride; its gradient is that view of the input, flattened over batch and
  space and transposed, times the flattened output gradient. XLA:CPU runs
  these as plain GEMMs, several times faster than its convolution kernel
  gradient (which it lowers to a convolution over activations with transposed
  layouts).
  """
  (top, bottom), (left, right) = _same_pads(x, k, stride)
  padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  out_h, out_w = grad_out.shape[1:3]
  grad_2d = grad_out.reshape(-1, grad_out.shape[-1])
  taps = []
  for i in range(k):
    for j in range(k):
      view = padded[:, i:i + (out_h - 1) * stride + 1:stride,
                    j:j + (out_w - 1) * stride + 1:stride, :]
      taps.append(view.reshape(-1, x.shape[-1]).T @ grad_2d)
  return jnp.stack(taps).reshape(k, k, x.shape[-1], grad_out.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_with_matmul_kernel_grad(x: jax.Array, kernel: jax.Array,
                                 stride: int) -> jax.Array:
  """A dense NHWC x HWIO SAME conv whose kernel gradient runs as matmuls
  (`kernel_grad_by_matmul`); the value and input gradient are XLA's."""
  return _xla_conv(x, kernel, stride)


def _conv_fwd(x, kernel, stride):
  return _xla_conv(x, kernel, stride), (x, kernel)


def _conv_bwd(stride, residuals, grad_out):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda v: _xla_conv(v, kernel, stride), x)
  grad_kernel = kernel_grad_by_matmul(x, grad_out, kernel.shape[0], stride)
  return input_vjp(grad_out)[0], grad_kernel.astype(kernel.dtype)


conv_with_matmul_kernel_grad.defvjp(_conv_fwd, _conv_bwd)


def pointwise_conv(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """A 1x1 SAME conv as one matmul over channels (a stride subsamples first:
  with a 1x1 window, SAME padding is zero)."""
  if stride > 1:
    x = x[:, ::stride, ::stride, :]
  return jnp.einsum("bhwi,io->bhwo", x, kernel[0, 0])


def conv2d_same(x: jax.Array, kernel: jax.Array, *, stride: int = 1,
                groups: int = 1, conv_impl: str = "native") -> jax.Array:
  """NHWC x HWIO convolution with TF/JAX 'SAME' padding.

  conv_impl picks how it runs; every choice computes the same values and
  gradients up to float rounding:
    native:    XLA's convolution (grouped via feature_group_count).
    per_group: a grouped conv runs as `groups` dense convs over channel
               slices, concatenated; XLA's SPMD partitioner then never sees a
               grouped conv.
    matmul:    per_group, and further 1x1 convs are matmuls and every other
               conv's kernel gradient is k*k matmuls (`kernel_grad_by_matmul`)
               -- the fast path on XLA:CPU.
  """
  if conv_impl not in CONV_IMPLS:
    raise UserError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}.")
  if conv_impl == "native":
    return _xla_conv(x, kernel, stride, groups)
  k = kernel.shape[0]
  if conv_impl == "matmul" and k == 1 and kernel.shape[1] == 1:
    dense = pointwise_conv
  elif conv_impl == "matmul":
    dense = conv_with_matmul_kernel_grad
  else:
    dense = _xla_conv
  if groups == 1:
    return dense(x, kernel, stride)
  x_groups = jnp.split(x, groups, axis=-1)
  k_groups = jnp.split(kernel, groups, axis=-1)
  return jnp.concatenate(
      [dense(xg, kg, stride) for xg, kg in zip(x_groups, k_groups)], axis=-1)


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
      raise UserError(f"{self.name}: {in_ch} input channels do not split into "
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
