#!/usr/bin/env bash
# DeepMind's released NFNet-F0..F6 weights fine-tuned on your own image
# folders.
# Stages, inputs, options, multi-host launch: recipes/deepmind_finetune.sh --help
# (the recipe is data in recipes/registry.py; this is `python -m recipes run deepmind_finetune`).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "$PYTHON" -m recipes run deepmind_finetune "$@"
