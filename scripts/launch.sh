# Shared by scripts/{single_gpu,single_node,multi_node}/run_step*.sh: each runs `train.py --step N` with
# the deployment of its folder, so the stage, its preset (training/configs) and its output folder are
# chosen as train.py chooses them; extra flags go to the stage.
#
#   MODEL=1.3b bash scripts/single_node/run_step1.sh --zero_stage 3 --lora_dim 128
#
# Environment: MODEL (default smollm2-135m), REWARD_MODEL (the model the reward model starts from in
# stage 2 and is found by in stage 3; default MODEL), OUTPUT (default output), CONFIG (a config file laid
# over the preset), NUM_GPUS (ranks: single_node, default every local GPU, 2 on CPU; multi_node without a
# hostfile, per node), HOSTFILE (multi_node). multi_node without ssh (every node runs the same command;
# e.g. `srun` in a Slurm job): NO_SSH=1, NODE_RANK (default $SLURM_NODEID), NUM_NODES (default: the
# hostfile's hosts, else $SLURM_NNODES), MASTER_ADDR (node 0, reachable from every node), MASTER_PORT
# (default 29500).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"     # OUTPUT, CONFIG and data paths are relative to the repository, as before
PY=${PYTHON:-$([ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3)}

launch_stage() {  # launch_stage DEPLOYMENT STEP [stage flags...]
  local deploy=$1 step=$2
  shift 2
  local model=${MODEL:-smollm2-135m}
  local args=(--step "$step" --deployment-type "$deploy" --actor-model "$model" --output-dir "${OUTPUT:-output}"
              --reward-model "${REWARD_MODEL:-$model}")
  [ -n "${CONFIG:-}" ] && args+=(--config "$CONFIG")
  [ -n "${NUM_GPUS:-}" ] && args+=(--num-processes "$NUM_GPUS")
  [ -n "${HOSTFILE:-}" ] && args+=(--hostfile "$HOSTFILE")
  if [ "$deploy" = multi_node ] && [ "${NO_SSH:-0}" = 1 ]; then
    args+=(--no-ssh)
    [ -n "${NUM_NODES:-}" ] && args+=(--num-nodes "$NUM_NODES")
  fi
  exec "$PY" "$ROOT/train.py" "${args[@]}" "$@"
}
