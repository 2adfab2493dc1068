"""RandAugment as used to train NFNets (docs/reference.md section 3).

Each of ``num_layers`` layers picks one of the 16 ops below uniformly at random
and always applies it (there is no per-op probability), at one fixed magnitude
``m`` on the reference's 0..10 scale. Geometric ops and Cutout fill uncovered
pixels with grey 128. The magnitude -> argument mapping is the reference's:

=============  ===============================================================
op             argument at magnitude m
=============  ===============================================================
Rotate         ``m/10 * 30`` degrees, random sign, about the image centre
ShearX/ShearY  factor ``m/10 * 0.3``, random sign, about the top-left corner
TranslateX/Y   ``m/10 * 100`` pixels, random sign
Color, Contrast, Brightness, Sharpness
               enhance factor ``m/10 * 1.8 + 0.1`` (1.0 is the identity)
Posterize      keep the top ``int(m/10 * 4)`` bits of every channel
Solarize       invert pixels ``>= int(m/10 * 256)``
SolarizeAdd    add ``int(m/10 * 110)`` to pixels ``< 128`` (clipped to 255)
Cutout         grey square of half-size ``int(m/10 * 40)`` at a uniform
               random centre, clipped at the border (so up to 80 x 80 px at
               m = 10, as in the reference's ``cutout(image, pad_size)``)
AutoContrast, Equalize, Invert
               no argument
=============  ===============================================================

Translate's and Cutout's amounts are pixels, which the reference sets for
ImageNet-sized images: at m = 5 a 32 px image is shifted by 50 px, wholly off
its canvas, and a Cutout square covers most of it. ``reference_side`` (None:
absolute pixels, the reference's behaviour) names the image side at which the
amounts above hold; other images scale them by ``min(H, W) / reference_side``.
The small-image configs set 224, so a 32 px image is shifted by up to 7 px at
m = 5.

The magnitude depends on the model variant (5 for F0, 10 for F1-F2, 15 for
F3-F7; the "+" variants share their base variant's). ``data/`` may not import
``nfnet/``, so the variant -> (layers, magnitude) table of docs/reference.md
section 1 is kept here as data: call :func:`randaugment_for_variant`, or pass
``num_layers`` / ``magnitude`` explicitly (the programs' configs do the latter
when a user overrides them). Magnitudes above 10 are allowed, as in the paper:
they extrapolate the same linear mappings. (From magnitude 10 up, Solarize's
threshold is 256 or more, so it leaves every pixel unchanged, exactly like the
reference's.)

Sampling is split from applying so both halves are testable: :func:`sample_plan`
turns an rng and a magnitude into a list of concrete :class:`OpCall` s (op name
and arguments, signs and Cutout centre already drawn), and :func:`apply_plan`
runs them with PIL's C ops. :func:`randaugment` does both for one image.

Where the reference has a bug, the op follows its documented meaning instead:
the reference's Contrast blends towards ``num_pixels / 256`` rather than the
mean grey level; this Contrast blends towards the mean grey level (as PIL and
torchvision do).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from data.errors import DataError

FILL_VALUE = 128
MAX_LEVEL = 10.0

# docs/reference.md section 1: variant -> (RandAugment layers, magnitude). The "+"
# variants (wider) use the same augmentation as their base variant. The
# NF-ResNet baselines train at 224 px, where the paper's F1 uses magnitude 10
# (the same choice as nfnet/variants.py; a test keeps the two tables equal).
RANDAUGMENT_BY_VARIANT: dict[str, tuple[int, int]] = {
    "F0": (4, 5),
    "F1": (4, 10),
    "F2": (4, 10),
    "F3": (4, 15),
    "F4": (4, 15),
    "F5": (4, 15),
    "F6": (4, 15),
    "F7": (4, 15),
    "NF-RESNET-50": (4, 10),
    "NF-RESNET-101": (4, 10),
    "NF-RESNET-152": (4, 10),
    "NF-RESNET-200": (4, 10),
}

OP_NAMES: tuple[str, ...] = (
  "AutoContrast",
  "Equalize",
  "Invert",
  "Rotate",
  "Posterize",
  "Solarize",
  "Color",
  "Contrast",
  "Brightness",
  "Sharpness",
  "ShearX",
  "ShearY",
  "TranslateX",
  "TranslateY",
  "Cutout",
  "SolarizeAdd",
)


def randaugment_for_variant(variant: str) -> tuple[int, int]:
  """Returns ``(num_layers, magnitude)`` the paper used for an NFNet variant.

  >>> randaugment_for_variant("F4+")
  (4, 15)
  """
  base = variant.strip().upper().replace("_", "-").removeprefix("NFNET-").rstrip("+")
  if base not in RANDAUGMENT_BY_VARIANT:
    known = ", ".join(RANDAUGMENT_BY_VARIANT)
    raise DataError(
        f"No RandAugment setting for variant {variant!r}: known variants are "
        f"{known} (and the F '+' forms); pass num_layers and magnitude explicitly."
    )
  return RANDAUGMENT_BY_VARIANT[base]


# --------------------------------------------------------------------------
# Magnitude -> argument mappings (the reference's level_to_arg functions).
# --------------------------------------------------------------------------


def rotate_degrees(magnitude: float) -> float:
  return magnitude / MAX_LEVEL * 30.0


def shear_factor(magnitude: float) -> float:
  return magnitude / MAX_LEVEL * 0.3


def translate_pixels(magnitude: float, scale: float = 1.0) -> float:
  return magnitude / MAX_LEVEL * 100.0 * scale


def enhance_factor(magnitude: float) -> float:
  return magnitude / MAX_LEVEL * 1.8 + 0.1


def posterize_bits(magnitude: float) -> int:
  return int(magnitude / MAX_LEVEL * 4)


def solarize_threshold(magnitude: float) -> int:
  return int(magnitude / MAX_LEVEL * 256)


def solarize_addition(magnitude: float) -> int:
  return int(magnitude / MAX_LEVEL * 110)


def cutout_half_size(magnitude: float, scale: float = 1.0) -> int:
  return int(magnitude / MAX_LEVEL * 40 * scale)


# --------------------------------------------------------------------------
# The ops, on RGB PIL images, with explicit arguments.
# --------------------------------------------------------------------------

_FILL_RGB = (FILL_VALUE, FILL_VALUE, FILL_VALUE)


def _apply_lut(image: Image.Image, table: Sequence[int]) -> Image.Image:
  """Applies one 256-entry lookup table to every channel of an RGB image."""
  return image.point(list(table) * len(image.getbands()))


def _affine(image: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
  """Output pixel (x, y) samples input (a x + b y + c, d x + e y + f), nearest."""
  return image.transform(image.size, Image.Transform.AFFINE, coeffs,
                         resample=Image.Resampling.NEAREST, fillcolor=_FILL_RGB)


def auto_contrast(image: Image.Image) -> Image.Image:
  """Stretches each channel linearly so its min maps to 0 and its max to 255."""
  return ImageOps.autocontrast(image)


def equalize(image: Image.Image) -> Image.Image:
  """Histogram-equalizes each channel."""
  return ImageOps.equalize(image)


def invert(image: Image.Image) -> Image.Image:
  return ImageOps.invert(image)


def rotate(image: Image.Image, degrees: float) -> Image.Image:
  """Rotates counter-clockwise by ``degrees`` about the image centre."""
  return image.rotate(degrees, resample=Image.Resampling.NEAREST, fillcolor=_FILL_RGB)


def posterize(image: Image.Image, bits: int) -> Image.Image:
  """Keeps the top ``bits`` bits of each channel (0 bits gives black)."""
  bits = int(np.clip(bits, 0, 8))
  mask = (0xFF << (8 - bits)) & 0xFF
  return _apply_lut(image, [i & mask for i in range(256)])


def solarize(image: Image.Image, threshold: int) -> Image.Image:
  """Inverts every channel value ``>= threshold``."""
  return _apply_lut(image, [i if i < threshold else 255 - i for i in range(256)])


def solarize_add(image: Image.Image, addition: int, threshold: int = 128) -> Image.Image:
  """Adds ``addition`` (clipped to 0..255) to channel values ``< threshold``."""
  table = [min(max(i + addition, 0), 255) if i < threshold else i for i in range(256)]
  return _apply_lut(image, table)


def color(image: Image.Image, factor: float) -> Image.Image:
  """Blends with the greyscale image: 0 -> grey, 1 -> unchanged, >1 more saturated."""
  return ImageEnhance.Color(image).enhance(factor)


def contrast(image: Image.Image, factor: float) -> Image.Image:
  """Blends with a flat image at the mean grey level."""
  return ImageEnhance.Contrast(image).enhance(factor)


def brightness(image: Image.Image, factor: float) -> Image.Image:
  """Blends with black, i.e. multiplies by ``factor`` (clipped)."""
  return ImageEnhance.Brightness(image).enhance(factor)


def sharpness(image: Image.Image, factor: float) -> Image.Image:
  """Blends with a 3x3 smoothed image (kernel 1 1 1 / 1 5 1 / 1 1 1, border kept)."""
  return ImageEnhance.Sharpness(image).enhance(factor)


def shear_x(image: Image.Image, factor: float) -> Image.Image:
  """Output (x, y) takes input (x + factor * y, y)."""
  return _affine(image, (1.0, factor, 0.0, 0.0, 1.0, 0.0))


def shear_y(image: Image.Image, factor: float) -> Image.Image:
  """Output (x, y) takes input (x, factor * x + y)."""
  return _affine(image, (1.0, 0.0, 0.0, factor, 1.0, 0.0))


def translate_x(image: Image.Image, pixels: float) -> Image.Image:
  """Output (x, y) takes input (x + pixels, y): content moves left by ``pixels``."""
  return _affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0))


def translate_y(image: Image.Image, pixels: float) -> Image.Image:
  """Output (x, y) takes input (x, y + pixels): content moves up by ``pixels``."""
  return _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels))


def cutout(image: Image.Image, half_size: int, center_y: int,
           center_x: int) -> Image.Image:
  """Fills rows ``[cy - h, cy + h)`` x cols ``[cx - h, cx + h)`` (clipped) with grey."""
  width, height = image.size
  top, bottom = max(0, center_y - half_size), min(height, center_y + half_size)
  left, right = max(0, center_x - half_size), min(width, center_x + half_size)
  if top >= bottom or left >= right:
    return image
  out = image.copy()
  out.paste(_FILL_RGB, (left, top, right, bottom))
  return out


_OPS: dict[str, Callable[..., Image.Image]] = {
  "AutoContrast": auto_contrast,
  "Equalize": equalize,
  "Invert": invert,
  "Rotate": rotate,
  "Posterize": posterize,
  "Solarize": solarize,
  "Color": color,
  "Contrast": contrast,
  "Brightness": brightness,
  "Sharpness": sharpness,
  "ShearX": shear_x,
  "ShearY": shear_y,
  "TranslateX": translate_x,
  "TranslateY": translate_y,
  "Cutout": cutout,
  "SolarizeAdd": solarize_add,
}
assert tuple(_OPS) == OP_NAMES


# --------------------------------------------------------------------------
# Sampling a plan and applying it.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OpCall:
  """One op with its concrete arguments, e.g. ``OpCall("Rotate", (-15.0,))``."""

  name: str
  args: tuple = ()

  def __call__(self, image: Image.Image) -> Image.Image:
    return _OPS[self.name](image, *self.args)


def _random_sign(rng: np.random.Generator, value: float) -> float:
  return -value if rng.random() < 0.5 else value


def pixel_scale(height: int, width: int,
                reference_side: Optional[int]) -> float:
  """What Translate's and Cutout's pixel amounts are multiplied by."""
  return 1.0 if reference_side is None else min(height, width) / reference_side


def op_call(name: str, magnitude: float, rng: np.random.Generator, height: int,
            width: int, reference_side: Optional[int] = None) -> OpCall:
  """Turns an op name and a magnitude into concrete arguments (signs, centre
  drawn; pixel amounts scaled to the image by ``reference_side``)."""
  scale = pixel_scale(height, width, reference_side)
  if name in ("AutoContrast", "Equalize", "Invert"):
    return OpCall(name)
  if name == "Rotate":
    return OpCall(name, (_random_sign(rng, rotate_degrees(magnitude)),))
  if name in ("ShearX", "ShearY"):
    return OpCall(name, (_random_sign(rng, shear_factor(magnitude)),))
  if name in ("TranslateX", "TranslateY"):
    return OpCall(name, (_random_sign(rng, translate_pixels(magnitude, scale)),))
  if name in ("Color", "Contrast", "Brightness", "Sharpness"):
    return OpCall(name, (enhance_factor(magnitude),))
  if name == "Posterize":
    return OpCall(name, (posterize_bits(magnitude),))
  if name == "Solarize":
    return OpCall(name, (solarize_threshold(magnitude),))
  if name == "SolarizeAdd":
    return OpCall(name, (solarize_addition(magnitude),))
  if name == "Cutout":
    center_y, center_x = int(rng.integers(height)), int(rng.integers(width))
    return OpCall(name, (cutout_half_size(magnitude, scale), center_y, center_x))
  raise DataError(
      f"Unknown RandAugment op {name!r}; expected one of {', '.join(OP_NAMES)}.")


def sample_plan(rng: np.random.Generator, num_layers: int, magnitude: float,
                height: int, width: int,
                reference_side: Optional[int] = None) -> list[OpCall]:
  """Draws ``num_layers`` ops uniformly (with replacement) and their arguments.

  Every drawn op is applied: there is no per-op probability in this recipe.
  """
  choices = rng.integers(len(OP_NAMES), size=num_layers)
  return [op_call(OP_NAMES[i], magnitude, rng, height, width, reference_side)
          for i in choices]


def apply_plan(image: Image.Image, plan: Sequence[OpCall]) -> Image.Image:
  for call in plan:
    image = call(image)
  return image


def randaugment(image: np.ndarray, rng: np.random.Generator, num_layers: int,
                magnitude: float,
                reference_side: Optional[int] = None) -> np.ndarray:
  """Applies RandAugment to one uint8 ``[H, W, 3]`` image; returns a new array."""
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise DataError(
        f"RandAugment expects a uint8 [H, W, 3] image, got {image.dtype} {image.shape}.")
  height, width = image.shape[:2]
  plan = sample_plan(rng, num_layers, magnitude, height, width, reference_side)
  return np.asarray(apply_plan(Image.fromarray(image), plan))


@dataclasses.dataclass(frozen=True)
class RandAugment:
  """RandAugment with fixed settings, applied to every image of a batch.

  Each image gets its own child generator spawned from the batch's rng, so
  the result depends only on that rng (hence on the seed and batch index)
  and not on how the work is split across threads or processes.
  """

  num_layers: int
  magnitude: float
  reference_side: Optional[int] = None  # None: the reference's absolute pixels

  @classmethod
  def for_variant(cls, variant: str) -> "RandAugment":
    return cls(*randaugment_for_variant(variant))

  def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(images)
    for i, image_rng in enumerate(rng.spawn(len(images))):
      out[i] = randaugment(images[i], image_rng, self.num_layers, self.magnitude,
                           self.reference_side)
    return out
