#!/usr/bin/env bash
# The whole SS4D recipe in order (docs/training.md, "The recipe"):
#   1. SS flow (on the frozen TRELLIS SS VAE's latents) and the 4D sparse VAE (independent; run them in
#      parallel on two allocations if you have them);
#   2. re-encode the dataset's structured latents with the trained 4D SLat encoder;
#   3. SLat flow on those latents;
#   4. export the EMA weights into a pipeline folder (SS decoder from TRELLIS) for ss4d-generate.
#   scripts/train/train_all.sh ASSETS_OR_DATA OUT [ACCELERATE_YAML]
# Expects checkpoints/TRELLIS-image-large (inflation) and DINOv2 in checkpoints/dinov2_vitl14_reg.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DATA OUT [ACCELERATE_YAML]" >&2; exit 2; }
DATA=$1; OUT=$2; YAML=${3:-configs/accelerate/8gpu.yaml}
TRELLIS=${TRELLIS:-checkpoints/TRELLIS-image-large}
L=scripts/train/launch.sh
mkdir -p "$OUT"
$L ss_flow_4d "$DATA" "$OUT/ss_flow" "$YAML"
$L slat_vae_4d "$DATA" "$OUT/slat_vae" "$YAML"
ss4d-export-pipeline --run "$OUT/slat_vae" --output "$OUT/encoders" --models-only
ss4d-build-dataset -o "$DATA" --steps latent --slat-encoder "$OUT/encoders/ckpts/slat_enc_4d" --feature-model "${DINOV2:-checkpoints/dinov2_vitl14_reg}"
$L slat_flow_4d "$DATA" "$OUT/slat_flow" "$YAML" --set dataset.latent_set=dinov2_vitl14_reg_visible__slat_enc_4d
ss4d-export-pipeline --run "$OUT/ss_flow" --run "$OUT/slat_vae" --run "$OUT/slat_flow" --base "$TRELLIS" \
  --output "$OUT/SS4D-trained"
echo "done: ss4d-generate VIDEO --model $OUT/SS4D-trained"
