# Shared by scripts/{single_gpu,single_node,multi_node}/run_*.sh: launch settings only; the
# hyper-parameters come from the config tree (a preset in training/configs, then flags).
#
#   MODEL=1.3b bash scripts/single_node/run_step1.sh --zero_stage 3 --lora_dim 128
#
# Environment: MODEL (default smollm2-135m), REWARD_MODEL (stage 3), OUTPUT (default output),
# CONFIG (a preset to use instead of training/configs/<smollm2|tiny>-stepN.yaml),
# NUM_GPUS (single_node; default every local GPU, 2 ranks on CPU), HOSTFILE (multi_node).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}

launch_stage() {  # launch_stage DEPLOYMENT STEP [stage flags...]
  local deploy=$1 step=$2
  shift 2
  local model=${MODEL:-smollm2-135m} out=${OUTPUT:-output} kind=smollm2
  case "$model" in tiny|tiny-opt) kind=tiny ;; esac
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
  args+=(--config "${CONFIG:-training/configs/$kind-step$step.yaml}")
  case "$deploy" in
    single_gpu) exec "$PY" "$script" "${args[@]}" "$@" ;;
    single_node)
      local n=${NUM_GPUS:-$("$PY" -c 'import torch; print(torch.cuda.device_count() or 2)')}
      exec "$PY" -m deepspeed.launcher.runner --num_gpus "$n" "$script" "${args[@]}" "$@" ;;
    multi_node)
      local hf=${HOSTFILE:-/job/hostfile}
      [ -f "$hf" ] || { echo "multi_node needs a hostfile: $hf does not exist (set HOSTFILE)" >&2; return 2; }
      exec "$PY" -m deepspeed.launcher.runner --hostfile "$hf" "$script" "${args[@]}" "$@" ;;
  esac
}
