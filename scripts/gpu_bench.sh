#!/usr/bin/env bash
# The one prepared GPU run behind the README's performance table (issue 13).
#
# Runs scripts/bench_pipeline.py on the GPU only (no CPU rows): the released SS4D architectures with
# random weights; in this order (the README table's figures first): bf16 T=32 default and fast
# preset (ss4d.presets: 6 Heun steps, batched CFG, K/V cache); peak memory at T=32/64/128 in
# default and low-VRAM mode (one step per stage) and at T=128 low-VRAM with time chunks; bf16 T=32
# default with FP8 trunk matmuls (torchao; render PSNR against the bf16 default row) and with the
# structure flow compiled (torch.compile, CUDA graphs; compile time recorded apart); bf16 T=8/16;
# fp16 T=32. Rows not started within $BUDGET_S seconds (default 360) are skipped and listed, so
# the run ends within ~8 minutes on an H100/H200 (model build, ceiling, warm-up and the last row
# included; the compile row is the longest).
#
# Optional wheels (torchao for the FP8 row, pure-python gsplat, spconv-triton, ...) in .whl/ are
# installed to /tmp/site first (see /work/.library/device/README.md for how to download them;
# spconv-cu126 + cumm-cu126 are ~92 MB together, over the 64 MiB that travels with a call, so
# sparse convs may run on the exact torch backend there: the JSON records which backend ran).
# Without torchao the FP8 row is listed as skipped with the reason.
#
# Usage: bash scripts/gpu_bench.sh [OUT_DIR]   (writes OUT_DIR/bench.json, bench.log, gpu.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-bench_out}}"
BUDGET_S="${BUDGET_S:-360}"
mkdir -p "$OUT_DIR"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT_DIR/gpu.txt" || true
python3 scripts/bench_pipeline.py --no-cpu --no-thread-compare --budget-s "$BUDGET_S" \
    --json "$OUT_DIR/bench.json" 2>&1 | tee "$OUT_DIR/bench.log"
