"""The paper's experiments as data: stages chaining `pretrain.main` and
`finetune.main`, resolved from the real configs and run in order.

    python -m recipes list
    python -m recipes run NAME [--dry-run] [options] [-- ARGS for every stage]

`recipes/registry.py` holds `RECIPES` (name -> its stages), `recipes/run.py`
the options, input checks and the runner, `recipes/plan.py` what one stage
resolves to. The `recipes/*.sh` scripts are `python -m recipes run NAME`.
"""
from recipes.registry import RECIPES, Recipe, Stage

__all__ = ["RECIPES", "Recipe", "Stage"]
