#!/bin/bash
# Animate Anyone's two stages as two jobs sharing one run dir: stage 2 (temporal) starts only once stage 1
# (spatial) has succeeded (--dependency=afterok; a requeued stage 1 keeps stage 2 waiting).
#   slurm/animate_anyone_stages.sh [hydra overrides for both stages...]
# Environment: RUN_DIR (default $RUN_ROOT/animate_anyone_<timestamp>), EXPERIMENT (default animate_anyone),
#   SPATIAL_SBATCH / TEMPORAL_SBATCH: extra sbatch options per stage (e.g. "--nodes=2 --time=72:00:00").
# Prints the two job ids.
set -euo pipefail
cd "${PROJECT_ROOT:-$PWD}"
RUN_ROOT="${RUN_ROOT:-$PWD/outputs}"
RUN_DIR="${RUN_DIR:-$RUN_ROOT/animate_anyone_$(date +%Y%m%d_%H%M%S)}"
EXPERIMENT="${EXPERIMENT:-animate_anyone}"
# shellcheck disable=SC2086  # the *_SBATCH variables hold several options
spatial=$(RUN_DIR="$RUN_DIR" sbatch --parsable --job-name=aa_spatial ${SPATIAL_SBATCH:-} \
    slurm/train.sbatch "experiment=$EXPERIMENT" stage=spatial "$@")
spatial="${spatial%%;*}"
# shellcheck disable=SC2086
temporal=$(RUN_DIR="$RUN_DIR" sbatch --parsable --job-name=aa_temporal --dependency="afterok:$spatial" \
    ${TEMPORAL_SBATCH:-} slurm/train.sbatch "experiment=$EXPERIMENT" stage=temporal "$@")
temporal="${temporal%%;*}"
echo "spatial job $spatial, temporal job $temporal (afterok:$spatial), run dir $RUN_DIR"
