"""Multi-turn rollouts: token layout and action mask on scripted conversations (two chat templates),
rows at different turns in one batch, the turn and token caps, tool failures as messages, and the
experience maker and the advantage estimators on sequences with observation tokens in the middle."""

import json

import pytest


@pytest.mark.slow
def test_multiturn_cost_benchmark_runs(tmp_path):
    import sys

    sys.path.insert(0, "scripts/bench")
    from multiturn_cost import main as bench

    out = bench(["--model", "tiny", "--prompts", "2", "--samples", "1", "--max_new_tokens", "4", "--repeats", "2",
                 "--json", str(tmp_path / "c.json")])
    assert out["rollouts"] == 2 and len(out["single"]["runs"]) == len(out["multi"]["runs"]) == 2
    assert out["single"]["tokens_per_rollout"] == 4 and out["multi"]["turns_per_rollout"] >= 1
    assert out["ratio_s_per_token"] == pytest.approx(out["multi"]["s_per_generated_token"] /
                                                     out["single"]["s_per_generated_token"])
    assert json.loads((tmp_path / "c.json").read_text())["model"] == "tiny"
