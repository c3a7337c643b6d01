"""scripts/bench/learning.py: figures per seed, mean / min / max, and one real run on tiny; the work
scripts/bench/vs_trl.py hands to this project's stages."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("learning_bench", ROOT / "scripts" / "bench" / "learning.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gains_and_summary_over_seeds():
    b = _bench()
    assert {"main", "grpo", "rloo", "reinforce_pp", "online_dpo", "dpo", "rloo-rm"} <= set(b.CONFIGS)
    r1 = {"pass_rate": {"base": 0.0, "sft": 0.25, "ppo": 0.5}, "fresh_pass_rate": {"sft": 0.5, "ppo": 0.25},
          "reward_trend": {"rising": True}, "models": {"sft": "x"}}
    r2 = {"pass_rate": {"base": 0.0, "sft": 0.5, "ppo": 0.5}, "fresh_pass_rate": {"sft": 0.5, "ppo": 0.75},
          "reward_trend": {"rising": False}}
    f1, f2 = b.figures(r1, 10.0), b.figures(r2, 30.0)
    assert f1["gain.ppo"] == 0.25 and f2["gain.ppo"] == 0.0 and f1["fresh_gain.ppo"] == -0.25
    assert "gain.base" not in f1 and "models.sft" not in f1 and f1["reward_trend.rising"] == 1.0
    s = b.summarise({1: f1, 2: f2})
    assert s["gain.ppo"] == {"mean": 0.125, "min": 0.0, "max": 0.25, "n": 2}
    assert s["fresh_gain.ppo"] == {"mean": 0.0, "min": -0.25, "max": 0.25, "n": 2}
    assert s["reward_trend.rising"]["mean"] == 0.5 and s["seconds.process"]["max"] == 30.0
    md = b.markdown("main", s, [1, 2], "python scripts/bench/learning.py", 96)
    assert "| gain.ppo | 0.125 | 0.000 | 0.250 |" in md and "2 seeds (1, 2), 96 held-out prompts" in md


@pytest.mark.slow
def test_one_seed_on_tiny_writes_json_and_markdown(tmp_path):
    result = _bench().main(["--config", "grpo", "--actor-model", "tiny", "--seeds", "5", "--out", str(tmp_path),
                            "--", "--eval-prompts", "4"])
    report = json.loads((tmp_path / "seed5" / "report.json").read_text())
    saved = json.loads((tmp_path / "learning.json").read_text())
    assert saved["seeds"] == [5] and saved["held_out_prompts"] == 4 == report["held_out_prompts"]
    assert saved["summary"]["pass_rate.grpo"]["mean"] == report["pass_rate"]["grpo"]
    assert saved["summary"]["gain.grpo"]["min"] == report["pass_rate"]["grpo"] - report["pass_rate"]["sft"]
    assert "| pass_rate.grpo |" in (tmp_path / "learning.md").read_text() and result["config"] == "grpo"


def test_vs_trl_work_definition_reaches_the_stages():
    """The flags scripts/bench/vs_trl.py gives this project's stages parse, and set the work the
    TRL side mirrors (one typo would silently benchmark something else)."""
    from training.utils.arguments import parse_config

    spec = importlib.util.spec_from_file_location("vs_trl", ROOT / "scripts" / "bench" / "vs_trl.py")
    b = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(b)
    a = b.parse([])
    g = parse_config(b.ours("grpo", a, "tiny", Path("/tmp/x"))[2:], stage="rl")
    assert (g.optim.max_steps, g.rl.rollout.per_device_generation_batch_size, g.rl.rollout.num_samples_per_prompt,
            g.rl.loss.per_device_training_batch_size, g.rl.loss.ppo_epochs, g.data.max_answer_seq_len) == (16, 4, 4, 16, 1, 48)
    assert (g.rl.kl.kl_coef, g.rl.rollout.dynamic_filtering, g.rewards.missing_eos_penalty, g.log.final_eval) == (0.0, False, 0.0, False)
    assert (g.lora.lora_dim, g.lora.lora_alpha, g.lora.lora_learning_rate, g.rl.rollout.top_k) == (16, 32, 2e-4, 0)
    d = parse_config(b.ours("dpo", a, "tiny", Path("/tmp/x"))[2:], stage="dpo")
    assert (d.optim.max_steps, d.optim.per_device_train_batch_size, d.dpo.beta, d.optim.num_warmup_steps) == (40, 8, 0.1, 5)
    assert (d.optim.learning_rate, d.log.eval_interval, d.log.final_eval, d.model.share_prompt_forward) == (5e-6, 0, False, True)
    off = parse_config(b.ours("dpo", b.parse(["--ours-flags", "--share_prompt_forward", "false"]), "tiny",
                              Path("/tmp/x"))[2:], stage="dpo")
    assert off.model.share_prompt_forward is False
