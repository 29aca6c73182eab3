#!/usr/bin/env bash
# The whole recipe at toy scale, on a CPU, in minutes (docs/training.md, "Tiny recipe"):
#   scripts/train/tiny_recipe.sh ASSETS_DIR OUT_DIR
# builds a small dataset (torch renderer, tiny random DINOv2 features, 32³ voxels), trains the SS VAE,
# re-encodes SS latents with it, trains the SS flow and the 4D sparse VAE, re-encodes SLat latents with the
# trained encoder, trains the SLat flow (each with the scaled-down progressive schedule 2 -> 4 -> 6 frames),
# exports a model folder and runs ss4d-generate with it. Prints each stage's first and last losses.
# MAX_STEPS (default: the configs' 300) caps every stage's steps; FRAMES (default 8) frames per clip.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 ASSETS_DIR OUT_DIR" >&2; exit 2; }
ASSETS=$1; OUT=$2
[ -d "$ASSETS" ] || { echo "assets folder not found: $ASSETS" >&2; exit 2; }
PY=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
STEPS=()
[ -n "${MAX_STEPS:-}" ] && STEPS=(--max-steps "$MAX_STEPS")
DATA=$OUT/data
BUILD=(-o "$DATA" --frames "${FRAMES:-8}" --views 4 --resolution 64 --renderer torch --feature-model tiny-random
       --voxel-resolution 32 --max-voxels 3000 --no-progress)
train() {  # STAGE RUN [args]
  local stage=$1 run=$2; shift 2
  $PY -m ss4d.training --config configs/train/tiny_$stage.json --data "$DATA" --output "$run" --no-progress \
      "${STEPS[@]}" "$@"
  $PY - "$run" <<'PYEOF'
import json, sys
losses = [json.loads(l)["loss"] for l in open(sys.argv[1] + "/log.jsonl") if '"loss"' in l]
k = max(1, len(losses) // 10)
first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
print(f"[tiny recipe] {sys.argv[1]}: mean loss of the first {k} steps {first:.4f} -> last {k} {last:.4f}")
if not last < first:
    sys.exit(f"[tiny recipe] the loss of {sys.argv[1]} did not fall")
PYEOF
}
echo "[tiny recipe] 1/7 dataset"
$PY -m ss4d.data.build "$ASSETS" "${BUILD[@]}"
echo "[tiny recipe] 2/7 SS VAE"
train ss_vae "$OUT/ss_vae"
$PY -m ss4d.training.export --run "$OUT/ss_vae" --output "$OUT/encoders_ss" --models-only
$PY -m ss4d.data.build "$ASSETS" "${BUILD[@]}" --ss-encoder "$OUT/encoders_ss/ckpts/ss_enc_conv3d"
echo "[tiny recipe] 3/7 SS flow"
train ss_flow "$OUT/ss_flow" --set dataset.ss_encoder=ss_enc_conv3d
echo "[tiny recipe] 4/7 4D sparse VAE"
train slat_vae "$OUT/slat_vae"
$PY -m ss4d.training.export --run "$OUT/slat_vae" --output "$OUT/encoders_slat" --models-only
echo "[tiny recipe] 5/7 re-encode SLat latents with the trained encoder"
$PY -m ss4d.data.build "$ASSETS" "${BUILD[@]}" --slat-encoder "$OUT/encoders_slat/ckpts/slat_enc_4d"
echo "[tiny recipe] 6/7 SLat flow"
train slat_flow "$OUT/slat_flow"
echo "[tiny recipe] 7/7 export and generate"
$PY -m ss4d.training.export --run "$OUT/ss_vae" --run "$OUT/ss_flow" --run "$OUT/slat_vae" --run "$OUT/slat_flow" \
    --output "$OUT/model" --steps 4
CLIP=$(ls "$DATA/clips" | head -n 1)
$PY -m ss4d.cli "$DATA/clips/$CLIP/cond" --model "$OUT/model" -o "$OUT/generated" --frames 4 --render grid \
    --resolution 128 --device cpu --overwrite --no-progress
echo "[tiny recipe] done: $OUT/model, $OUT/generated"
