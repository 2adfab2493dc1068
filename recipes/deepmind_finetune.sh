#!/usr/bin/env bash
# Fine-tune DeepMind's released NFNet-F0..F6 ImageNet weights (F*_haiku.npz)
# on your own labelled image folders, then a results table.
#
# Usage: recipes/deepmind_finetune.sh [--dry-run] --weights F3_haiku.npz
#            --train DIR|SOURCE [--eval DIR|SOURCE] [options] [-- ARGS]
#
# One stage, finetune, in WORKDIR/finetune:
#   finetune/configs/dataset.py:variant=<from the file name>  the paper's
#   fine-tune scaled to a small dataset: batch 512, 5,000 steps (10% warm-up),
#   lr 0.1, SAM 0.05, wd 1e-5, dropout 0.25, stochastic depth 0.1, EMA 0.9999,
#   the head re-initialised to your classes.
# The variant comes from the file name (F0_haiku.npz .. F6_haiku.npz) or
# --variant; the program's loader infers the variant from the weights' shapes
# and stops with one clear message if it differs from --config.model.variant.
# Expected: well above the same model trained from scratch on your data.
#
# Inputs (flag, or environment variable):
#   --weights FILE     WEIGHTS     DeepMind *_haiku.npz (a restricted unpickler
#                      reads it: numpy arrays only)
#   --train DIR|SOURCE TRAIN_DATA  class folders (DIR/<class>/*.jpg) or a source
#                      string (arrayrecord:GLOB, tfrecord:GLOB, tfds:NAME/SPLIT)
#   --eval DIR|SOURCE  EVAL_DATA   held-out split, same forms (without it the
#                      run reports no accuracy)
#   --workdir DIR      WORKDIR     (default: ./runs/deepmind_<variant>_finetune)
# Options:
#   --variant NAME     F0..F6; needed only when the file name does not say
#   --res N            training and eval resolution (default: the config's 256)
#   --steps N          run length (default: the config's 5000)
#   --batch N          global batch (default: the config's 512)
#   --dry-run          print the resolved plan as one JSON line; reads no data
#                      and no weights, keeps JAX on the CPU
#   --finetune-arg ARG extra program flag, e.g. --finetune-arg=--config.lr=0.05;
#                      ARGS after -- too
#   -h, --help         this text
#
# Re-running is safe: a finished run (WORKDIR/finetune/results.json) is
# skipped, an unfinished one resumes from its last checkpoint.
#
# Multi-host: run the SAME command on every host at once, each with its own
# --host-id, the workdir on a filesystem all hosts share:
#   recipes/deepmind_finetune.sh ... --coordinator HOST0:1234 --hosts N --host-id I
# (exported as JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID for
# jax.distributed.initialize(); setting those variables works too), or
# --distributed on TPU pods / SLURM where JAX finds the cluster itself.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WEIGHTS=${WEIGHTS:-}
TRAIN_DATA=${TRAIN_DATA:-}
EVAL_DATA=${EVAL_DATA:-}
VARIANT=""
RES=""
STEPS=""
BATCH=""

recipe_option() {
  case $1 in
    --weights|--weights=*) opt_value "$@"; WEIGHTS=$VALUE ;;
    --train|--train=*) opt_value "$@"; TRAIN_DATA=$VALUE ;;
    --eval|--eval=*) opt_value "$@"; EVAL_DATA=$VALUE ;;
    --variant|--variant=*) opt_value "$@"; VARIANT=$VALUE ;;
    --res|--res=*) opt_value "$@"; RES=$VALUE ;;
    --steps|--steps=*) opt_value "$@"; STEPS=$VALUE ;;
    --batch|--batch=*) opt_value "$@"; BATCH=$VALUE ;;
  esac
}

# F3_haiku.npz -> F3 (DeepMind's release names); empty when the name says nothing.
variant_from_file_name() {
  local name
  name=$(basename -- "$1")
  if [[ $name =~ ^[Ff]([0-7])(\+?)_haiku\.npz$ ]]; then
    echo "F${BASH_REMATCH[1]}${BASH_REMATCH[2]}"
  fi
}

parse_options recipe_option "$@"
setup_run

if [[ -z $VARIANT && -n $WEIGHTS ]]; then
  VARIANT=$(variant_from_file_name "$WEIGHTS")
  [[ -n $VARIANT ]] || die "cannot tell the variant from the file name" \
    "$(basename -- "$WEIGHTS") (DeepMind's are F0_haiku.npz .. F6_haiku.npz):" \
    "pass --variant F0..F6; the program checks it against the weights."
fi
if ((!DRY_RUN)); then
  [[ -n $WEIGHTS ]] || die "weights missing: pass --weights F0_haiku.npz (or" \
    "set WEIGHTS); see --help."
  [[ -f $WEIGHTS ]] || die "--weights: no such file: $WEIGHTS"
  [[ -n $TRAIN_DATA ]] || die "training data missing: pass --train DIR|SOURCE" \
    "(or set TRAIN_DATA); see --help."
fi

config_args=()
for pair in "variant=$VARIANT" "res=$RES" "steps=$STEPS" "batch=$BATCH"; do
  if [[ -n ${pair#*=} ]]; then
    config_args+=("$pair")
  fi
done
config="$REPO_ROOT/finetune/configs/dataset.py"
if ((${#config_args[@]})); then
  config+=":$(IFS=,; echo "${config_args[*]}")"
fi

overrides=()
if [[ -n $WEIGHTS ]]; then
  overrides+=(--config.init_from="$(absolute_path "$WEIGHTS")")
fi
if [[ -n $TRAIN_DATA ]]; then
  overrides+=(--config.data.train="$(folder_source "$TRAIN_DATA")")
fi
if [[ -n $EVAL_DATA ]]; then
  overrides+=(--config.data.eval="$(folder_source "$EVAL_DATA")")
elif ((!DRY_RUN)); then
  note "no --eval: the run trains but reports no accuracy."
fi
if ((!DRY_RUN)); then
  check_source "--train" "$(folder_source "$TRAIN_DATA")"
  if [[ -n $EVAL_DATA ]]; then
    check_source "--eval" "$(folder_source "$EVAL_DATA")"
  fi
fi

WORKDIR=$(absolute_path "${WORKDIR:-runs/deepmind_${VARIANT:-F0}_finetune}")
add_stage finetune finetune "$WORKDIR/finetune" "" "" "$config" \
  ${overrides[@]+"${overrides[@]}"}
run_stages
