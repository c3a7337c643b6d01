"""scripts/bench/learning.py: figures per seed, mean / min / max, and one real run on tiny; the work
scripts/bench/vs_trl.py hands to this project's stages."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("learning_bench", ROOT / "scripts" / "bench" / "learning.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gains_and_summary_over_seeds():
    b = _bench()
    assert {"main", "grpo", "rloo", "reinforce_pp", "online_dpo", "dpo", "rloo-rm"} <= set(b.CONFIGS)
    g = lambda over, gain, lo, hi: {"over": over, "gain": gain, "lo": lo, "hi": hi, "n": 4,
                                    "per_task": {"math": {"gain": gain, "lo": lo, "hi": hi, "n": 4}}}
    r1 = {"pass_rate": {"base": 0.0, "sft": 0.25, "ppo": 0.5}, "pass_rate_ci": {"ppo": [0.1, 0.9]},
          "gain": {"sft": g("base", 0.25, 0.0, 0.5), "ppo": g("sft", 0.25, -0.25, 0.75)},
          "reward_trend": {"rising": True}, "models": {"sft": "x"}}
    r2 = {"pass_rate": {"base": 0.0, "sft": 0.5, "ppo": 0.5}, "gain": {"ppo": g("sft", 0.0, -0.5, 0.5)},
          "reward_trend": {"rising": False}}
    r3 = {"pass_rate": {"base": 0.0, "sft": 0.5, "ppo": 0.75}, "gain": {"ppo": g("sft", 0.125, 0.0, 0.25)},
          "reward_trend": {"rising": True}}
    f1, f2, f3 = b.figures(r1, 10.0), b.figures(r2, 30.0), b.figures(r3, 20.0)
    assert (f1["gain.ppo"], f1["gain_lo.ppo"], f1["gain_hi.ppo"], f1["task_gain.ppo.math"]) == (0.25, -0.25, 0.75, 0.25)
    assert "gain.base" not in f1 and "gain.ppo.per_task.math.gain" not in f1 and "models.sft" not in f1
    assert f1["reward_trend.rising"] == 1.0 and f2["gain.ppo"] == 0.0
    s = b.summarise({1: f1, 2: f2, 3: f3})
    # mean 0.125, sd 0.125 over 3 seeds: t(0.975, 2) = 4.303, half-width 4.303 * 0.125 / sqrt(3) = 0.31054
    assert s["gain.ppo"]["mean"] == 0.125 and (s["gain.ppo"]["min"], s["gain.ppo"]["max"], s["gain.ppo"]["n"]) == (
        0.0,
        0.25,
        3,
    )
    assert s["gain.ppo"]["lo"] == pytest.approx(0.125 - 0.310539, abs=1e-5)
    assert s["gain.ppo"]["hi"] == pytest.approx(0.125 + 0.310539, abs=1e-5)
    assert s["reward_trend.rising"]["mean"] == pytest.approx(2 / 3) and s["seconds.process"]["max"] == 30.0
    md = b.markdown("main", s, {1: f1, 2: f2, 3: f3}, "python scripts/bench/learning.py", 576, "test")
    assert "3 seeds (1, 2, 3), 576 test prompts" in md
    assert (
        "| ppo | +25.0 (-25.0 .. +75.0) | +0.0 (-50.0 .. +50.0) | +12.5 (+0.0 .. +25.0) "
        "| +12.5 | +0.0 | -18.6 .. +43.6 |"
        in md
    )
    assert "| gain.ppo | 0.125 | 0.000 | 0.250 | -0.186 .. 0.436 |" in md


@pytest.mark.slow
def test_one_seed_on_tiny_writes_json_and_markdown(tmp_path):
    result = _bench().main(["--config", "grpo", "--actor-model", "tiny", "--seeds", "5", "--out", str(tmp_path),
                            "--", "--eval-prompts", "4"])
    report = json.loads((tmp_path / "seed5" / "report.json").read_text())
    saved = json.loads((tmp_path / "learning.json").read_text())
    assert saved["seeds"] == [5] and saved["held_out_prompts"] == 4 == report["held_out_prompts"]
    assert saved["summary"]["pass_rate.grpo"]["mean"] == report["pass_rate"]["grpo"]
    assert saved["summary"]["gain.grpo"]["min"] == pytest.approx(
        report["pass_rate"]["grpo"] - report["pass_rate"]["sft"]
    )
    assert saved["eval_set"] == "test" and report["eval_set"] == "test"
    assert "| pass_rate.grpo |" in (tmp_path / "learning.md").read_text() and result["config"] == "grpo"


def test_vs_trl_work_definition_reaches_the_stages():
    """The flags scripts/bench/vs_trl.py gives this project's stages parse, and set the work the
    TRL side mirrors (one typo would silently benchmark something else)."""
    from training.utils.arguments import parse_config

    spec = importlib.util.spec_from_file_location("vs_trl", ROOT / "scripts" / "bench" / "vs_trl.py")
    b = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(b)
    a, rest = b.parse([])
    assert rest == [] and a.runs == 3 and a.work == ["sft", "rm", "dpo", "grpo", "rloo"]

    def stage(work, args=a):
        cmd = b.ours(work, args, "tiny", Path("/tmp/x"))
        assert cmd[2:4] == ["--ours-side", work] and cmd[6] == "--" and cmd[7].endswith(b.SCRIPTS[work])
        return parse_config(cmd[8:], stage=b.STAGE[work])

    g = stage("grpo")
    assert (
        g.optim.max_steps,
        g.rl.rollout.per_device_generation_batch_size,
        g.rl.rollout.num_samples_per_prompt,
        g.rl.loss.per_device_training_batch_size,
        g.rl.loss.ppo_epochs,
        g.data.max_answer_seq_len,
    ) == (8, 4, 4, 16, 1, 48)
    assert (g.rl.kl.kl_coef, g.rl.rollout.dynamic_filtering, g.rewards.missing_eos_penalty, g.log.final_eval) == (
        0.0,
        False,
        0.0,
        False,
    )
    assert (g.lora.lora_dim, g.lora.lora_alpha, g.lora.lora_learning_rate, g.rl.rollout.top_k) == (16, 32, 2e-4, 0)
    assert (g.rl.curriculum.prompt_curriculum, g.rl.algo, g.rl.loss.std_normalize, g.ds.no_fused_kernels) == (
        False,
        "grpo",
        True,
        False,
    )
    r = stage("rloo")
    assert (r.rl.algo, r.rl.loss.loss_agg, r.rl.curriculum.prompt_curriculum, r.optim.max_steps) == (
        "rloo",
        "token",
        False,
        8,
    )
    d = stage("dpo")
    assert (d.optim.max_steps, d.optim.per_device_train_batch_size, d.dpo.beta, d.optim.num_warmup_steps) == (
        16,
        8,
        0.1,
        5,
    )
    assert (d.optim.learning_rate, d.log.eval_interval, d.log.final_eval, d.model.share_prompt_forward) == (
        5e-6,
        0,
        False,
        True,
    )
    s = stage("sft")
    assert (
        s.optim.max_steps,
        s.optim.per_device_train_batch_size,
        s.optim.learning_rate,
        s.model.gradient_checkpointing,
    ) == (16, 8, 5e-5, False)
    m = stage("rm")
    assert (
        m.optim.max_steps,
        m.optim.per_device_train_batch_size,
        m.rm.pairs_from_policy,
        m.rm.on_policy_eval_prompts,
    ) == (16, 8, False, 0)
    plain, _ = b.parse(["--optim", "plain", "--ours-flags", "--share_prompt_forward", "false"])
    off = stage("dpo", plain)
    assert off.model.share_prompt_forward is False and off.ds.no_fused_kernels is True
    assert b.samples("grpo", a) == 8 * 4 * 4 and b.samples("rm", a) == 16 * 8
    # time to quality: GRPO made longer; PPO is the main job's stage 3 as its preset has it
    assert a.quality == ["ppo", "grpo-preset"] and a.quality_seeds == 3
    import vs_trl_quality as vq  # on the path vs_trl.py set

    q = vq.quality_args(b, a, "grpo-preset", 1235, "tiny")          # the GRPO preset's own sizes
    assert (q.iterations, q.prompts, q.answers, q.curve_every, a.iterations) == (16, 8, 4, 4, 8)
    g = stage("grpo-preset", q)
    assert (g.optim.max_steps, g.optim.seed, g.rl.loss.ppo_epochs, g.rl.loss.per_device_training_batch_size) == (
        16,
        1235,
        2,
        8,
    )
    assert (g.rl.rollout.dynamic_filtering, g.rl.curriculum.prompt_curriculum, g.rewards.missing_eos_penalty) == (
        True,
        True,
        0.5,
    )
    a.rm = "tiny"
    q = vq.quality_args(b, a, "ppo", 1236, "tiny")
    assert (q.iterations, q.prompts, q.answers, q.max_new_tokens, q.curve_every) == (8, 8, 4, 48, 2)
    p = stage("ppo", q)
    assert (
        p.rl.algo,
        p.rl.kl.kl_coef,
        p.rl.curriculum.prompt_curriculum,
        p.optim.seed,
        p.rl.critic.critic_learning_rate,
    ) == ("ppo", 0.05, True, 1236, 2e-5)
    assert p.rewards.reward_model_name_or_path == "tiny" and p.rewards.missing_eos_penalty == 1.0
    # the rows each side trained on are compared, and a difference stops the run
    run = {"ours": {"rows": ["a", "b", "c"]}, "trl": {"rows": ["a", "b", "c", "d"]}}
    b.same_rows("sft", run, 3)
    assert run["rows_checked"] == 3
    with pytest.raises(SystemExit, match="first difference at row 1"):
        b.same_rows("sft", {"ours": {"rows": ["a", "x", "c"]}, "trl": {"rows": ["a", "b", "c"]}}, 3)
    with pytest.raises(SystemExit, match="this project 2, TRL 3 of 3"):
        b.same_rows("sft", {"ours": {"rows": ["a", "b"]}, "trl": {"rows": ["a", "b", "c"]}}, 3)
    assert b.fingerprint("dpo", {"chosen_ids": [1, 2], "rejected_ids": [1, 3]}) != b.fingerprint(
        "dpo", {"chosen_ids": [1, 3], "rejected_ids": [1, 2]})
    # TRL's DPO rows hold the prompt apart: the same pair gets the same fingerprint, another prompt another
    ours_row = {"chosen_ids": [7, 8, 1, 2], "rejected_ids": [7, 8, 1, 3], "prompt_len": 2}
    assert b.fingerprint("dpo", ours_row) == b.fingerprint("dpo", {"prompt_ids": [7, 8], "chosen_ids": [1, 2],
                                                                   "rejected_ids": [1, 3]})
    assert b.fingerprint("dpo", ours_row) != b.fingerprint("dpo", {"prompt_ids": [7, 9], "chosen_ids": [1, 2],
                                                                   "rejected_ids": [1, 3]})
