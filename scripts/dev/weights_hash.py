"""sha256 of the weights every stage trains on the ``tiny`` model, one line per configuration.

    python scripts/dev/weights_hash.py [--out hashes.json] [--only NAME ...]

A refactor that must not change results runs this before and after and compares the two files
(``--compare before.json after.json``): every stage (SFT, SFT + LoRA, reward model, DPO) and every
stage-3 algorithm, with the options that take other code paths, in this process on one CPU rank.
The runs share one process, and a run's weights can depend on the ones before it (each reseeds, but
not every library state is reset): compare lists made the same way (the whole list, or the same
``--only``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

COMMON = ["--data_output_path", "{tmp}/cache", "--bundled_size", "300", "--max_seq_len", "96",
          "--max_prompt_seq_len", "64", "--per_device_eval_batch_size", "4", "--learning_rate", "1e-3",
          "--max_eval_samples", "4", "--disable_tqdm", "--plots", "false"]
STAGE1 = ["--model_name_or_path", "tiny", "--per_device_train_batch_size", "4", "--max_steps", "3", "--seed", "11"]
STAGE3 = ["--actor_model_name_or_path", "tiny", "--reward_model_name_or_path", "{tmp}/rm",
          "--max_answer_seq_len", "8", "--per_device_generation_batch_size", "4",
          "--per_device_training_batch_size", "2", "--max_steps", "3", "--critic_learning_rate", "1e-3", "--seed", "3"]
RULE = ["--reward", "hashrule:chars"]
GROUP = ["--num_samples_per_prompt", "4"]

RUNS = {
    "sft": ("sft", STAGE1),
    "sft_lora": ("sft", STAGE1 + ["--lora_dim", "8", "--only_optimize_lora"]),
    "sft_accumulate_eval_save": ("sft", STAGE1 + ["--gradient_accumulation_steps", "2", "--eval_interval", "1",
                                                  "--save_interval", "2"]),
    "rm": ("rm", STAGE1 + ["--samples_per_prompt", "2"]),
    "rm_policy_pairs": ("rm", STAGE1 + ["--pairs_from_policy", "--labeller", "checker", "--label_budget", "16",
                                        "--policy_max_new_tokens", "3", "--pointwise_weight", "0.5"]),
    "dpo": ("dpo", STAGE1 + ["--beta", "0.5"]),
    "ppo": ("rl", STAGE3),
    "ppo_all": ("rl", STAGE3 + ["--group_baseline", "--normalize_reward", "--unsup_coef", "0.5", "--enable_ema",
                                "--adaptive_kl", "--ppo_epochs", "2", "--critic_warmup_steps", "1"] + GROUP),
    "grpo": ("rl", STAGE3 + ["--algo", "grpo"] + RULE + GROUP),
    "grpo_nokl": ("rl", STAGE3 + ["--algo", "grpo", "--kl_coef", "0"] + RULE + GROUP),
    "rloo_kl_in_reward": ("rl", STAGE3 + ["--algo", "rloo", "--kl_in_reward"] + RULE + GROUP),
    "remax": ("rl", STAGE3 + ["--algo", "remax"] + RULE),
    "dr_grpo_filter": ("rl", STAGE3 + ["--algo", "dr_grpo", "--dynamic_filtering"] + RULE + GROUP),
    "reinforce_pp": ("rl", STAGE3 + ["--algo", "reinforce_pp"] + RULE),
    "online_dpo": ("rl", STAGE3 + ["--algo", "online_dpo", "--num_samples_per_prompt", "2"] + RULE),
    "gspo": ("rl", STAGE3 + ["--algo", "gspo"] + RULE + GROUP),
    "dapo": ("rl", STAGE3 + ["--algo", "dapo", "--overlong_buffer_len", "4"] + RULE + GROUP),
    "grpo_dual_clip": ("rl", STAGE3 + ["--algo", "grpo", "--policy_loss", "dual_clip", "--dual_clip_c", "1.05"]
                       + RULE + GROUP),
    "ppo_refresh": ("rl", STAGE3 + ["--reward_refresh_interval", "1", "--reward_refresh_labels", "8",
                                    "--reward_refresh_steps", "2", "--reward_refresh_batch", "2"] + GROUP),
    "ppo_curriculum_lora": ("rl", STAGE3 + ["--prompt_curriculum", "--balance_key", "task", "--group_baseline",
                                            "--lora_dim", "8", "--only_optimize_lora", "--eval_interval", "2",
                                            "--save_interval", "2"] + GROUP),
}


def digest(model_dir: Path) -> str:
    from safetensors.torch import load_file

    w = load_file(str(model_dir / "model.safetensors"))
    return hashlib.sha256(b"".join(k.encode() + w[k].numpy().tobytes() for k in sorted(w))).hexdigest()[:16]


def run(name: str, tmp: Path) -> str:
    from training.step1_supervised_finetuning.main import main as sft
    from training.step2_reward_model_finetuning.dpo_main import main as dpo
    from training.step2_reward_model_finetuning.main import main as rm
    from training.step3_rlhf_finetuning.main import main as rl

    stage, flags = RUNS[name]
    out = tmp / name
    argv = [a.format(tmp=tmp) for a in COMMON + flags] + ["--output_dir", str(out)]
    {"sft": sft, "rm": rm, "dpo": dpo, "rl": rl}[stage](argv)
    return digest(out / "actor" if stage == "rl" else out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="")
    ap.add_argument("--only", nargs="*", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    a = ap.parse_args()
    if a.compare:
        before, after = (json.loads(Path(p).read_text()) for p in a.compare)
        diff = [k for k in before if before[k] != after.get(k)]
        for k in before:
            print(f"{k:20s} {before[k]} {after.get(k, '-')} {'DIFFERENT' if k in diff else 'same'}")
        sys.exit(1 if diff else 0)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "hashrule.py").write_text("def chars(prompt, answer):\n    return len(answer) / 10.0\n")
        sys.path.insert(0, str(tmp))
        from training.utils.model import load_reward_model, load_tokenizer, save_hf

        tok = load_tokenizer("tiny")
        save_hf(load_reward_model("tiny", tok, seed=2), tok, tmp / "rm")
        hashes = {}
        for name in a.only:
            hashes[name] = run(name, tmp)
            print(f"{name:20s} {hashes[name]}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(hashes, indent=1) + "\n")


if __name__ == "__main__":
    main()
