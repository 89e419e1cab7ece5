#!/bin/bash
# Data-parallel training on a SLURM allocation: one torchrun per node, one process per GPU, every node running
# scripts/train.py with the same flags (the output and data dirs must be on a filesystem all nodes share).
#
#   sbatch --nodes 2 scripts/slurm_train.sh --model-size large --batch-size 256 --output-dir checkpoints/large
#
# Resubmitting the same command resumes the run from its newest checkpoint; within a job, torchrun restarts all
# processes from the last checkpoint up to MAX_RESTARTS times when one of them dies.
#SBATCH --job-name=math-llm
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=logs/slurm-%j.out
set -euo pipefail

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun --kill-on-bad-exit=1 .venv/bin/torchrun \
  --nnodes "$SLURM_NNODES" \
  --nproc_per_node "${GPUS_PER_NODE:-8}" \
  --rdzv-backend c10d \
  --rdzv-endpoint "$head_node:${MASTER_PORT:-29500}" \
  --rdzv-id "$SLURM_JOB_ID" \
  --max-restarts "${MAX_RESTARTS:-3}" \
  scripts/train.py "$@"
