# Shared by the sbatch scripts in slurm/ (sourced, not run). Submit from the repository root, or set
# PROJECT_ROOT; every rank and every requeue of a job computes the same values from SLURM's environment.

# Repository root (also conf/paths' paths.root), the interpreter, and where runs go.
export PROJECT_ROOT="${PROJECT_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}"
PYTHON="${PYTHON:-python}"
RUN_ROOT="${RUN_ROOT:-$PROJECT_ROOT/outputs}"
export PYTHONUNBUFFERED=1

# Rendezvous for torch.distributed: the job's first node, a port derived from the job id (distinct for
# concurrent jobs sharing a node, identical on every rank and after a requeue, which keeps the job id).
slurm_master_env() {
    MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
    MASTER_PORT="$((15000 + SLURM_JOB_ID % 20000))"
    export MASTER_ADDR MASTER_PORT
}

# One task per device: trainer.devices = tasks per node, trainer.num_nodes = nodes (Lightning checks both).
slurm_trainer_overrides() {
    local per_node="${SLURM_NTASKS_PER_NODE:-1}"
    per_node="${per_node%%(*}"  # "2(x3)" -> "2"
    echo "trainer.num_nodes=${SLURM_JOB_NUM_NODES:-1}" "trainer.devices=${per_node}"
}

# Runs `python -m src.train` on every task with the shared run dir; returns its status. Exit status 75 means a
# preemption/time-limit signal made every rank save <stage>/checkpoints/last.ckpt, and rank 0 requeued the job.
slurm_train() {
    local run_dir="$1"
    shift
    slurm_master_env
    mkdir -p "$run_dir"
    echo "[$(date -Is)] job ${SLURM_JOB_ID} restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST}: run dir ${run_dir}"
    # shellcheck disable=SC2046  # the overrides are single words
    srun --kill-on-bad-exit=1 "$PYTHON" -m src.train "hydra.run.dir=${run_dir}" $(slurm_trainer_overrides) "$@"
    local status=$?
    if [ "$status" -eq 75 ]; then  # seen only when the requeue did not end this script first
        echo "[$(date -Is)] preempted: checkpoint saved under ${run_dir}; rerun the same command to resume" >&2
    fi
    return "$status"
}
