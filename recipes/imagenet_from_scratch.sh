#!/usr/bin/env bash
# NFNet-F0..F6 trained on ImageNet from scratch (the paper's Table 3).
# Stages, inputs, options, multi-host launch: recipes/imagenet_from_scratch.sh --help
# (the recipe is data in recipes/registry.py; this is `python -m recipes run imagenet_from_scratch`).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "$PYTHON" -m recipes run imagenet_from_scratch "$@"
