"""DeepSpeed-Chat's command lines: every flag of its step 1-3 parsers is accepted with its meaning, and
its training scripts run unchanged from the stage directories (models and data paths substituted)."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


SCRIPTS = {
    # step1_supervised_finetuning/training_scripts/single_node/run_1.3b.sh
    1: ("step1_supervised_finetuning", """--data_path {data} --data_split 2,4,4 --model_name_or_path tiny
        --per_device_train_batch_size 8 --per_device_eval_batch_size 8 --max_seq_len 512 --learning_rate 9.65e-6
        --weight_decay 0. --num_train_epochs 16 --gradient_accumulation_steps 1 --lr_scheduler_type cosine
        --num_warmup_steps 0 --seed 1234 --zero_stage 2 --deepspeed --enable_tensorboard --tensorboard_path {out}
        --output_dir {out}"""),
    # step2_reward_model_finetuning/training_scripts/llama2/run_llama2_7b.sh
    2: ("step2_reward_model_finetuning", """--data_path {data} --data_split 2,4,4 --model_name_or_path tiny
        --per_device_train_batch_size 8 --per_device_eval_batch_size 8 --max_seq_len 512 --learning_rate 9.65e-6
        --weight_decay 0.1 --num_padding_at_beginning 0 --num_train_epochs 1 --gradient_accumulation_steps 1
        --lr_scheduler_type cosine --num_warmup_steps 0 --seed 1234 --gradient_checkpointing --zero_stage 3
        --deepspeed --offload --output_dir {out}"""),
    # step3_rlhf_finetuning/training_scripts/llama2/run_llama2_7b_lora.sh
    3: ("step3_rlhf_finetuning", """--data_path {data} --data_split 2,4,4 --actor_model_name_or_path {actor}
        --critic_model_name_or_path {critic} --num_padding_at_beginning 1 --per_device_generation_batch_size 1
        --per_device_training_batch_size 1 --generation_batch_numbers 1 --ppo_epochs 1 --max_answer_seq_len 256
        --max_prompt_seq_len 256 --actor_learning_rate 9.65e-6 --critic_learning_rate 5e-6 --actor_weight_decay 0.1
        --critic_weight_decay 0.1 --num_train_epochs 1 --lr_scheduler_type cosine --gradient_accumulation_steps 1
        --actor_gradient_checkpointing --critic_gradient_checkpointing --offload_reference_model
        --disable_actor_dropout --num_warmup_steps 100 --deepspeed --seed 1234 --actor_zero_stage 3
        --critic_zero_stage 3 --enable_hybrid_engine --actor_lora_dim 64 --critic_lora_dim 64
        --critic_lora_module_name "layers." --actor_lora_module_name "layers." --output_dir {out}"""),
}


@pytest.mark.slow
def test_dschat_scripts_run_unchanged_from_the_stage_directories(tmp_path):
    data = tmp_path / "pairs.jsonl"
    with data.open("w") as f:
        for i in range(10):     # split 2,4,4: 2 SFT rows, 4 pairs, 4 RL prompts (4 iterations of stage 3)
            f.write(json.dumps({"prompt": f"\n\nHuman: What is {i} plus {i + 3}?\n\nAssistant:",
                                "chosen": f" {2 * i + 3}.", "rejected": f" {2 * i + 4}."}) + "\n")
    out = {s: tmp_path / f"out{s}" for s in SCRIPTS}
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    for step, (folder, flags) in SCRIPTS.items():
        argv = shlex.split(flags.format(data=data, out=out[step], actor=out[1], critic=out[2]))
        argv += ["--data_output_path", str(tmp_path / "cache")]       # DeepSpeed-Chat's /tmp default, kept per test
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--master_port", str(29700 + step), "main.py", *argv]
        r = subprocess.run(cmd, cwd=ROOT / "training" / folder, capture_output=True, text=True, env=env)
        text = r.stdout + r.stderr
        assert r.returncode == 0, text[-4000:]
        assert text.count("DeepSpeed-Chat flag --deepspeed has no effect here") == 1
        saved = json.loads((out[step] / "training_config.json").read_text())
        if step == 1:
            assert saved["optim"]["num_train_epochs"] == 16 and saved["ds"]["zero_stage"] == 2
            assert saved["log"]["tensorboard_path"] == str(out[1]) and list(out[1].glob("events.out.tfevents*"))
        if step == 2:
            assert text.count("--num_padding_at_beginning 0 has no effect here") == 1
            assert (saved["ds"]["zero_stage"], saved["ds"]["offload"], saved["optim"]["weight_decay"]) == (3, True, 0.1)
            assert saved["model"]["gradient_checkpointing"] is True
        if step == 3:
            assert text.count("--enable_hybrid_engine has no effect here") == 1
            critic = saved["rl"]["critic"]
            assert (critic["critic_zero_stage"], critic["critic_lora_dim"], critic["critic_weight_decay"]) == (
                3,
                64,
                0.1,
            )
            assert (saved["lora"]["lora_dim"], saved["lora"]["lora_module_name"]) == (64, "layers.")
            # DeepSpeed-Chat's critic path is the reward model too
            assert saved["rewards"]["reward_model_name_or_path"] == str(out[2])
            assert (out[3] / "actor" / "config.json").is_file() and (out[3] / "critic" / "config.json").is_file()
