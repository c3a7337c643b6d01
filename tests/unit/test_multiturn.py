"""Multi-turn rollouts: token layout and action mask on scripted conversations (two chat templates),
rows at different turns in one batch, the turn and token caps, tool failures as messages, and the
experience maker and the advantage estimators on sequences with observation tokens in the middle."""


import pytest
import torch
from support.multiturn import RULES, _batch
from support.tools import QWEN_TEMPLATE

from training.utils.data.collate import pad_sequences
from training.utils.generation import GenerationSettings
from training.utils.rl.multiturn import MultiTurn
from training.utils.tools import render
from training.utils.tools.environment import ToolEnvironment
from training.utils.tools.executor import ToolExecutor
from training.utils.tools.parsers import hermes
from training.utils.tools.spec import load_tools

CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "17*23"}}</tool_call>'


BAD = '<tool_call>{"name": "abacus", "arguments": {}}</tool_call>'


class Scripted:
    """A policy that answers from a script: row key (a word of its user message) -> its turns' texts.
    Log-probs are -(j + 1) / 100 for the j-th token of a turn, so their placement can be checked."""

    def __init__(self, tok, scripts: dict[str, list[str]]):
        self.tok, self.scripts, self.calls, self.sessions = tok, scripts, [], 0

    def session(self):
        import contextlib

        self.sessions += 1
        return contextlib.nullcontext(self)

    def turn_tokens(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]

    def generate(self, ids, mask, settings):
        outs = []
        self.calls.append(ids.shape[0])
        for row in ids:
            text = self.tok.decode(row[row != self.tok.pad_token_id])
            key = next(k for k in self.scripts if k in text)
            turn = text.count("<|im_start|>assistant") - 1
            outs.append(self.turn_tokens(self.scripts[key][turn])[:settings.max_new_tokens])
        new, _ = pad_sequences(outs, self.tok.pad_token_id, left=False)
        logp = -(torch.arange(new.shape[1]) + 1.0).repeat(len(outs), 1) / 100
        seq = torch.cat([ids, new], 1)
        return (seq, logp) if settings.return_logprobs else seq


def _rollout(tok, scripts, **kw):
    env = ToolEnvironment(ToolExecutor(load_tools(["calculator"])), hermes)
    engine = Scripted(tok, scripts)
    return engine, MultiTurn(engine, tok, lambda: env, **{"max_turns": 4, **kw})


@pytest.mark.parametrize("template, between", [
    ("smollm2", "\n<|im_start|>tool\n391<|im_end|>\n<|im_start|>assistant\n"),
    ("qwen", "\n<|im_start|>user\n<tool_response>\n391\n</tool_response><|im_end|>\n<|im_start|>assistant\n")])
def test_layout_and_action_mask_exact(tiny_tok, template, between):
    tok = tiny_tok
    if template == "qwen":
        from training.utils.model import load_tokenizer

        tok = load_tokenizer("tiny")
        tok.chat_template = QWEN_TEMPLATE
    engine, mt = _rollout(tok, {"alpha": [CALL, "391"], "beta": ["391"]})
    batch, g = mt(_batch(tok, ["alpha", "beta"]), GenerationSettings(max_new_tokens=64, return_logprobs=True))
    schemas = [t.schema for t in load_tools(["calculator"])]
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]        # noqa: E731
    eos = tok.eos_token_id
    # by hand: prompt | the call + EOS | the template's observation text | the answer + EOS
    pa = render.prompt_ids(tok, batch["messages"][0], schemas)
    pb = render.prompt_ids(tok, batch["messages"][1], schemas)
    turn1, obs, turn2 = enc(CALL) + [eos], enc(between), enc("391") + [eos]
    width = max(len(pa), len(pb))
    a = [tok.pad_token_id] * (width - len(pa)) + pa + turn1 + obs + turn2
    assert g.sequences[0].tolist() == a
    b = [tok.pad_token_id] * (width - len(pb)) + pb + enc("391") + [eos]
    assert g.sequences[1].tolist() == b + [tok.pad_token_id] * (len(a) - len(b))
    assert g.attention_mask[0].tolist() == [0] * (width - len(pa)) + [1] * (len(a) - width + len(pa))
    # state s acts on token s + 1: the sampled tokens only, never the template's or the tool's
    want = [0.0] * (width - 1) + [1.0] * len(turn1) + [0.0] * len(obs) + [1.0] * len(turn2)
    assert g.action_mask[0].tolist() == want
    assert g.action_mask[1].tolist() == [0.0] * (width - 1) + [1.0] * len(turn2) + [0.0] * (len(a) - len(b))
    lp = g.logprobs[0, width - 1:].tolist()
    assert lp[:len(turn1)] == pytest.approx([-(j + 1) / 100 for j in range(len(turn1))])
    assert lp[len(turn1):len(turn1) + len(obs)] == [0.0] * len(obs)
    assert lp[len(turn1) + len(obs):] == pytest.approx([-(j + 1) / 100 for j in range(len(turn2))])
    assert g.end_index.tolist() == [len(a) - 1, len(b) - 1] and g.has_eos.tolist() == [True, True]
    # the reward sources read the last turn's text, the conversation and the calls
    assert batch["answers"] == ["391", "391"] and batch["input_ids"].shape[1] == width
    conv = batch["columns"][0]["conversation"]
    assert [m["role"] for m in conv] == ["user", "assistant", "tool", "assistant"] and conv[2]["content"] == "391"
    assert batch["columns"][0]["tool_calls"] == [{"name": "calculator", "arguments": {"expression": "17*23"},
                                                  "status": "ok", "content": "391"}]
    assert batch["columns"][1] == {"row": 1, "conversation": batch["columns"][1]["conversation"], "tool_calls": []}
    # rows at different turns: turn 1 for both, turn 2 for alpha alone, in one session
    assert engine.calls == [2, 1] and engine.sessions == 1
    m = g.metrics
    assert (m["turns_per_rollout"], m["calls_per_rollout"], m["rollouts_with_call"]) == (1.5, 0.5, 0.5)
    assert m["call_parse_rate"] == 1.0 and m["call_success_rate"] == 1.0 and m["observation_tokens"] == len(obs) / 2


def test_caps_and_failures(tiny_tok):
    tok = tiny_tok
    # a policy that calls forever stops at max_turns; its last turn is the call
    _, mt = _rollout(tok, {"alpha": [CALL] * 9}, max_turns=3)
    batch, g = mt(_batch(tok, ["alpha"]), GenerationSettings(max_new_tokens=64))
    assert g.metrics["turns_per_rollout"] == 3 and g.metrics["calls_per_rollout"] == 3 and g.logprobs is None
    assert batch["answers"] == [CALL]
    # an unknown tool is answered with an error message and the conversation goes on
    _, mt = _rollout(tok, {"alpha": [BAD, "391"]})
    batch, g = mt(_batch(tok, ["alpha"]), GenerationSettings(max_new_tokens=64))
    conv = batch["columns"][0]["conversation"]
    assert conv[2] == {
        "role": "tool",
        "name": "abacus",
        "content": "Error: unknown tool 'abacus'; the tools are calculator",
    }
    assert (
        g.metrics["call_success_rate"] == 0.0 and g.metrics["calls_unknown_tool"] == 1 and batch["answers"] == ["391"]
    )
    # the token budget: the observation would cross it, so the rollout ends after the call
    n_call = len(tok(CALL, add_special_tokens=False)["input_ids"]) + 1
    _, mt = _rollout(tok, {"alpha": [CALL, "391"]}, max_rollout_tokens=n_call + 5)
    batch, g = mt(_batch(tok, ["alpha"]), GenerationSettings(max_new_tokens=64))
    assert g.metrics["turns_per_rollout"] == 1 and int(g.action_mask.sum()) == n_call
    # a turn cut by the per-turn cap ends the rollout without EOS
    _, mt = _rollout(tok, {"alpha": [CALL, "391"]})
    batch, g = mt(_batch(tok, ["alpha"]), GenerationSettings(max_new_tokens=5))
    assert g.has_eos.tolist() == [False] and int(g.action_mask.sum()) == 5 and g.metrics["turns_per_rollout"] == 1


def test_a_stop_text_ends_the_turn_and_the_template_eos_follows_outside_the_mask(tiny_tok):
    tok = tiny_tok
    engine, mt = _rollout(tok, {"alpha": [CALL + " and then some chatter", "391"]}, turn_stop=("</tool_call>",))
    batch, g = mt(_batch(tok, ["alpha"]), GenerationSettings(max_new_tokens=64, return_logprobs=True))
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]        # noqa: E731
    call = enc(CALL)
    width = batch["input_ids"].shape[1]
    obs = enc("\n<|im_start|>tool\n391<|im_end|>\n<|im_start|>assistant\n")
    assert g.sequences[0, width:].tolist() == call + [tok.eos_token_id] + obs + enc("391") + [tok.eos_token_id]
    assert g.action_mask[0, width - 1 :].tolist() == [1.0] * len(call) + [0.0] * (1 + len(obs)) + [1.0] * (
        len(enc("391")) + 1
    )
    assert batch["columns"][0]["conversation"][1]["content"] == CALL and g.metrics["call_success_rate"] == 1.0


def test_estimators_carry_the_return_across_observation_tokens():
    from training.utils.rl.advantages import ESTIMATORS
    from training.utils.rl.maths import gae

    # two model turns (states 0-1 and 4-5) around an observation (states 2-3); reward 1 on the last action
    mask = torch.tensor([[1.0, 1, 0, 0, 1, 1]])
    r = torch.tensor([[0.0, 0, 0, 0, 0, 1]])
    _, ret = ESTIMATORS["reinforce_pp"].fn(r, mask, gamma=0.5)
    # G over the model's tokens only: 1, 0.5 for turn 2; 0.25, 0.125 for turn 1 (observation skipped)
    assert ret.tolist() == [[0.125, 0.25, 0.0, 0.0, 0.5, 1.0]]
    v = torch.tensor([[0.1, 0.2, 9.0, 9.0, 0.3, 0.4]])    # values at observation states never enter
    adv, _ = gae(r, v, mask, gamma=1.0, lam=1.0)
    assert adv[0].tolist() == pytest.approx([0.9, 0.8, 0.0, 0.0, 0.7, 0.6])


def test_closing_evaluation_answers_with_the_tools(tmp_path, monkeypatch):
    """The report's evaluation of a tools run: every answer is a conversation, scored on its last turn."""
    from inference.passrate import evaluate_model
    from training.utils.config import ToolsConfig

    (tmp_path / "calltools.py").write_text(RULES)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = ToolsConfig(tools=["calltools:ping"], tool_parser="calltools:always_call", max_turns=2,
                      turn_stop=[" ", "e", "a", "o", "i", "\n"])
    res = evaluate_model("tiny", n=9, max_new_tokens=6, tools_cfg=cfg)
    assert res["n"] == 9 and not res["cached"]
    two = [a for a in res["answers"] if len(a["conversation"]) == 4]      # user, call, tool, last turn
    assert len(two) >= 6, [a["conversation"] for a in res["answers"]]
    for a in two:
        assert a["conversation"][2] == {"role": "tool", "name": "ping", "content": "pong"}
        assert a["answer"] == a["conversation"][3]["content"] and a["tool_calls"][0]["status"] == "ok"
