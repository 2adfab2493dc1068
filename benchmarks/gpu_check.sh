#!/usr/bin/env bash
# One prepared accelerator check (benchmarks/gpu_check.py): F0 training-step
# latency at batch 32 in bfloat16 (native vs per-group grouped convs), F1-F3
# latency (native), F4-F7 step memory with and without remat, and the input pipeline's
# images/s per CPU core, as JSON lines on stdout (progress on stderr).
#
#   bash benchmarks/gpu_check.sh            # one GPU, under 8 minutes
#   bash benchmarks/gpu_check.sh --dry-run  # CPU, tiny shapes, seconds
#
# A hard wall-clock limit stops the whole run at GPU_CHECK_TIMEOUT_S (default
# 470 s); inside it, no new measurement starts after --budget-s (450 s).
set -uo pipefail
cd "$(dirname "$0")/.."
timeout_s="${GPU_CHECK_TIMEOUT_S:-470}"
# Let XLA take GPU memory as it needs it, so peak usage is not the preallocation.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
timeout --signal=TERM --kill-after=10 "$timeout_s" \
  python -m benchmarks.gpu_check "$@"
rc=$?
if [ "$rc" -eq 124 ]; then
  echo "{\"measurement\": \"gpu_check\", \"error\": \"stopped after ${timeout_s} s\"}"
fi
exit "$rc"
