#!/usr/bin/env bash
# NFNet-F0..F6 trained on ImageNet from scratch: the paper's main result
# (section 6.1, appendix A.1; Table 3), then a results table.
#
# Usage: recipes/imagenet_from_scratch.sh [--dry-run] --variant F0..F6
#            --imagenet TFDS_DIR [options] [-- ARGS for the stage]
#
# One stage, train, in WORKDIR/train (python -m pretrain.main with
# pretrain/configs/imagenet.py:variant=V):
#   batch 4096, 360 epochs (112,602 steps), SGD-Nesterov 0.9 + AGC 0.01,
#   lr 0.1 x 4096 / 256 = 1.6 with 5 warm-up epochs then cosine, wd 2e-5,
#   EMA 0.99999, stochastic depth 0.25, the variant's dropout (F0 0.2 ..
#   F6 0.5), train / test resolution (F0 192 / 256 .. F6 448 / 576) and
#   RandAugment magnitude (F0 5, F1-F2 10, F3-F6 15; 4 layers), MixUp on half
#   of each batch and CutMix on the other, then RandAugment, then label
#   smoothing 0.1. Raw and EMA weights are evaluated at the test resolution.
# Expected (paper, Table 3): 83.6 / 84.7 / 85.1 / 85.7 / 85.9 / 86.0 / 86.5%
#   top-1 for F0 .. F6 (F6's with SAM).
#
# Inputs (flag, or environment variable):
#   --variant NAME          VARIANT  F0..F6 (default F0)
#   --imagenet TFDS_DIR     IMAGENET_DIR (or TFDS_DATA_DIR)  TFDS data_dir with
#       imagenet2012 prepared as array_record
#   --imagenet-train SOURCE, --imagenet-eval SOURCE  IMAGENET_TRAIN/_EVAL
#       instead of --imagenet (a plain directory means folder:DIR)
#   --workdir DIR           WORKDIR  (default: ./runs/imagenet_<variant>)
# Options:
#   --dry-run       print the resolved plan as one JSON line; reads no data and
#                   keeps JAX on the CPU
#   --pretrain-arg ARG  extra program flag (e.g. --pretrain-arg=--config.
#                   micro_batches=2); ARGS after -- too
#   -h, --help      this text
#
# Re-running is safe: a finished run (WORKDIR/train/results.json) is skipped,
# an unfinished one resumes from its last checkpoint.
#
# Multi-host: run the SAME command on every host at once, each with its own
# --host-id, the workdir on a filesystem all hosts share:
#   recipes/imagenet_from_scratch.sh ... --coordinator HOST0:1234 --hosts N --host-id I
# (exported as JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID for
# jax.distributed.initialize(); setting those variables works too), or
# --distributed on TPU pods / SLURM where JAX finds the cluster itself.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VARIANT=${VARIANT:-F0}
declare -A PAPER_TOP1=([F0]=83.6 [F1]=84.7 [F2]=85.1 [F3]=85.7 [F4]=85.9
                       [F5]=86.0 [F6]=86.5)  # Table 3

recipe_option() {
  case $1 in
    --variant|--variant=*) opt_value "$@"; VARIANT=$VALUE ;;
    --imagenet|--imagenet=*) opt_value "$@"; IMAGENET_DIR=$VALUE ;;
    --imagenet-train|--imagenet-train=*) opt_value "$@"; IMAGENET_TRAIN=$VALUE ;;
    --imagenet-eval|--imagenet-eval=*) opt_value "$@"; IMAGENET_EVAL=$VALUE ;;
  esac
}

parse_options recipe_option "$@"
setup_run
VARIANT=${VARIANT^^}
[[ -n ${PAPER_TOP1[$VARIANT]:-} ]] || die "--variant must be one of F0..F6" \
  "(the variants the paper trained on ImageNet), got '$VARIANT'."
WORKDIR=$(absolute_path "${WORKDIR:-runs/imagenet_$VARIANT}")

data_args=()
if [[ -n $IMAGENET_TRAIN || -n $IMAGENET_EVAL ]]; then
  [[ -n $IMAGENET_TRAIN && -n $IMAGENET_EVAL ]] || die "give both" \
    "--imagenet-train and --imagenet-eval (or --imagenet TFDS_DIR)."
  data_args=(--config.data.train="$(folder_source "$IMAGENET_TRAIN")"
             --config.data.eval="$(folder_source "$IMAGENET_EVAL")")
elif [[ -n $IMAGENET_DIR ]]; then
  # The config reads tfds:imagenet2012/...; TFDS finds it here.
  export TFDS_DATA_DIR
  TFDS_DATA_DIR=$(absolute_path "$IMAGENET_DIR")
fi
if ((!DRY_RUN)); then
  if ((${#data_args[@]})); then
    check_source "--imagenet-train" "${data_args[0]#*=}"
    check_source "--imagenet-eval" "${data_args[1]#*=}"
  else
    [[ -n $IMAGENET_DIR ]] || die "ImageNet location missing: pass --imagenet" \
      "TFDS_DATA_DIR (holding imagenet2012 prepared as array_record; or set" \
      "IMAGENET_DIR), or --imagenet-train/--imagenet-eval SOURCE; see --help."
    check_source "--imagenet" "tfds:imagenet2012/train"
  fi
fi

add_stage train pretrain "$WORKDIR/train" "${PAPER_TOP1[$VARIANT]}" "" \
  "$REPO_ROOT/pretrain/configs/imagenet.py:variant=$VARIANT" \
  ${data_args[@]+"${data_args[@]}"}
run_stages
