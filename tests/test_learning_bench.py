"""scripts/bench/learning.py: figures per seed, mean / min / max, and one real run on tiny."""
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
