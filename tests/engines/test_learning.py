"""Learning tests: every stage-3 algorithm (and DPO) must raise a trivially learnable reward.

The rule: an answer scores 1.0 when its (single) token is blank, i.e. a whitespace or special
token, 0.0 otherwise (ReMax, whose baseline is the greedy answer, gets the opposite rule).
The seeded random ``tiny`` model puts about 15% of its first-token
probability on blank tokens at temperature 0.12 (its newline logit stands out), so the reward
starts low but is reachable by sampling. The test measures that probability exactly, with the
starting and the trained actor, instead of relying on a few noisy rollouts: below 0.2 before,
above a bound after N updates. A sign error in an advantage or a loss, a ratio taken against the
wrong log-probs, or an update that never reaches the weights fails these tests.
"""

from __future__ import annotations

import json

import pytest
from support.learning import TEMPERATURE, blank_probability

from training.step3_rlhf_finetuning.main import main as stage3
from training.utils.logging import read_metrics

RULES = "def blank(prompt, answer):\n    return 1.0 if answer.strip() == '' else 0.0\n" \
        "def nonblank(prompt, answer):\n    return 0.0 if answer.strip() == '' else 1.0\n"


@pytest.fixture()
def rules(tmp_path, monkeypatch):
    (tmp_path / "blankrules.py").write_text(RULES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "rule:blankrules:"


def _args(tmp_path, name, reward, *extra):
    return ["--actor_model_name_or_path", "tiny", "--reward", reward, "--output_dir", str(tmp_path / name),
            "--data_output_path", str(tmp_path / "cache"), "--bundled_size", "300", "--max_seq_len", "96",
            "--max_prompt_seq_len", "64", "--max_answer_seq_len", "1", "--temperature", str(TEMPERATURE),
            "--per_device_eval_batch_size", "8", "--max_eval_samples", "8", "--learning_rate", "1e-3",
            "--disable_tqdm", "--plots", "false", "--enable_tensorboard", "false", "--seed", "3", *extra]


COMMON = ["--learning_rate", "3e-4", "--ppo_epochs", "4", "--kl_coef", "0.0", "--max_steps", "8",
          "--per_device_training_batch_size", "8"]


@pytest.mark.slow
@pytest.mark.parametrize("name, algo, extra", [
    ("ppo", "ppo", ["--per_device_generation_batch_size", "16", "--critic_learning_rate", "3e-4"]),
    ("ppo-group", "ppo", ["--per_device_generation_batch_size", "4", "--num_samples_per_prompt", "4",
                          "--group_baseline", "--critic_learning_rate", "3e-4", "--max_steps", "12",
                          "--learning_rate", "2e-3"]),
    ("grpo", "grpo", ["--per_device_generation_batch_size", "4", "--num_samples_per_prompt", "4"]),
    ("rloo", "rloo", ["--per_device_generation_batch_size", "4", "--num_samples_per_prompt", "4"]),
    ("dr_grpo", "dr_grpo", ["--per_device_generation_batch_size", "4", "--num_samples_per_prompt", "4"]),
    ("reinforce_pp", "reinforce_pp", ["--per_device_generation_batch_size", "16"]),
    ("online_dpo", "online_dpo", ["--per_device_generation_batch_size", "8", "--num_samples_per_prompt", "2",
                                  "--beta", "0.5"]),
    ("gspo", "gspo", ["--per_device_generation_batch_size", "4", "--num_samples_per_prompt", "4",
                      "--loss_agg", "sequence"]),
    ("dapo", "dapo", ["--per_device_generation_batch_size", "4", "--num_samples_per_prompt", "4",
                      "--eps_clip_high", "0.28", "--dynamic_sampling_max_batches", "3"]),
    ("dual_clip", "grpo", ["--per_device_generation_batch_size", "4", "--num_samples_per_prompt", "4",
                           "--policy_loss", "dual_clip"]),
])
def test_rl_raises_a_learnable_reward(tmp_path, rules, name, algo, extra):
    """16 rollouts per update round, 8 rounds: the rewarded answer goes from ~15% to most of the mass."""
    stage3(_args(tmp_path, name, rules + "blank", "--algo", algo, *COMMON, *extra))
    out = tmp_path / name
    p1 = blank_probability(str(out / "actor"))
    train = [r["reward"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert p1 > 0.6, (p1, train)
    assert sum(train[-3:]) / 3 > sum(train[:3]) / 3, train
    if algo == "dapo":      # dynamic sampling: groups that all scored alike dropped, more prompts drawn to refill
        rows = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
        assert all(1 <= r["prompt_batches_drawn"] <= 3 for r in rows) and any(
            r["prompt_batches_drawn"] > 1 for r in rows
        )
        assert all(r["kept_answers"] >= 16 or r["prompt_batches_drawn"] == 3 for r in rows)


@pytest.mark.slow
def test_remax_raises_a_learnable_reward(tmp_path, rules):
    """ReMax's baseline is the greedy answer's reward. The tiny model's greedy answer is blank, so here
    the non-blank answers are rewarded (~85% of the mass at first): the greedy baseline scores 0, each
    rollout's advantage is its own reward (until the greedy answer itself turns non-blank), and the
    non-blank mass must grow to nearly all of it."""
    stage3(_args(tmp_path, "remax", rules + "nonblank", "--algo", "remax", *COMMON,
                 "--per_device_generation_batch_size", "8", "--num_samples_per_prompt", "2"))
    train = read_metrics(tmp_path / "remax" / "metrics.jsonl")
    assert [r["greedy_baseline"] for r in train if r["split"] == "train"][0] == 0.0   # greedy starts blank
    nonblank = 1.0 - blank_probability(str(tmp_path / "remax" / "actor"))
    assert nonblank > 0.97, nonblank                   # from 1 - p0 < 0.95 (test_starting_point...)


@pytest.mark.slow
@pytest.mark.parametrize("loss, flags", [
    ("sigmoid", ["--beta", "0.1"]),
    ("kto", ["--beta", "0.1"]),
    ("simpo", ["--beta", "2.0", "--simpo_gamma", "0.5"]),
    ("orpo", ["--beta", "1.0"]),      # lambda 1: the odds-ratio term weighs in
])
def test_preference_losses_raise_the_chosen_over_rejected_margin(tmp_path, loss, flags):
    """A preference a tiny model can learn (answer "yes" over "no"), 10 updates of each offline loss:
    the implicit-reward margin on held-out prompts must rise by 0.2 and rank the chosen answer first on
    nearly all of them. With a reference model (DPO, KTO) the margin starts at exactly 0 (policy =
    reference); SimPO and ORPO start from the model's own preference."""
    from training.step2_reward_model_finetuning.dpo_main import main as dpo
    from training.utils.data.bundled import train_eval

    data = tmp_path / "yesno.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["prompt"], "chosen": "yes", "rejected": "no"}) + "\n"
                            for r in train_eval(300, 0)[0][:200]))
    out = tmp_path / "dpo"
    final = dpo(["--model_name_or_path", "tiny", "--output_dir", str(out), "--data_output_path",
                 str(tmp_path / "cache"), "--data_path", str(data), "--data_split", "0,1,0", "--eval_fraction", "0.1",
                 "--max_seq_len", "96", "--max_prompt_seq_len", "64", "--per_device_train_batch_size", "8",
                 "--per_device_eval_batch_size", "16", "--learning_rate", "1e-3", "--max_steps", "10",
                 "--eval_interval", "0", "--disable_tqdm", "--plots", "false", "--dpo_loss", loss,
                 "--enable_tensorboard", "false", "--seed", "3", *flags])
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "eval"]
    if loss in ("sigmoid", "kto"):
        assert evals[0]["step"] == 0 and evals[0]["reward_margin"] == 0.0   # the policy starts as the reference
    assert final["reward_margin"] - evals[0]["reward_margin"] > 0.2, (evals[0], final)
    assert final["reward_acc"] > 0.9, final                                  # 20 held-out prompts


@pytest.mark.slow
@pytest.mark.parametrize("keep_dropout, exact", [(False, True), (True, False)])
def test_first_ppo_step_is_on_policy_without_actor_dropout(tmp_path, keep_dropout, exact):
    """OPT trains with dropout 0.1; old log-probs are taken in eval mode. Stage 3 turns the actor's
    dropout off by default, so the first update on fresh experience has a ratio of exactly 1."""
    stage3(_args(tmp_path, "opt", "checker", "--actor_model_name_or_path", "tiny-opt", "--dropout", "0.1",
                 "--disable_actor_dropout", str(not keep_dropout), "--max_answer_seq_len", "4",
                 "--per_device_generation_batch_size", "4", "--per_device_training_batch_size", "4",
                 "--critic_learning_rate", "1e-3", "--max_steps", "1"))
    train = [r for r in read_metrics(tmp_path / "opt" / "metrics.jsonl") if r["split"] == "train"]
    assert (train[0]["approx_kl"] == 0.0 and train[0]["clip_frac"] == 0.0) == exact, train[0]
