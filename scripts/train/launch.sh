#!/usr/bin/env bash
# Launch one SS4D training stage with Accelerate.
#   scripts/train/launch.sh STAGE DATA RUN [ACCELERATE_YAML] [extra ss4d-train args...]
# STAGE: ss_flow_4d | slat_vae_4d | slat_flow_4d | ss_vae (configs/train/STAGE.json) or a config path.
# ACCELERATE_YAML: configs/accelerate/{1gpu,8gpu,multinode,fsdp2_8gpu}.yaml (default 8gpu).
# The run resumes from its newest complete checkpoint when RUN already exists (--resume auto).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 STAGE DATA RUN [ACCELERATE_YAML] [ss4d-train args...]" >&2; exit 2
fi
STAGE=$1; DATA=$2; RUN=$3; shift 3
YAML=${1:-configs/accelerate/8gpu.yaml}; [ $# -gt 0 ] && shift
CONFIG=$STAGE; [ -f "$CONFIG" ] || CONFIG=configs/train/$STAGE.json
[ -f "$CONFIG" ] || { echo "config not found: $CONFIG" >&2; exit 2; }
exec accelerate launch --config_file "$YAML" --max_restarts "${MAX_RESTARTS:-3}" -m ss4d.training \
  --config "$CONFIG" --data "$DATA" --output "$RUN" --resume auto "$@"
