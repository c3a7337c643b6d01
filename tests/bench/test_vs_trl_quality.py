"""scripts/bench/vs_trl_quality.py: the time-to-quality figures, and the reward-model reward that
TRL's side of the PPO comparison is given (it must score as this project's stage 3 does)."""

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _quality():
    sys.path.insert(0, str(ROOT / "scripts" / "bench"))
    spec = importlib.util.spec_from_file_location("vs_trl_quality", ROOT / "scripts" / "bench" / "vs_trl_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _points(*pairs):
    return [{"loop_s": t, "pass_rate": r} for t, r in pairs]


def test_time_to_target_final_rates_and_the_rate_by_the_shortest_runs_time():
    q = _quality()
    runs = [{"ours": {"points": _points((10, 0.30), (20, 0.45), (30, 0.50))},
             "trl": {"points": _points((25, 0.32), (50, 0.40), (75, 0.46))}},
            {"ours": {"points": _points((12, 0.35), (24, 0.38), (36, 0.40))},
             "trl": {"points": _points((20, 0.30), (40, 0.50), (60, 0.52))}}]
    assert q.reached(runs[0]["ours"]["points"], 0.45) == 20 and q.reached(runs[1]["ours"]["points"], 0.45) is None
    s = q.summarize({"runs": {"grpo-preset": runs}}, sft_rate=0.35, gain=0.10)["grpo-preset"]
    ours, trl = s["ours"], s["trl"]
    assert ours["reached"] == 1 and ours["time_to_target_s"] == 20 and trl["reached"] == 2
    assert trl["time_to_target_s"] == (75 + 40) / 2                       # median of the seeds that reach 0.45
    assert abs(ours["final_mean"] - 0.45) < 1e-12 and ours["final_min"] == 0.40 and trl["final_min"] == 0.46
    assert ours["common_s"] == 30 and trl["common_s"] == 30               # the shortest run's last point
    assert abs(ours["at_common_s"] - (0.50 + 0.38) / 2) < 1e-12           # each run's last point by 30 s
    assert abs(trl["at_common_s"] - (0.32 + 0.30) / 2) < 1e-12
    md = q.table({"sft_pass_rate": 0.35, "gain": 0.10, "eval_prompts": 96, "summary": {"grpo-preset": s}})
    assert (
        "| GRPO, its preset | this project | 2 | 0.450 (0.400) | 33 | 1/2 | 20 |" in md
        and "target SFT + 10 points = 0.450" in md
    )


def test_trl_sides_reward_model_reward_equals_the_stage_3_score(tmp_path):
    """TRL's side gets (prompt ids + completion ids, right-padded); stage 3 scores the left-padded
    rollout at its answer's end with position ids from the mask: the same numbers, and the same
    penalty off an answer that has no EOS."""
    from training.utils.data.collate import pad_sequences
    from training.utils.model import load_reward_model, load_tokenizer
    from training.utils.model.reward import ValueModel
    from training.utils.reward_sources import ModelReward, Rollout
    from training.utils.rl.sequences import answer_layout
    from training.utils.shared_prefix import position_ids_from

    tok = load_tokenizer("tiny")
    rm = load_reward_model("tiny", tok, seed=7)
    rm.save_pretrained(tmp_path / "rm")
    eos, pad = tok.eos_token_id, tok.pad_token_id
    prompts = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15]]
    answers = [[20, 21, eos], [22, 23, 24, 25, 26], [27, eos]]          # the second is cut off: no EOS
    fn = _quality().reward_model_fn(str(tmp_path / "rm"), tok, penalty=1.0)
    got = fn(["p"] * 3, ["c"] * 3, completion_ids=answers, row_prompt_ids=prompts)

    p_ids, p_mask = pad_sequences(prompts, pad, left=True)
    width = max(len(a) for a in answers)
    seq = torch.cat([p_ids, torch.tensor([a + [pad] * (width - len(a)) for a in answers])], dim=1)
    attn, _, end, has_eos = answer_layout(seq, p_mask, eos)
    model = ValueModel(load_reward_model(str(tmp_path / "rm"), tok).eval())
    with torch.no_grad():
        plain = ModelReward(model, "rm")(Rollout(seq, attn, position_ids_from(attn), end, ["p"] * 3, ["c"] * 3))
    want = plain - 1.0 * (~has_eos).float()
    assert has_eos.tolist() == [True, False, True]
    assert torch.allclose(torch.tensor(got), want, atol=1e-5), (got, want)
    assert len(set(round(x, 4) for x in got)) == 3
