#!/usr/bin/env bash
# NF-ResNet-50 pre-trained on JFT-style shards, then fine-tuned on ImageNet at
# 224, 320 and 384 px (the paper's Table 4 baseline).
# Stages, inputs, options, multi-host launch: recipes/nf_resnet50.sh --help
# (the recipe is data in recipes/registry.py; this is `python -m recipes run nf_resnet50`).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "$PYTHON" -m recipes run nf_resnet50 "$@"
