"""Critic-free RL (GRPO, RLOO, ReMax) and reward sources."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from training.utils.reward_sources import RewardError, Rollout, build_reward
from training.utils.rl.maths import aggregate, group_advantages, silent_groups, uniform_groups
from training.utils.rl.policy_losses import POLICY_LOSSES

SCORES = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])


def test_grpo_advantages_hand_values():
    s = 0.5 / (1 / 3) ** 0.5                     # (r - 0.5) / unbiased std 0.57735
    adv = group_advantages(SCORES, 4, "mean")
    assert adv.tolist() == pytest.approx([s, -s, -s, s, 0, 0, 0, 0], abs=1e-5)
    dr = group_advantages(SCORES, 4, "mean", std_normalize=False)          # Dr. GRPO
    assert dr.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])


def test_rloo_and_remax_advantages_hand_values():
    rl = group_advantages(SCORES, 4, "leave_one_out")      # r_i - mean of the other three
    assert rl.tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0])
    rm = group_advantages(SCORES, 4, "given", baseline=torch.tensor([0.5, 3.0]))
    assert rm.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, -1, -1, -1, -1])
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(SCORES, 1, "leave_one_out")
    with pytest.raises(ValueError, match="greedy-baseline"):
        group_advantages(SCORES, 4, "given")


def test_all_equal_group_is_zero_and_flagged():
    assert uniform_groups(SCORES, 4).tolist() == [False, True]
    for kind in ("mean", "leave_one_out"):
        assert group_advantages(SCORES, 4, kind)[4:].abs().max().item() == 0.0


def test_loss_reductions_hand_values():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert aggregate(x, m, "token").item() == pytest.approx(2.5)           # (1+2+3+4) / 4
    assert aggregate(x, m, "sequence").item() == pytest.approx(3.0)        # (2 + 4) / 2
    assert aggregate(x, m, "constant", 4).item() == pytest.approx(1.25)    # (6/4 + 4/4) / 2
    # clip-higher: ratio 1.25 with positive advantage is clipped at 1.2 symmetric, not at 1.28
    lp, old = torch.log(torch.tensor([[1.25]])), torch.zeros(1, 1)
    one = torch.ones(1, 1)
    assert POLICY_LOSSES["clip"].fn(lp, old, one, one, clip_low=0.2)[0].item() == pytest.approx(-1.2)
    assert POLICY_LOSSES["clip"].fn(lp, old, one, one, clip_low=0.2, clip_high=0.28)[0].item() == pytest.approx(-1.25)


def _rollout(prompts, answers, columns=()):
    z = torch.zeros(len(answers), 2, dtype=torch.long)
    return Rollout(z, z, z, torch.zeros(len(answers), dtype=torch.long), prompts, answers, list(columns))


def test_reward_functions_see_the_rows_columns(tmp_path, monkeypatch):
    (tmp_path / "rowrules.py").write_text(
        "def exact(prompt, answer, target):\n    return float(answer == target)\n"
        "def with_kwargs(prompt, answer, **cols):\n    return float(cols['level']) + len(cols)\n"
        "def trl_style(completions, **kwargs):\n    return [len(c) + x for c, x in zip(completions, kwargs['x'])]\n"
        "def ours(prompts, answers, level):\n    return [float(p == 'p') * l for p, l in zip(prompts, level)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cols = [{"target": "cat cat", "x": 1, "level": 2, "answer": "#### 2"}, {"target": "no", "x": 10, "level": 3}]
    r = _rollout(["p", "q"], ["cat cat", "dog"], cols)
    assert build_reward(["rule:rowrules:exact"])(r).tolist() == [1.0, 0.0]
    # every column but the one named like the answer parameter ('answer', GSM8K's reference)
    assert build_reward(["rule:rowrules:with_kwargs"])(r).tolist() == [2.0 + 3, 3.0 + 3]
    assert build_reward(["rule:rowrules:trl_style"])(r).tolist() == [7 + 1, 3 + 10]
    assert build_reward(["rule:rowrules:ours"])(r).tolist() == [2.0, 0.0]
    with pytest.raises(RewardError, match=r"rule:rowrules:exact failed on answer 0 .*target"):
        build_reward(["rule:rowrules:exact"])(_rollout(["p"], ["a"]))       # the data has no 'target' column


def test_shipped_verifiable_rewards_on_hand_values():
    from training.rewards import answer_format, math_answer, regex_reward

    done = ["The total is 42.", "42", "I think 41", "so #### 1,234", "no number", "-3.50 dollars"]
    refs = ["6 * 7 = 42\n#### 42", "#### 42", "#### 42", "#### 1234", "#### 5", "$-3.5"]
    assert math_answer(["q"] * 6, done, answer=refs) == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    r = build_reward(["rule:training.rewards:math_answer"])
    assert r(_rollout(["q", "q"], ["it is 7", "8"], [{"answer": "#### 7"}, {"answer": "#### 7"}])).tolist() == [
        1.0,
        0.0,
    ]
    with pytest.raises(RewardError, match=r"rule:training.rewards:math_answer failed on a batch.*'answer'"):
        r(_rollout(["q"], ["7"]))
    assert answer_format(["q"] * 4, ["work... #### 7", "Answer: 3", "The answer is 5.", "just 5 apples"]) == \
        [1.0, 1.0, 1.0, 0.0]
    assert regex_reward(r"^<think>.*</think>")(["q", "q"], ["<think>x</think> 4", "4"]) == [1.0, 0.0]


def test_rule_rewards_checker_custom_and_weighted(tmp_path, monkeypatch):
    (tmp_path / "myrules.py").write_text("def short(prompt, answer):\n    return -len(answer.split())\n"
                                         "def broken(prompt, answer):\n    raise KeyError('x')\n"
                                         "def text(prompt, answer):\n    return 'high'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = _rollout(['Repeat the word "cat" exactly 2 times, separated by single spaces, and nothing else.',
                  "Compute 25 + 24. Reply with the number only."], ["cat cat", "50 is it"])
    assert build_reward(["checker"])(r).tolist() == [1.0, 0.0]
    combo = build_reward(["checker", "rule:myrules:short"], [2.0, 0.5])
    assert combo(r).tolist() == pytest.approx([2 * 1 - 0.5 * 2, 0 - 0.5 * 3])
    assert combo.parts == {"rule:training.utils.data.checker:reward": 0.5, "rule:myrules:short": -2.5}
    with pytest.raises(RewardError, match=r"rule:myrules:broken failed on answer 0 .*KeyError"):
        build_reward(["myrules:broken"])(r)
    with pytest.raises(RewardError, match="reward 0 is 'high', not a number"):
        build_reward(["myrules:text"])(r)
    with pytest.raises(RewardError, match="cannot import"):
        build_reward(["nosuchmodule:f"])
    with pytest.raises(RewardError, match="unknown source .magic.: to reward stage 3 use checker, http"):
        build_reward(["magic"])
    with pytest.raises(RewardError, match="needs --reward_model_name_or_path"):
        build_reward(["model"])


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.path == "/bad":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"boom")
            return
        n = len(body["answers"]) - (self.path == "/short")
        out = {"rewards": [float(len(a)) for a in body["answers"]][:n]}
        if self.path == "/columns":          # the rows' other columns are posted too
            out = {"rewards": [float(c["x"]) for c in body["columns"]]}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture()
def reward_server():
    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_http_reward_endpoint(reward_server):
    r = _rollout(["p", "q"], ["abc", "de"])
    assert build_reward([reward_server + "/score"])(r).tolist() == [3.0, 2.0]
    with_columns = _rollout(["p", "q"], ["abc", "de"], [{"x": 4}, {"x": 5}])
    assert build_reward([reward_server + "/columns"])(with_columns).tolist() == [4.0, 5.0]
    with pytest.raises(RewardError, match="HTTP 500"):
        build_reward([reward_server + "/bad"])(r)
    with pytest.raises(RewardError, match="expected 2 rewards"):
        build_reward([reward_server + "/short"])(r)


def test_rollout_pass_rate_counts_rollouts_only(tiny_tok):
    """The checker's diagnostic counts sampled rollouts, not evaluation answers or ReMax's greedy baselines."""
    from training.utils.rl.runner import batch_reward

    prompts = ["Compute 2 + 3. Reply with the number only.", "Compute 4 + 4. Reply with the number only.",
               "Tell me a story."]          # the last one has no checkable task: not judged
    pw = 4
    answers = ["5", "9", "once"]
    rows = [[tiny_tok.pad_token_id] * pw + tiny_tok(a, add_special_tokens=False)["input_ids"] for a in answers]
    width = max(map(len, rows))
    seq = torch.tensor([r + [tiny_tok.pad_token_id] * (width - len(r)) for r in rows])
    end = torch.tensor([len(r) - 1 for r in rows])
    batch = {"input_ids": seq[:, :pw], "prompt_text": prompts}
    fn = batch_reward(lambda ro: torch.tensor([float(a == "5") for a in ro.answers]), tiny_tok)
    r = fn(seq, None, None, end, batch)                       # 1 of the 2 checkable rollouts passes
    assert r.tolist() == [1.0, 0.0, 0.0]
    fn(seq[:1], None, None, end[:1], {"input_ids": seq[:1, :pw], "prompt_text": prompts[:1]}, rollout=False)
    # the reward ranks the passing rollout above the failing one (two prompts: one pair over the batch)
    assert fn.take_checked() == {"rollout_pass_rate": 0.5, "reward_judge_auc": 1.0, "reward_judge_pairs": 1.0}
    assert fn.take_checked() == {}                            # reset by the previous call


def test_silent_groups_for_dynamic_filtering():
    scores = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    assert silent_groups(scores, group_advantages(scores, 4), 4).tolist() == [True, False, True]
    assert silent_groups(scores, group_advantages(scores, 4, "leave_one_out"), 4).tolist() == [True, False, True]
    # remax: all four answers passed but the greedy answer failed -> advantage +1 each: keep
    greedy = torch.tensor([0.0, 1.0, 0.5])
    adv = group_advantages(scores, 4, "given", baseline=greedy)
    assert adv.view(3, 4)[0].tolist() == [1.0] * 4
    assert silent_groups(scores, adv, 4, by_advantage=True).tolist() == [False, False, True]
