# Sourced by the recipe scripts, which are `python -m recipes run NAME "$@"`:
# the recipes themselves are Python data (recipes/registry.py).
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
# `recipes`, the programs and their configs import from the repository: run
# from any directory.
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
