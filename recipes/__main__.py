"""`python -m recipes list | run NAME [--dry-run] [options] [-- ARGS]`."""
from __future__ import annotations

import sys
from typing import Sequence

import jax

from recipes import options, plan, registry, run

USAGE = """usage: python -m recipes list
       python -m recipes run NAME [--dry-run] [options] [-- ARGS]   (NAME --help for its options)
recipes: """ + ", ".join(registry.RECIPES)


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(USAGE)
    return 0 if argv else 2
  if argv[0] == "list":
    for name, recipe in registry.RECIPES.items():
      print(f"{name:26s} {recipe.about.splitlines()[0]}")
    return 0
  if argv[0] != "run" or len(argv) < 2 or argv[1] not in registry.RECIPES:
    print(f"error: expected `run NAME` with NAME one of "
          f"{', '.join(registry.RECIPES)}; got {' '.join(argv[:2])!r}.",
          file=sys.stderr)
    return 2
  # This process only reads configs and starts the programs: it must never
  # claim an accelerator the stages need.
  jax.config.update("jax_platforms", "cpu")
  try:
    return run.run_recipe(argv[1], argv[2:])
  except options.RecipeError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except plan.PlanError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
