#!/usr/bin/env bash
# NF-ResNet-50 pre-trained on JFT-style shards, then fine-tuned on ImageNet at
# 224, 320 and 384 px, then a results table: the paper's Table 4 transfer
# baseline (appendix A.5; REFERENCE.md section 4).
#
# Usage: recipes/nf_resnet50.sh [--dry-run] --pretrain-data DIR|SOURCE
#            --imagenet TFDS_DIR [options] [-- ARGS for every stage]
#
# Stages (each in WORKDIR/<stage>; the fine-tunes start from WORKDIR/pretrain):
#   pretrain       pretrain/configs/jft.py:variant=NF-ResNet-50  224 px, batch
#                  1024, lr 0.4 (not batch-scaled), 5,000 warm-up steps,
#                  wd 1e-5, no EMA, 10 epochs of 300M images
#   finetune_224   finetune/configs/imagenet.py:variant=NF-ResNet-50,res=224
#   finetune_320   batch 2048, 15,000 steps (5,000 warm-up), lr 0.1, no weight
#   finetune_384   decay, no dropout, no stochastic depth, no SAM, EMA 0.9999
# Expected (paper, Table 4): 79.5 / 80.9 / 81.1% top-1 at 224 / 320 / 384.
#
# Inputs (flag, or environment variable):
#   --pretrain-data DIR|SOURCE  PRETRAIN_DATA  a directory of shards
#       (DIR/train-*.array_record, DIR/eval-*.array_record, as written by
#       python -m data.convert) or a source string (arrayrecord:GLOB,
#       tfrecord:GLOB, tfds:NAME/SPLIT)
#   --pretrain-eval DIR|SOURCE|none  PRETRAIN_EVAL  held-out pre-training split
#   --imagenet TFDS_DIR     IMAGENET_DIR (or TFDS_DATA_DIR)  TFDS data_dir with
#       imagenet2012 prepared as array_record
#   --imagenet-train SOURCE, --imagenet-eval SOURCE  IMAGENET_TRAIN/_EVAL
#       instead of --imagenet (a plain directory means folder:DIR)
#   --workdir DIR           WORKDIR  (default: ./runs/nf_resnet50)
# Options:
#   --dry-run       print each stage's resolved plan as one JSON line; reads no
#                   data and keeps JAX on the CPU
#   --stages LIST   comma-separated subset, e.g. finetune_384
#   --pretrain-arg ARG, --finetune-arg ARG  extra program flag for those
#                   stages; ARGS after -- go to every stage
#   -h, --help      this text
#
# Re-running is safe: a stage whose workdir holds results.json is skipped, an
# unfinished one resumes from its last checkpoint.
#
# Multi-host: run the SAME command on every host at once, each with its own
# --host-id, the workdir on a filesystem all hosts share:
#   recipes/nf_resnet50.sh ... --coordinator HOST0:1234 --hosts N --host-id I
# (exported as JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID for
# jax.distributed.initialize(); setting those variables works too), or
# --distributed on TPU pods / SLURM where JAX finds the cluster itself.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VARIANT="NF-ResNet-50"
declare -A PAPER_TOP1=([224]=79.5 [320]=80.9 [384]=81.1)  # Table 4

parse_options transfer_option "$@"
setup_run
WORKDIR=$(absolute_path "${WORKDIR:-runs/nf_resnet50}")
transfer_data

add_stage pretrain pretrain "$WORKDIR/pretrain" "" "" \
  "$REPO_ROOT/pretrain/configs/jft.py:variant=$VARIANT" \
  ${PRETRAIN_DATA_ARGS[@]+"${PRETRAIN_DATA_ARGS[@]}"}
for res in 224 320 384; do
  add_stage "finetune_$res" finetune "$WORKDIR/finetune_$res" \
    "${PAPER_TOP1[$res]}" "$WORKDIR/pretrain" \
    "$REPO_ROOT/finetune/configs/imagenet.py:variant=$VARIANT,res=$res" \
    --config.init_from="$WORKDIR/pretrain" \
    ${IMAGENET_ARGS[@]+"${IMAGENET_ARGS[@]}"}
done
run_stages
