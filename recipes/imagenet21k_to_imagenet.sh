#!/usr/bin/env bash
# An NFNet (default F4+) pre-trained on ImageNet-21k, the public stand-in for
# JFT-300M, then fine-tuned on ImageNet at 224, 320 and 384 px, then a
# results table.
#
# Usage: recipes/imagenet21k_to_imagenet.sh [--dry-run]
#            --pretrain-data DIR|SOURCE --imagenet TFDS_DIR [options]
#
# Stages (each in WORKDIR/<stage>; the fine-tunes start from WORKDIR/pretrain):
#   pretrain       pretrain/configs/imagenet21k.py:variant=F4+  the JFT recipe
#                  (224 px, batch 4096, lr 1.6, wd 1e-6, no EMA) with softmax
#                  loss, 90 epochs of the 13.15M-image winter21 release
#   finetune_224   finetune/configs/imagenet.py:variant=F4+,res=224  batch 2048,
#   finetune_320   15,000 steps (5,000 warm-up), lr 0.1, SAM 0.05, wd 1e-5,
#   finetune_384   dropout 0.25, stochastic depth 0.1, EMA 0.9999
# Expected: better than training the same model on ImageNet from scratch; the
# paper has no ImageNet-21k numbers for NFNets (its 89.2% uses JFT-300M).
#
# Inputs (flag, or environment variable):
#   --pretrain-data DIR|SOURCE  PRETRAIN_DATA  ImageNet-21k as a directory of
#       shards (DIR/train-*.array_record, DIR/eval-*.array_record: python -m
#       data.convert folder:/data/imagenet21k/train DIR), or a source string
#   --pretrain-eval DIR|SOURCE|none  PRETRAIN_EVAL  held-out pre-training split
#   --imagenet TFDS_DIR     IMAGENET_DIR (or TFDS_DATA_DIR)  TFDS data_dir with
#       imagenet2012 prepared as array_record
#   --imagenet-train SOURCE, --imagenet-eval SOURCE  IMAGENET_TRAIN/_EVAL
#       instead of --imagenet (a plain directory means folder:DIR)
#   --variant NAME          VARIANT  (default F4+; e.g. F0+ on smaller budgets)
#   --epochs N              EPOCHS   pre-training length (default: the
#                           config's 90)
#   --workdir DIR           WORKDIR  (default: ./runs/imagenet21k_<variant>)
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
#   recipes/imagenet21k_to_imagenet.sh ... --coordinator HOST0:1234 --hosts N --host-id I
# (exported as JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID for
# jax.distributed.initialize(); setting those variables works too), or
# --distributed on TPU pods / SLURM where JAX finds the cluster itself.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VARIANT=${VARIANT:-F4+}
EPOCHS=${EPOCHS:-}

recipe_option() {
  case $1 in
    --variant|--variant=*) opt_value "$@"; VARIANT=$VALUE ;;
    --epochs|--epochs=*) opt_value "$@"; EPOCHS=$VALUE ;;
    *) transfer_option "$@" ;;
  esac
}

parse_options recipe_option "$@"
setup_run
WORKDIR=$(absolute_path "${WORKDIR:-runs/imagenet21k_$VARIANT}")
transfer_data

pretrain_config="$REPO_ROOT/pretrain/configs/imagenet21k.py:variant=$VARIANT"
if [[ -n $EPOCHS ]]; then
  pretrain_config+=",epochs=$EPOCHS"
fi
add_stage pretrain pretrain "$WORKDIR/pretrain" "" "" "$pretrain_config" \
  ${PRETRAIN_DATA_ARGS[@]+"${PRETRAIN_DATA_ARGS[@]}"}
for res in 224 320 384; do
  add_stage "finetune_$res" finetune "$WORKDIR/finetune_$res" "" \
    "$WORKDIR/pretrain" \
    "$REPO_ROOT/finetune/configs/imagenet.py:variant=$VARIANT,res=$res" \
    --config.init_from="$WORKDIR/pretrain" \
    ${IMAGENET_ARGS[@]+"${IMAGENET_ARGS[@]}"}
done
run_stages
