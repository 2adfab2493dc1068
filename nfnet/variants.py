"""The NFNet and NF-ResNet families as data (docs/reference.md section 1).

Nothing here builds a module: `model.py` reads these tables, `info.py` prints
them, and the programs pick per-variant defaults (resolution, dropout,
RandAugment magnitude) from them.
"""
from __future__ import annotations

import dataclasses
from nfnet.errors import UserError

NFNET_WIDTHS = (256, 512, 1536, 1536)
NFNET_PLUS_WIDTHS = (384, 768, 2048, 2048)
NFNET_BASE_DEPTHS = (1, 2, 6, 3)
NFNET_STRIDES = (1, 2, 2, 2)
NFNET_GROUP_SIZE = 128
NFNET_EXPANSION = 0.5

NF_RESNET_WIDTHS = (256, 512, 1024, 2048)
NF_RESNET_STRIDES = (1, 2, 2, 2)
NF_RESNET_STEM_WIDTH = 64
NF_RESNET_BOTTLENECK_RATIO = 0.25


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the variant table: architecture plus the paper's recipe."""

  name: str
  family: str  # "nfnet" or "nf_resnet"
  widths: tuple[int, ...]
  depths: tuple[int, ...]
  train_resolution: int
  test_resolution: int
  drop_rate: float
  randaugment_layers: int = 4
  randaugment_magnitude: int = 0
  activation: str = "gelu"


# name: (train px, test px, dropout, RandAugment magnitude); depth = base * (n + 1).
_NFNET_RECIPES = {
    0: (192, 256, 0.2, 5),
    1: (224, 320, 0.3, 10),
    2: (256, 352, 0.4, 10),
    3: (320, 416, 0.4, 15),
    4: (384, 512, 0.5, 15),
    5: (416, 544, 0.5, 15),
    6: (448, 576, 0.5, 15),
    7: (480, 608, 0.5, 15),
}

_NF_RESNET_DEPTHS = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}


def _build_table() -> dict[str, Variant]:
  table = {}
  for n, (train_px, test_px, drop, magnitude) in _NFNET_RECIPES.items():
    depths = tuple(d * (n + 1) for d in NFNET_BASE_DEPTHS)
    for suffix, widths in (("", NFNET_WIDTHS), ("+", NFNET_PLUS_WIDTHS)):
      name = f"F{n}{suffix}"
      table[name] = Variant(name, "nfnet", widths, depths, train_px, test_px,
                            drop, randaugment_magnitude=magnitude)
  for depth, depths in _NF_RESNET_DEPTHS.items():
    name = f"NF-ResNet-{depth}"
    # The paper's Table 4 trains NF-ResNets at 224 and evaluates at 224.
    table[name] = Variant(name, "nf_resnet", NF_RESNET_WIDTHS, depths, 224,
                          224, 0.25, randaugment_magnitude=10,
                          activation="relu")
  return table


VARIANTS: dict[str, Variant] = _build_table()


def get_variant(name: str) -> Variant:
  """Looks a variant up by name, case-insensitively ('f4+', 'NF-ResNet-50').

  >>> get_variant("f4+").widths
  (384, 768, 2048, 2048)
  """
  canonical = {k.lower(): k for k in VARIANTS}
  key = name.strip().lower().replace("nfnet-", "").replace("_", "-")
  if key not in canonical:
    raise UserError(
        f"Unknown NFNet variant {name!r}. Known variants: "
        f"{', '.join(VARIANTS)}.")
  return VARIANTS[canonical[key]]
