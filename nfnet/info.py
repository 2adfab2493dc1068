"""Describe an NFNet variant from the module itself.

    python -m nfnet.info F4+
    python -m nfnet.info F0 --resolution 192 --num-classes 21843 --json

Everything is computed from the real Flax module with abstract evaluation
(`jax.eval_shape` / `jax.make_jaxpr`): nothing is allocated or looked up, so
even F7+ takes seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import jax
import jax.numpy as jnp

from nfnet import flops
from nfnet.model import NFNet, count_params


def abstract_params(model: NFNet, resolution: int = 64):
  """The parameter tree as ShapeDtypeStructs (no memory is used)."""
  images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, is_training=False),
      images)["params"]


def traced_forward(model: NFNet, resolution: int
                   ) -> tuple[Any, int, list[list[int]]]:
  """(the parameter tree as ShapeDtypeStructs, MACs of one eval forward pass
  of one image, [H, W, C] after the last block of each stage), from a single
  trace of `init`, which runs that forward pass (tracing F7+ takes seconds;
  its initialisers add no multiply-accumulates)."""
  last_block_of_stage, seen = [], 0
  for depth in model.stage_depths():
    seen += depth
    last_block_of_stage.append(f"nf_block_{seen - 1}")
  images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)

  def run(x):
    return model.init(
        jax.random.PRNGKey(0), x, is_training=False,
        capture_intermediates=lambda mdl, _: mdl.name in last_block_of_stage,
        mutable=True)

  jaxpr, variables = jax.make_jaxpr(run, return_shape=True)(images)
  captured = variables["intermediates"]
  shapes = [list(captured[name]["__call__"][0].shape[1:])
            for name in last_block_of_stage]
  return variables["params"], flops.jaxpr_macs(jaxpr.jaxpr), shapes


def describe(variant: str, resolution: int | None = None,
             num_classes: int = 1000, **overrides: Any) -> dict[str, Any]:
  model = NFNet(variant=variant, num_classes=num_classes, **overrides)
  spec = model.spec
  resolution = resolution or spec.test_resolution
  params, macs, stage_shapes = traced_forward(model, resolution)
  return {
      "variant": spec.name,
      "family": spec.family,
      "params": count_params(params),
      "macs": macs,
      "resolution": resolution,
      "num_classes": num_classes,
      "train_resolution": spec.train_resolution,
      "test_resolution": spec.test_resolution,
      "drop_rate": spec.drop_rate,
      "randaugment_layers": spec.randaugment_layers,
      "randaugment_magnitude": spec.randaugment_magnitude,
      "widths": list(model.stage_widths()),
      "depths": list(model.stage_depths()),
      "stage_output_shapes": stage_shapes,
  }


def format_table(info: dict[str, Any]) -> str:
  lines = [
      f"{info['variant']} ({info['family']}), {info['num_classes']} classes",
      f"  parameters       {info['params']:,}",
      f"  MACs / image     {info['macs'] / 1e9:.2f}B at {info['resolution']} px",
      f"  resolution       train {info['train_resolution']} px, "
      f"test {info['test_resolution']} px",
      f"  dropout          {info['drop_rate']}",
      f"  RandAugment      {info['randaugment_layers']} layers, "
      f"magnitude {info['randaugment_magnitude']}",
      "  stages           " + ", ".join(
          f"{d} x {w}" for d, w in zip(info["depths"], info["widths"])),
      "  stage outputs    " + ", ".join(
          "x".join(map(str, s)) for s in info["stage_output_shapes"]),
  ]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("variant", help="F0..F7, F0+..F7+, NF-ResNet-50/101/152/200")
  parser.add_argument("--resolution", type=int, default=None,
                      help="input size in px (default: the variant's test size)")
  parser.add_argument("--num-classes", type=int, default=1000)
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  args = parser.parse_args(argv)
  try:
    info = describe(args.variant, args.resolution, args.num_classes)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(info) if args.json else format_table(info))
  return 0


if __name__ == "__main__":
  sys.exit(main())
