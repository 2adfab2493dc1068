"""The paper's experiments as data: stages chaining `pretrain.main` and
`finetune.main`, resolved from the real configs and run in order.

    python -m recipes list
    python -m recipes run NAME [--dry-run] [options] [-- ARGS for every stage]

`recipes/registry.py` holds `RECIPES` (name -> its stages),
`recipes/options.py` a recipe's options and --help, `recipes/inputs.py` its
data options and their checks, `recipes/run.py` the runner, and
`recipes/plan.py` what one stage resolves to. The `recipes/*.sh` scripts are `python -m recipes run NAME`.
"""
from recipes.registry import RECIPES, Recipe, Stage

__all__ = ["RECIPES", "Recipe", "Stage"]
