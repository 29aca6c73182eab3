#!/usr/bin/env bash
# The one prepared GPU run behind the README's performance tables (issue 13).
#
# Runs scripts/bench_pipeline.py on the GPU only (no CPU rows): the released SS4D architectures with
# random weights, in two passes ($PASSES, default "1 2"), the short one first so that a call always
# yields figures:
#   1. T = 8, bf16: default (25+25 steps, CFG), fast preset (ss4d.presets: 6 Heun steps, batched CFG,
#      K/V cache), one-step memory rows in default and low-VRAM mode (bench_t8.json). Measured on an
#      H200 on 2026-12-04 (torch sparse-conv backend): the default row took 83 s, the pass without
#      the fast row 159 s with model build, ceiling and warm-up.
#   2. the full plan, T = 32 first (default, fast, memory at T=32/64/128, FP8, compile, T=8/16,
#      fp16), rows not started within $BUDGET_S seconds (default 150) skipped and listed
#      (bench.json). Its first row does about 4x the T = 8 work (~5.5 minutes at that rate; on
#      2026-12-04 it had not finished 290 s after the pass started), so the whole script needs about
#      10 minutes: give pass 2 its own call (PASSES=2) when a call must end sooner.
#
# Optional wheels (torchao for the FP8 row, pure-python gsplat, ...) in .whl/ are installed to
# /tmp/site first (see /work/.library/device/README.md for how to download them; spconv-cu126 +
# cumm-cu126 are ~92 MB together, over the 64 MiB that travels with a call, so sparse convs run on
# the exact torch backend there: the JSON records which backend ran). Without torchao the FP8 row
# is listed as skipped with the reason.
#
# Usage: bash scripts/gpu_bench.sh [OUT_DIR]   (writes OUT_DIR/bench_t8.json, bench.json, bench.log, gpu.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-bench_out}}"
BUDGET_S="${BUDGET_S:-150}"
PASSES="${PASSES:-1 2}"
mkdir -p "$OUT_DIR"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT_DIR/gpu.txt" || true
: > "$OUT_DIR/bench.log"                 # this run's log only; both passes append to it
if [[ " $PASSES " == *" 1 "* ]]; then
    python3 scripts/bench_pipeline.py --no-cpu --no-thread-compare --gpu-frames 8 --gpu-dtypes bf16 \
        --memory-frames --no-accel --json "$OUT_DIR/bench_t8.json" 2>&1 | tee -a "$OUT_DIR/bench.log"
fi
if [[ " $PASSES " == *" 2 "* ]]; then
    python3 scripts/bench_pipeline.py --no-cpu --no-thread-compare --budget-s "$BUDGET_S" \
        --json "$OUT_DIR/bench.json" 2>&1 | tee -a "$OUT_DIR/bench.log"
fi
