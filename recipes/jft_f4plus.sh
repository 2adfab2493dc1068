#!/usr/bin/env bash
# NFNet-F4+ pre-trained on JFT-style shards, then fine-tuned on ImageNet at
# 224, 320 and 384 px, then a results table: the paper's 89.2% top-1 recipe
# (appendix A.5; REFERENCE.md section 4).
#
# Usage: recipes/jft_f4plus.sh [--dry-run] --pretrain-data DIR|SOURCE
#            --imagenet TFDS_DIR [options] [-- ARGS for every stage]
#
# Stages (each in WORKDIR/<stage>; the fine-tunes start from WORKDIR/pretrain):
#   pretrain       pretrain/configs/jft.py:variant=F4+  224 px, batch 4096,
#                  lr 1.6, wd 1e-6, no EMA, no SAM, 20 epochs of 300M images
#   finetune_224   finetune/configs/imagenet.py:variant=F4+,res=224  batch 2048,
#   finetune_320   15,000 steps (5,000 warm-up), lr 0.1, SAM 0.05, wd 1e-5,
#   finetune_384   dropout 0.25, stochastic depth 0.1, EMA 0.9999
# Expected: 89.2% ImageNet top-1 at the best of the three resolutions.
#
# Inputs (flag, or environment variable):
#   --pretrain-data DIR|SOURCE  PRETRAIN_DATA  a directory of shards
#       (DIR/train-*.array_record, DIR/eval-*.array_record, as written by
#       python -m data.convert) or a source string (arrayrecord:GLOB,
#       tfrecord:GLOB, tfds:NAME/SPLIT)
#   --pretrain-eval DIR|SOURCE|none  PRETRAIN_EVAL  held-out pre-training split
#   --imagenet TFDS_DIR     IMAGENET_DIR (or TFDS_DATA_DIR)  TFDS data_dir with
#       imagenet2012 prepared as array_record (tfds build imagenet2012
#       --file_format=array_record)
#   --imagenet-train SOURCE, --imagenet-eval SOURCE  IMAGENET_TRAIN/_EVAL
#       instead of --imagenet (a plain directory means folder:DIR)
#   --workdir DIR           WORKDIR  (default: ./runs/jft_f4plus)
# Options:
#   --dry-run       print each stage's resolved plan as one JSON line (from the
#                   real configs via python -m nfnet.plan); reads no data and
#                   keeps JAX on the CPU
#   --stages LIST   comma-separated subset, e.g. finetune_320,finetune_384
#   --pretrain-arg ARG, --finetune-arg ARG  extra program flag for those
#                   stages, e.g. --pretrain-arg=--config.micro_batches=2;
#                   ARGS after -- go to every stage
#   -h, --help      this text
#
# Re-running is safe: a stage whose workdir holds results.json is skipped, an
# unfinished one resumes from its last checkpoint (the programs do that).
#
# Multi-host: run the SAME command on every host at once; only the host id
# differs. The workdir must be one shared filesystem path (NFS, ...).
#   host 0:  recipes/jft_f4plus.sh ... --coordinator 10.0.0.1:1234 --hosts 4 --host-id 0
#   host 3:  recipes/jft_f4plus.sh ... --coordinator 10.0.0.1:1234 --hosts 4 --host-id 3
# (--coordinator/--hosts/--host-id are exported as JAX_COORDINATOR_ADDRESS,
# JAX_NUM_PROCESSES, JAX_PROCESS_ID, which the programs pass to
# jax.distributed.initialize(); setting those variables works too.) On TPU
# pods and SLURM, where JAX finds the cluster itself, pass --distributed
# instead, e.g.: gcloud compute tpus tpu-vm ssh NAME --worker=all
#   --command="cd nfnets && recipes/jft_f4plus.sh ... --distributed".
# batch_size is global: each host loads batch / hosts images per step.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VARIANT="F4+"
PAPER_TOP1="89.2 (best res)"  # Table 5: F4+ after JFT-300M

parse_options transfer_option "$@"
setup_run
WORKDIR=$(absolute_path "${WORKDIR:-runs/jft_f4plus}")
transfer_data

add_stage pretrain pretrain "$WORKDIR/pretrain" "" "" \
  "$REPO_ROOT/pretrain/configs/jft.py:variant=$VARIANT" \
  ${PRETRAIN_DATA_ARGS[@]+"${PRETRAIN_DATA_ARGS[@]}"}
for res in 224 320 384; do
  add_stage "finetune_$res" finetune "$WORKDIR/finetune_$res" "$PAPER_TOP1" \
    "$WORKDIR/pretrain" \
    "$REPO_ROOT/finetune/configs/imagenet.py:variant=$VARIANT,res=$res" \
    --config.init_from="$WORKDIR/pretrain" \
    ${IMAGENET_ARGS[@]+"${IMAGENET_ARGS[@]}"}
done
run_stages
