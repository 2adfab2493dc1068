#!/usr/bin/env bash
# NFNet-F4+ pre-trained on JFT-style shards, then fine-tuned on ImageNet at
# 224, 320 and 384 px (the paper's 89.2% recipe).
# Stages, inputs, options, multi-host launch: recipes/jft_f4plus.sh --help
# (the recipe is data in recipes/registry.py; this is `python -m recipes run jft_f4plus`).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "$PYTHON" -m recipes run jft_f4plus "$@"
