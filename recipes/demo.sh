#!/usr/bin/env bash
# The embedded demo: pre-train -> fine-tune on a laptop CPU, with a control.
#
#   bash recipes/demo.sh [--out DIR]          (default: ./demo_out)
#
# 1. writes the synthetic corpus (data/synthetic.py): 20k multi-label
#    pre-training images of 1000 classes, and a small 16-class downstream set;
# 2. pre-trains a tiny NFNet on it     (pretrain/configs/synthetic.py),
#    with few-shot probes of the downstream set (fewshot/downstream_*shot);
# 3. fine-tunes it on the downstream set with SAM + EMA
#                                      (finetune/configs/synthetic.py);
# 4. trains the same model on the downstream set from scratch, same recipe;
# 5. prints both top-1s side by side, writes DIR/curves.png and tells how to
#    open TensorBoard.
# Re-running resumes or skips finished stages. About 6 minutes on 2 cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"  # REPO_ROOT, PYTHONPATH

OUT=./demo_out
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) [[ $# -ge 2 ]] || { echo "--out needs a directory" >&2; exit 2; }
           OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=$PYTHON
export TF_CPP_MIN_LOG_LEVEL=2  # TensorFlow (used by clu's writer) is chatty
# The fine-tune and its from-scratch control compile the same programs: JAX's
# persistent cache lets the second stage skip the compile (about 25 s each).
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}
start=$SECONDS
stage() { echo; echo "== [$((SECONDS - start))s] $*"; }

stage "1/4 synthetic corpus -> $OUT/data"
if [[ ! -f "$OUT/data/downstream/dataset_info.json" ]]; then
  $PY -m data.synthetic --out "$OUT/data"
else
  echo "already written"
fi

stage "2/4 pre-training on 1000 multi-label classes -> $OUT/pretrain"
$PY -m pretrain.main --config "$REPO_ROOT/pretrain/configs/synthetic.py:data_dir=$OUT/data" \
  --workdir "$OUT/pretrain"

stage "3/4 fine-tuning the pre-trained model on 16 classes -> $OUT/finetune"
$PY -m finetune.main --config "$REPO_ROOT/finetune/configs/synthetic.py:data_dir=$OUT/data" \
  --workdir "$OUT/finetune" --config.init_from="$OUT/pretrain"

stage "4/4 the same fine-tune from scratch (control) -> $OUT/scratch"
$PY -m finetune.main --config "$REPO_ROOT/finetune/configs/synthetic.py:data_dir=$OUT/data" \
  --workdir "$OUT/scratch"

stage "results (downstream eval split)"
$PY -m nfnet.train.results table "pre-trained=$OUT/finetune" "from scratch=$OUT/scratch"
$PY -m nfnet.train.results plot --out "$OUT/curves.png" \
  "pre-trained=$OUT/finetune" "from scratch=$OUT/scratch"
echo
echo "Pre-training itself: $($PY -m nfnet.train.results table "pre-training=$OUT/pretrain" | tail -1)"
echo "TensorBoard:  tensorboard --logdir '$OUT'"
echo "Done in $((SECONDS - start))s."
