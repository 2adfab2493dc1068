"""Image decoding: simplejpeg for JPEG (optionally at a reduced DCT scale), PIL otherwise.

libjpeg-turbo can decode a JPEG at 1/2, 1/4 or 1/8 of its size for much less
work than a full decode (it skips most of the inverse DCT). When a training
crop only needs, say, 224 px out of a 375 px tall region, decoding at half
scale loses nothing the bicubic resize would have kept. ``min_height`` /
``min_width`` ask simplejpeg for the smallest scale whose output is still at
least that big; :mod:`data.transforms` computes them from the crop box.

Anything simplejpeg refuses (PNG, GIF, CMYK JPEGs, JPEGs with recoverable
errors) falls back to PIL; if PIL cannot decode it either the record is
corrupt and :class:`ImageDecodeError` says why.
"""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image
from data.errors import DataError

_JPEG_MAGIC = b"\xff\xd8\xff"


class ImageDecodeError(DataError):
  """The image bytes cannot be decoded."""


def is_jpeg(data) -> bool:
  return bytes(data[:3]) == _JPEG_MAGIC


def image_size(data) -> tuple[int, int]:
  """(height, width) from the image header, without decoding pixels."""
  if is_jpeg(data):
    try:
      height, width, _, _ = simplejpeg.decode_jpeg_header(data)
      return height, width
    except ValueError:
      pass  # Let PIL try: it reads some headers libjpeg-turbo rejects.
  try:
    with Image.open(io.BytesIO(data)) as image:
      width, height = image.size
      return height, width
  except Exception as e:  # PIL raises many types for bad data.
    raise ImageDecodeError(f"unreadable image header ({type(e).__name__}: {e})") from None


def _is_16bit_grey(image: Image.Image) -> bool:
  # PIL opens 16-bit greyscale PNGs as "I;16" (older versions: "I").
  return image.mode.startswith("I;16") or (image.mode == "I"
                                          and image.format == "PNG")


def _decode_with_pil(data, min_height: int, min_width: int) -> np.ndarray:
  try:
    with Image.open(io.BytesIO(data)) as image:
      if image.format == "JPEG" and (min_height > 0 or min_width > 0):
        # PIL's draft mode is the same libjpeg DCT scaling, for the JPEGs
        # simplejpeg refused (e.g. CMYK).
        image.draft("RGB", (max(min_width, 1), max(min_height, 1)))
      if _is_16bit_grey(image):
        # convert("RGB") clips 16-bit values at 255 (a near-white image);
        # keep the top 8 bits, as TensorFlow's uint16 -> uint8 does.
        grey = (np.asarray(image, np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
      return np.asarray(image.convert("RGB"))
  except Exception as e:  # PIL raises many types for bad data.
    raise ImageDecodeError(f"undecodable image ({type(e).__name__}: {e})") from None


def decode_rgb(data, *, min_height: int = 0, min_width: int = 0) -> np.ndarray:
  """Decodes to uint8 RGB ``[H, W, 3]``.

  With ``min_height`` / ``min_width`` a JPEG may come back smaller than its
  stored size (by 1/2, 1/4 or 1/8) but never smaller than those minimums (or
  than the stored size, if that is smaller). Other formats decode at full size.
  """
  if is_jpeg(data):
    try:
      return simplejpeg.decode_jpeg(
          data, colorspace="RGB", min_height=min_height, min_width=min_width)
    except ValueError:
      pass  # CMYK, progressive oddities, recoverable errors: PIL decides.
  return _decode_with_pil(data, min_height, min_width)
