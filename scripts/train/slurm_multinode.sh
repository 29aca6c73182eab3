#!/usr/bin/env bash
# SLURM example: one stage on N nodes × 8 GPUs. One task per node runs `accelerate launch`, which starts the
# 8 local workers; every node gets the same config and its own --machine_rank.
#   sbatch --nodes 4 scripts/train/slurm_multinode.sh slat_flow_4d /data/ss4d runs/slat_flow
#SBATCH --job-name=ss4d-train
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=72:00:00
#SBATCH --requeue
set -euo pipefail
STAGE=$1; DATA=$2; RUN=$3; shift 3
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-29500}
NPROC=$((SLURM_NNODES * 8))
# --requeue + --resume auto: a preempted or crashed job continues from its newest complete checkpoint.
srun --kill-on-bad-exit=1 bash -c "accelerate launch --config_file configs/accelerate/multinode.yaml \
  --num_machines $SLURM_NNODES --num_processes $NPROC --machine_rank \$SLURM_NODEID \
  --main_process_ip $MASTER_ADDR --main_process_port $MASTER_PORT --max_restarts 3 \
  -m ss4d.training --config configs/train/$STAGE.json --data $DATA --output $RUN --resume auto --no-progress $*"
