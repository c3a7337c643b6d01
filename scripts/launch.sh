# Shared by scripts/{single_gpu,single_node,multi_node}/run_*.sh: launch settings only; the
# hyper-parameters come from the config tree (a preset in training/configs, then flags).
#
#   MODEL=1.3b bash scripts/single_node/run_step1.sh --zero_stage 3 --lora_dim 128
#
# Environment: MODEL (default smollm2-135m), REWARD_MODEL (stage 3), OUTPUT (default output),
# CONFIG (a config file laid over the preset train.py would choose for MODEL and the deployment),
# NUM_GPUS (single_node; default every local GPU, 2 ranks on CPU), HOSTFILE (multi_node).
# multi_node without ssh (every node runs the same command; e.g. `srun` in a Slurm job):
# NO_SSH=1, NODE_RANK (default $SLURM_NODEID), NUM_NODES (default: the hostfile's hosts, else
# $SLURM_NNODES), MASTER_ADDR (node 0, reachable from every node), MASTER_PORT (default 29500),
# NUM_GPUS (ranks per node when there is no hostfile; default every local GPU, 1 on CPU).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}

launch_stage() {  # launch_stage DEPLOYMENT STEP [stage flags...]
  local deploy=$1 step=$2
  shift 2
  local model=${MODEL:-smollm2-135m} out=${OUTPUT:-output}
  local tag script args
  tag=$(basename "$model")
  case "$step" in
    1) script=training/step1_supervised_finetuning/main.py
       args=(--model_name_or_path "$model" --output_dir "$out/actor-models/$tag") ;;
    2) script=training/step2_reward_model_finetuning/main.py
       args=(--model_name_or_path "$model" --output_dir "$out/reward-models/$tag") ;;
    3) script=training/step3_rlhf_finetuning/main.py
       local rm=${REWARD_MODEL:-$model}
       args=(--model_name_or_path "$out/actor-models/$tag" --tokenizer_name_or_path "$out/actor-models/$tag"
             --reward_model_name_or_path "$out/reward-models/$(basename "$rm")" --output_dir "$out/step3-models/$tag") ;;
    *) echo "unknown step $step" >&2; return 2 ;;
  esac
  # the preset train.py would take: measured (small models on CPU, SmolLM2, tiny) or DeepSpeed-Chat's by size
  args+=(--config "$("$PY" -m training.utils.presets "$step" "$model" "$deploy" "$out")" ${CONFIG:+"$CONFIG"})
  case "$deploy" in
    single_gpu) exec "$PY" "$script" "${args[@]}" "$@" ;;
    single_node)
      local n=${NUM_GPUS:-$("$PY" -c 'import torch; print(torch.cuda.device_count() or 2)')}
      exec "$PY" -m deepspeed.launcher.runner --num_gpus "$n" "$script" "${args[@]}" "$@" ;;
    multi_node)
      local hf=${HOSTFILE:-/job/hostfile}
      if [ "${NO_SSH:-0}" = 1 ]; then
        local rank=${NODE_RANK:-${SLURM_NODEID:-}} nodes=${NUM_NODES:-} master=${MASTER_ADDR:-}
        if [ -f "$hf" ]; then
          nodes=${nodes:-$(grep -cv '^\s*\(#\|$\)' "$hf")}
          master=${master:-$(grep -v '^\s*\(#\|$\)' "$hf" | head -n1 | cut -d' ' -f1)}
        else
          nodes=${nodes:-${SLURM_NNODES:-}}
          local per=${NUM_GPUS:-$("$PY" -c 'import torch; print(torch.cuda.device_count() or 1)')}
          [ -n "$nodes" ] || { echo "NO_SSH=1 needs NUM_NODES (or a HOSTFILE, or SLURM_NNODES)" >&2; return 2; }
          hf="$out/logs/hostfile-${nodes}x${per}"
          mkdir -p "$out/logs"
          for ((i = 0; i < nodes; i++)); do echo "node-$i slots=$per"; done > "$hf.$$" && mv "$hf.$$" "$hf"
        fi
        [ -n "$rank" ] || { echo "NO_SSH=1 needs NODE_RANK (this node's index; or SLURM_NODEID)" >&2; return 2; }
        [ -n "$master" ] || { echo "NO_SSH=1 needs MASTER_ADDR (node 0's address)" >&2; return 2; }
        exec "$PY" -m deepspeed.launcher.runner --hostfile "$hf" --no_ssh --node_rank "$rank" --master_addr "$master" \
          --master_port "${MASTER_PORT:-29500}" "$script" "${args[@]}" "$@"
      fi
      [ -f "$hf" ] || { echo "multi_node needs a hostfile: $hf does not exist (set HOSTFILE, or NO_SSH=1)" >&2; return 2; }
      exec "$PY" -m deepspeed.launcher.runner --hostfile "$hf" "$script" "${args[@]}" "$@" ;;
  esac
}
