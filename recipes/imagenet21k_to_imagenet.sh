#!/usr/bin/env bash
# An NFNet (default F4+) pre-trained on ImageNet-21k, then fine-tuned on
# ImageNet at 224, 320 and 384 px.
# Stages, inputs, options, multi-host launch: recipes/imagenet21k_to_imagenet.sh --help
# (the recipe is data in recipes/registry.py; this is `python -m recipes run imagenet21k_to_imagenet`).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "$PYTHON" -m recipes run imagenet21k_to_imagenet "$@"
