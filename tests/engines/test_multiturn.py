"""Multi-turn rollouts: token layout and action mask on scripted conversations (two chat templates),
rows at different turns in one batch, the turn and token caps, tool failures as messages, and the
experience maker and the advantage estimators on sequences with observation tokens in the middle."""

import json

import pytest
import torch
from support.multiturn import RULES, _batch

from training.utils.data.collate import pad_sequences
from training.utils.generation import GenerationSettings
from training.utils.rl.multiturn import MultiTurn
from training.utils.tools import render
from training.utils.tools.environment import ToolEnvironment
from training.utils.tools.executor import ToolExecutor
from training.utils.tools.spec import load_tools


@torch.no_grad()
def _call_probability(model_name: str) -> float:
    """The probability (temperature 0.12) that the first turn is a line break, on 24 held-out prompts
    rendered with the tool: the share of rollouts that make a valid call."""
    from training.utils.data.bundled import train_eval
    from training.utils.data.format import to_messages
    from training.utils.model import load_causal_lm, load_tokenizer

    tok = load_tokenizer("tiny")
    schemas = [t.schema for t in load_tools(["calltools:ping"])]
    _, held_out = train_eval(300, 0)
    ids, mask = pad_sequences([render.prompt_ids(tok, to_messages(r["prompt"]), schemas) for r in held_out[:24]],
                              tok.pad_token_id, left=True)
    line = torch.tensor([i for i in range(len(tok)) if "\n" in tok.decode([i], skip_special_tokens=True)])
    model = load_causal_lm(model_name, tok, seed=3).eval()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
    return torch.softmax(logits / 0.12, -1)[:, line].sum(-1).mean().item()


@pytest.mark.slow
def test_grpo_learns_to_call_a_tool(tmp_path, monkeypatch):
    """Two-turn rollouts on tiny: a line break calls ``ping``, whose result comes back as a tool message,
    then the model takes a second turn; the rule rewards an answered call. The share of rollouts that make
    a valid call goes from under 20% to over 60% in 8 GRPO updates."""
    from training.step3_rlhf_finetuning.main import main as stage3
    from training.utils.logging import read_metrics

    (tmp_path / "calltools.py").write_text(RULES)
    monkeypatch.syspath_prepend(str(tmp_path))
    p0 = _call_probability("tiny")
    assert p0 < 0.2, p0
    out = tmp_path / "grpo"
    stage3(["--actor_model_name_or_path", "tiny", "--reward", "rule:calltools:called", "--output_dir", str(out),
            "--data_output_path", str(tmp_path / "cache"), "--bundled_size", "300", "--max_seq_len", "96",
            "--max_prompt_seq_len", "64", "--max_answer_seq_len", "1", "--temperature", "0.12",
            "--tools", "calltools:ping", "--tool_parser", "calltools:line_call", "--turn_stop", "\n",
            "--max_turns", "2", "--algo", "grpo", "--per_device_generation_batch_size", "4",
            "--num_samples_per_prompt", "4", "--learning_rate", "3e-4", "--ppo_epochs", "4", "--kl_coef", "0.0",
            "--max_steps", "8", "--per_device_training_batch_size", "8", "--per_device_eval_batch_size", "8",
            "--max_eval_samples", "8", "--disable_tqdm", "--plots", "false", "--enable_tensorboard", "false",
            "--seed", "3"])
    p1 = _call_probability(str(out / "actor"))
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert p1 > 0.6, (p0, p1, [r["rollouts_with_call"] for r in rows])
    # every rollout that called went on to a second turn, and every call it made was answered
    assert all(r["turns_per_rollout"] == pytest.approx(1 + r["rollouts_with_call"]) for r in rows)
    assert all(r.get("call_success_rate", 1.0) == 1.0 for r in rows)
    assert sum(r["rollouts_with_call"] for r in rows[-3:]) > sum(r["rollouts_with_call"] for r in rows[:3])
    sample = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert any(s["columns"]["tool_calls"] for s in sample)     # conversations with their calls in samples.jsonl


@pytest.mark.slow
def test_zero3_lora_rollout_gathers_once_and_equals_the_plain_model(tiny_tok, tmp_path, monkeypatch):
    """A three-turn greedy rollout through the Hybrid Engine (ZeRO-3, LoRA) gives the plain model's tokens
    and masks, with one ZeRO-3 gather and one LoRA merge for all its turns."""
    import copy

    import training.utils.hybrid_engine as hybrid
    from training.utils.arguments import parse_config
    from training.utils.config import LoraConfig
    from training.utils.deepspeed_setup import build_train_engine
    from training.utils.distributed import init_distributed
    from training.utils.generation import PlainHFBackend
    from training.utils.model import apply_lora, load_causal_lm
    from training.utils.tools.parsers import get_parser

    (tmp_path / "calltools.py").write_text(RULES)
    monkeypatch.syspath_prepend(str(tmp_path))
    init_distributed()
    model = apply_lora(load_causal_lm("tiny", tiny_tok, seed=7), LoraConfig(lora_dim=4, lora_alpha=8))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    plain = PlainHFBackend(copy.deepcopy(model).merge_and_unload(), tiny_tok)
    cfg = parse_config(["--zero_stage", "3", "--per_device_train_batch_size", "2"])
    he = hybrid.HybridEngine(build_train_engine(model, cfg, total_steps=1), tiny_tok, 3)
    gathers, merges = [], []
    real_gather = hybrid.zero3_gathered_without_hooks
    monkeypatch.setattr(hybrid, "zero3_gathered_without_hooks", lambda e: gathers.append(1) or real_gather(e))
    real_merge = he.engine.module.merge_adapter
    monkeypatch.setattr(he.engine.module, "merge_adapter", lambda *a, **k: merges.append(1) or real_merge(*a, **k))

    env = ToolEnvironment(ToolExecutor(load_tools(["calltools:ping"])), get_parser("calltools:always_call"))
    stops = (" ", "e", "a", "o", "i", "\n")
    batch = _batch(tiny_tok, ["alpha", "beta", "gamma"])
    settings = GenerationSettings(max_new_tokens=6, do_sample=False)
    _, got = MultiTurn(he, tiny_tok, lambda: env, max_turns=3, turn_stop=stops)(batch, settings)
    _, want = MultiTurn(plain, tiny_tok, lambda: env, max_turns=3, turn_stop=stops)(batch, settings)
    assert gathers == [1] and merges == [1]
    assert got.metrics["turns_per_rollout"] > 2.0, got.metrics           # most rows took all three turns
    assert torch.equal(got.sequences, want.sequences) and torch.equal(got.action_mask, want.action_mask)
