"""Critic-free RL (GRPO, RLOO, ReMax) and reward sources."""

import json
import re

import pytest
import torch

from training.step3_rlhf_finetuning.main import main as stage3
from training.utils.config import ConfigError
from training.utils.logging import read_metrics


def _args(tmp_path, name, *extra):
    return ["--actor_model_name_or_path", "tiny", "--output_dir", str(tmp_path / name),
            "--data_output_path", str(tmp_path / "cache"), "--bundled_size", "300", "--max_seq_len", "96",
            "--max_prompt_seq_len", "64", "--max_answer_seq_len", "8", "--per_device_generation_batch_size", "2",
            "--per_device_training_batch_size", "4", "--per_device_eval_batch_size", "4", "--max_steps", "2",
            "--learning_rate", "1e-3", "--max_eval_samples", "4", "--disable_tqdm", "--plots", "false",
            "--seed", "3", *extra]


def _weights(d):
    from safetensors.torch import load_file

    return load_file(str(d / "actor" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("algo, extra", [
    ("dr_grpo", ["--eps_clip_high", "0.28"]),
    ("rloo", ["--kl_in_reward", "--loss_agg", "sequence"]),
    ("remax", ["--num_samples_per_prompt", "1", "--kl_coef", "0"]),
])
def test_critic_free_algorithms_train_on_a_rule_reward(tmp_path, monkeypatch, algo, extra):
    (tmp_path / "lenrule.py").write_text("def chars(prompt, answer):\n    return len(answer) / 10.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    n = [] if "--num_samples_per_prompt" in extra else ["--num_samples_per_prompt", "4"]
    stage3(_args(tmp_path, algo, "--algo", algo, "--reward", "lenrule:chars", *n, *extra))
    out = tmp_path / algo
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert len(train) == 2 and all(r["skipped_updates"] == 0 for r in train)
    if algo == "remax":      # kl_coef 0: no reference model loaded, so no KL figure (not a made-up 0)
        assert "kl" not in train[0] and "kl" not in train[1]
    else:
        assert train[0]["kl"] == pytest.approx(0.0, abs=1e-5)      # the actor starts as the reference
    assert {"pg_loss", "entropy", "reward", "kept_answers", "advantage_abs"} <= set(train[0])
    assert ("kl_loss" in train[0]) == (algo == "dr_grpo")
    assert ("greedy_baseline" in train[0]) == (algo == "remax")
    assert not (out / "critic").exists()
    from training.utils.model import load_causal_lm, load_tokenizer

    base = load_causal_lm("tiny", load_tokenizer("tiny"), seed=3).state_dict()
    trained = _weights(out)
    assert any(not torch.equal(trained[k], base[k]) for k in trained if k in base)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["loss", "reward"])
def test_adaptive_kl_steers_the_coefficient_of_critic_free_algorithms(tmp_path, monkeypatch, where):
    """Ziegler's controller on GRPO's k3 loss term and on RLOO's KL in the reward: each iteration's
    coefficient follows from the previous one and its measured KL (8 answers per iteration)."""
    (tmp_path / "lenrule.py").write_text("def chars(prompt, answer):\n    return len(answer) / 10.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    algo = ["--algo", "grpo"] if where == "loss" else ["--algo", "rloo", "--kl_in_reward"]
    stage3(_args(tmp_path, where, *algo, "--reward", "lenrule:chars", "--num_samples_per_prompt", "4",
                 "--adaptive_kl", "--kl_coef", "0.05", "--kl_target", "0.002", "--kl_horizon", "16",
                 "--max_steps", "4"))
    train = [r for r in read_metrics(tmp_path / where / "metrics.jsonl") if r["split"] == "train"]
    assert len(train) == 4 and train[0]["kl_coef"] == pytest.approx(0.05)
    assert ("kl_loss" in train[0]) == (where == "loss")
    for a, b in zip(train, train[1:]):
        err = max(-0.2, min(0.2, a["kl"] / 0.002 - 1.0))
        assert b["kl_coef"] == pytest.approx(a["kl_coef"] * (1 + err * 8 / 16), rel=1e-6)
    assert train[0]["kl"] == pytest.approx(0.0, abs=1e-6) and train[1]["kl_coef"] == pytest.approx(0.05 * 0.9)
    assert any(r["kl"] > 0.0024 for r in train[1:3])        # the policy moved: the coefficient rose again
    assert train[-1]["kl_coef"] != pytest.approx(0.05 * 0.9 ** 3)


@pytest.mark.slow
def test_dynamic_filtering_skips_groups_without_signal(tmp_path):
    # a random tiny model fails every checker prompt: every group scores 0 -> all filtered, no update
    stage3(_args(tmp_path, "f", "--algo", "grpo", "--reward", "checker", "--num_samples_per_prompt", "3",
                 "--dynamic_filtering"))
    train = [r for r in read_metrics(tmp_path / "f" / "metrics.jsonl") if r["split"] == "train"]
    assert [r["skipped_updates"] for r in train] == [1.0, 1.0]
    assert all(r["uniform_groups"] == 2 and r["kept_answers"] == 0 for r in train)
    from training.utils.model import load_causal_lm, load_tokenizer

    base = load_causal_lm("tiny", load_tokenizer("tiny"), seed=3).state_dict()
    trained = _weights(tmp_path / "f")
    assert all(torch.equal(trained[k], base[k]) for k in trained if k in base)


@pytest.mark.slow
def test_group_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="num_samples_per_prompt >= 2"):
        stage3(_args(tmp_path, "e", "--algo", "grpo", "--reward", "checker"))
    with pytest.raises(ConfigError, match="2 reward_weights for 1 reward sources"):
        stage3(_args(tmp_path, "e", "--reward", "checker", "--reward_weights", "1", "2"))


@pytest.mark.slow
def test_rl_on_a_gsm8k_shaped_prompt_set_with_the_shipped_math_reward(tmp_path):
    """A prompt + reference-answer JSONL (no chosen) through train.py's GRPO, straight from the model
    (--sft-model), rewarded and evaluated by the shipped math rule: the report holds its own pass-rate."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    with (tmp_path / "gsm.jsonl").open("w") as f:
        for i in range(60):
            a, b = i % 7 + 1, i % 5 + 2
            f.write(json.dumps({"prompt": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
                                "answer": f"{a} + {b} = {a + b}\n#### {a + b}", "source": "synthetic"}) + "\n")
    r = subprocess.run(
        [
            sys.executable,
            str(root / "train.py"),
            "--algo",
            "grpo",
            "--actor-model",
            "tiny",
            "--sft-model",
            "tiny",
            "--data_path",
            "gsm.jsonl",
            "--reward",
            "rule:training.rewards:math_answer",
            "--output-dir",
            "out",
            "--data_output_path",
            str(tmp_path / "cache"),
            "--max_steps",
            "2",
            "--eval_fraction",
            "0.2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["evaluation"] == "stage 3's own metric on the evaluation prompts of gsm.jsonl"
    summary = json.loads((tmp_path / "out" / "step3-models" / "tiny-grpo" / "summary.json").read_text())
    assert (
        set(report["pass_rate"]) == {"sft", "grpo"}
        and report["held_out_prompts"] == summary["data"]["eval"]["kept"] >= 4
    )
    assert report["pass_rate"]["grpo"] == summary["final_eval"]["pass_rate"]
    assert all(0.0 <= v <= 1.0 for v in report["pass_rate"].values()) and set(report["eval_reward"]) == {"sft", "grpo"}
    rows = [json.loads(ln) for ln in (tmp_path / "out" / "step3-models" / "tiny-grpo" / "metrics.jsonl").open()]
    evals = [e for e in rows if e["split"] == "eval"]
    assert [e["step"] for e in evals] == [0, 2] and all("eval_reward" in e and "pass_rate" in e for e in evals)
    assert "evaluation: pass-rate = share of greedy answers that rule:training.rewards:math_answer scores >= 1" \
        in r.stdout
    assert "1 stage" not in r.stdout and "=== stage 1" not in r.stdout        # --sft-model: no SFT stage
    samples = [json.loads(ln) for ln in (tmp_path / "out" / "step3-models" / "tiny-grpo" / "samples.jsonl").open()]
    assert [x["step"] for x in samples] == [1, 2]             # one sampled rollout per iteration, with its row
    for x in samples:      # the sampled prompt's own reference answer travelled with it
        a, b = [int(n) for n in re.findall(r"has (\d+) apples and buys (\d+) more", x["prompt"])[0]]
        assert x["columns"] == {"answer": f"{a} + {b} = {a + b}\n#### {a + b}", "source": "synthetic"}
        assert x["reward"] in (0.0, 1.0)
