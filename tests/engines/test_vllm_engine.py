"""vLLM as the rollout engine: the same tokens as the updated Hugging Face model after training steps
(full fine-tuning, LoRA, ZeRO-3), the log-prob gap, stage 3 end to end with its resume, clear errors.

vLLM's CPU attention runs head sizes >= 32, so these use ``tiny-h32`` (``tiny`` has heads of 16, which
is the unsupported-model case).
"""

import copy
import sys

import pytest
import torch
from support.hybrid_engine import lora_that_changes_answers

from training.utils.arguments import parse_config
from training.utils.deepspeed_setup import build_train_engine
from training.utils.distributed import init_distributed
from training.utils.generation import GenerationSettings, PlainHFBackend
from training.utils.hybrid_engine import HybridEngine
from training.utils.model import load_causal_lm
from training.utils.model.save import gathered_state_dict
from training.utils.vllm_engine import VLLMUnavailable

KIND = "tiny-h32"     # Llama with heads of 32, as vLLM's CPU kernels need

GREEDY = GenerationSettings(max_new_tokens=10, do_sample=False)


def _prompts(h32_tok, n=16):
    ids = [h32_tok(f"Write the number {i} in words, then {i * 7} in digits.")["input_ids"] for i in range(n)]
    w = max(map(len, ids))
    x = torch.full((n, w), h32_tok.pad_token_id)
    m = torch.zeros_like(x)
    for i, s in enumerate(ids):
        x[i, w - len(s):] = torch.tensor(s)
        m[i, w - len(s):] = 1
    return x, m


def _engine(h32_tok, zero, lora, lr="3e-2"):
    from training.utils.vllm_engine import VLLMEngine

    init_distributed()
    model = load_causal_lm(KIND, h32_tok, seed=7)
    if lora:
        model = lora_that_changes_answers(model)
    fresh = copy.deepcopy(model)
    cfg = parse_config(["--zero_stage", str(zero), "--per_device_train_batch_size", "2", "--learning_rate", lr,
                        "--lr_scheduler_type", "constant"])
    engine = build_train_engine(model, cfg, total_steps=2)
    he = HybridEngine(engine, h32_tok, zero)
    v = VLLMEngine(he, h32_tok, max_model_len=256, kv_cache_gb=0.05)
    return engine, he, v, fresh


def _step(engine, seq):
    engine.train()
    out = engine(input_ids=seq, attention_mask=torch.ones_like(seq))
    engine.backward(-out.logits.float()[..., 5].mean())       # push every position towards token 5
    engine.step()


@pytest.mark.slow
@pytest.mark.parametrize("zero,lora", [(0, False), (0, True), (3, False)])
def test_vllm_greedy_equals_the_updated_hf_model(h32_tok, zero, lora):
    engine, he, v, fresh = _engine(h32_tok, zero, lora)
    x, m = _prompts(h32_tok)
    want = PlainHFBackend(copy.deepcopy(fresh), h32_tok).generate(x, m, GREEDY)
    assert torch.equal(v.generate(x, m, GREEDY), want)
    for i in range(2):                                # two optimizer steps, each followed by a sync
        _step(engine, want)
        got = v.generate(x, m, GREEDY)
        assert v.metrics["vllm_sync_s"] > 0
        missing, unexpected = fresh.load_state_dict(gathered_state_dict(engine.module, zero), strict=False)
        assert not unexpected and not [k for k in missing if k in dict(fresh.named_parameters())]
        assert torch.equal(got, PlainHFBackend(fresh, h32_tok).generate(x, m, GREEDY))
        if i == 0:
            assert not torch.equal(got, want)         # the step changed the answers, and vLLM saw it
        want = got
    v.generate(x, m, GREEDY)
    assert v.metrics["vllm_sync_s"] == 0.0            # no step since: no sync


@pytest.mark.slow
def test_vllm_sampled_logprobs_match_the_training_forward(h32_tok):
    engine, he, v, _ = _engine(h32_tok, 0, False)
    x, m = _prompts(h32_tok)
    s = GenerationSettings(max_new_tokens=12, do_sample=True, temperature=0.7, return_logprobs=True)
    seq, logp = v.generate(x, m, s)
    assert seq.shape[0] == 16 and logp.shape == (16, seq.shape[1] - x.shape[1])
    new = seq[:, x.shape[1]:]
    live = torch.ones_like(new, dtype=torch.bool)        # up to and with each row's first EOS
    for i in range(new.shape[0]):
        eos = (new[i] == h32_tok.eos_token_id).nonzero()
        if len(eos):
            live[i, eos[0, 0] + 1:] = False
    attn = torch.cat([m, live.long()], 1)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = he.module(input_ids=seq, attention_mask=attn, position_ids=pos).logits.float()
    train = torch.log_softmax(logits[:, x.shape[1] - 1:-1] / 0.7, -1).gather(2, new.unsqueeze(2)).squeeze(2)
    gap = (train - logp).abs()[live]
    assert live.sum() > 40 and gap.mean() < 1e-3 and gap.max() < 1e-2, (gap.mean(), gap.max())


@pytest.mark.slow
def test_unsupported_models_are_refused_by_name(h32_tok):
    from training.utils.model.loader import tiny_config
    from training.utils.vllm_engine import check_supported

    cfg = tiny_config("tiny", h32_tok)
    cfg.architectures = ["LlamaForCausalLM"]
    with pytest.raises(VLLMUnavailable, match="head size 16"):
        check_supported(cfg, on_cpu=True)
    cfg.architectures = ["NoSuchModelForCausalLM"]
    with pytest.raises(VLLMUnavailable, match="NoSuchModelForCausalLM"):
        check_supported(cfg, on_cpu=True)
    cfg = tiny_config("tiny-h32", h32_tok)
    cfg.architectures = ["LlamaForCausalLM"]
    check_supported(cfg, on_cpu=True)


@pytest.mark.slow
def test_closing_evaluation_on_vllm_gives_the_hf_answers(h32_tok, tmp_path):
    from inference.passrate import eval_prompts, evaluate_model
    from training.utils.model import save_hf

    model = load_causal_lm(KIND, h32_tok, seed=11)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():                  # weights far from the initialisation's: varied answers, no ties
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3, generator=g)
    save_hf(model, h32_tok, tmp_path / "m")
    prompts = eval_prompts("dev", 27)
    hf = evaluate_model(str(tmp_path / "m"), max_new_tokens=16, prompts=prompts)
    vl = evaluate_model(str(tmp_path / "m"), max_new_tokens=16, prompts=prompts, engine="vllm")
    assert [a["answer"] for a in vl["answers"]] == [a["answer"] for a in hf["answers"]]
    assert len({a["answer"] for a in hf["answers"]}) > 5
    with pytest.raises(ValueError, match="built in memory"):
        evaluate_model("tiny-h32", prompts=prompts[:2], engine="vllm")


@pytest.mark.slow
def test_two_ranks_each_run_their_own_engine(tmp_path):
    import json
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "train.py"), "--algo", "grpo", "--actor-model", KIND, "--sft-model",
                        KIND, "--deployment-type", "single_node", "--rollout_engine", "vllm", "--max_steps", "2",
                        "--output-dir", str(tmp_path / "out"), "--eval-prompts", "8"],
                       cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "2 rank(s)" in r.stdout + r.stderr
    rows = [json.loads(x) for x in (tmp_path / "out" / "step3-models" / f"{KIND}-grpo" / "metrics.jsonl").read_text()
            .splitlines()]
    train = [x for x in rows if x["split"] == "train"]
    assert len(train) == 2 and train[1]["vllm_sync_s"] > 0
    assert all(x["logprob_gap_mean"] < 1e-3 for x in train)
