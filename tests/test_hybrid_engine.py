import copy

import pytest
import torch

from training.utils.arguments import parse_config
from training.utils.distributed import init_distributed
from training.utils.deepspeed_setup import build_train_engine
from training.utils.generation import GenerationSettings, PlainHFBackend
from training.utils.hybrid_engine import HybridEngine
from training.utils.model import apply_lora, load_causal_lm
from training.utils.model.save import gathered_state_dict
from training.utils.config import LoraConfig

GREEDY = GenerationSettings(max_new_tokens=12, do_sample=False)


def _prompts(tok):
    texts = ["Compute 2 + 2.", "Write one sentence about cats. Use only capital letters.", "Hi"]
    ids = [tok(t)["input_ids"] for t in texts]
    w = max(map(len, ids))
    x = torch.full((len(ids), w), tok.pad_token_id)
    m = torch.zeros_like(x)
    for i, s in enumerate(ids):
        x[i, w - len(s):] = torch.tensor(s)
        m[i, w - len(s):] = 1
    return x, m


def lora_that_changes_answers(model):
    """``model`` with LoRA adapters whose B factors are non-zero (a merge changes the weights)."""
    model = apply_lora(model, LoraConfig(lora_dim=4, lora_alpha=8))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tiny", "tiny-opt"])
@pytest.mark.parametrize("zero", [0, 2, 3])
@pytest.mark.parametrize("lora", [False, True])
def test_hybrid_engine_greedy_equals_hf_generate(kind, zero, lora, tiny_tok):
    init_distributed()
    model = load_causal_lm(kind, tiny_tok, seed=7)
    if lora:
        model = lora_that_changes_answers(model)
    x, m = _prompts(tiny_tok)
    fresh = copy.deepcopy(model)
    want = PlainHFBackend(copy.deepcopy(model), tiny_tok).generate(x, m, GREEDY)
    cfg = parse_config(["--zero_stage", str(zero), "--per_device_train_batch_size", "2", "--learning_rate", "3e-2",
                        "--lr_scheduler_type", "constant"])
    engine = build_train_engine(model, cfg, total_steps=1)
    he = HybridEngine(engine, tiny_tok, zero)
    got = he.generate(x, m, GREEDY)
    assert torch.equal(got, want)
    # training still works after the rollout (ZeRO-3 hooks restored), and the next rollout is plain
    # generate on the *updated* weights (a large step: the greedy tokens change)
    he.train()
    out = engine(input_ids=got, attention_mask=torch.ones_like(got))
    engine.backward(-out.logits.float()[..., 5].mean())       # push every position towards token 5
    engine.step()
    again = he.generate(x, m, GREEDY)
    assert engine.module.training
    updated = gathered_state_dict(engine.module, zero)
    missing, unexpected = fresh.load_state_dict(updated, strict=False)
    assert not unexpected and not [k for k in missing if k in dict(fresh.named_parameters())]
    assert torch.equal(again, PlainHFBackend(fresh, tiny_tok).generate(x, m, GREEDY))
    assert not torch.equal(again, got)


def test_static_cache_path_gives_the_same_tokens(tiny_tok):
    model = load_causal_lm("tiny", tiny_tok, seed=9)
    x, m = _prompts(tiny_tok)
    plain = PlainHFBackend(model, tiny_tok)
    dynamic = plain.generate(x, m, GREEDY)
    static = plain.generate(x, m, GenerationSettings(max_new_tokens=12, do_sample=False, static_cache=True))
    assert torch.equal(dynamic, static)


@pytest.mark.slow
def test_rollout_benchmark_script_runs_and_agrees():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench" / "rollout_zero3.py"
    spec = importlib.util.spec_from_file_location("rollout_zero3", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--layers", "2", "--hidden", "64", "--batch", "2", "--new_tokens", "4", "--repeats", "1"])
    assert res["greedy_equal_to_plain"] == {"hybrid_engine": True, "zero3_engine_generate": True}
    assert set(res["seconds"]) == {"hybrid_engine", "zero3_engine_generate", "plain_hf_generate"}
    assert all(v > 0 for v in res["seconds"].values())


@pytest.mark.slow
def test_step3_throughput_benchmark_measures_every_phase(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench" / "step3_throughput.py"
    spec = importlib.util.spec_from_file_location("step3_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "bench.jsonl"
    res = mod.main(["--actor", "64,2,2,128", "--critic", "32,1,2,64", "--prompt_len", "8", "--answer_len", "4",
                    "--batch", "2", "--steps", "1", "--warmup", "0", "--json", str(out), "--offload_idle_models",
                    "--critic_zero_stage", "2"])
    assert json.loads(out.read_text()) == res
    assert res["greedy_equal_to_plain"] == {"hybrid_engine": True, "engine_generate": True}
    # phases are measured separately and must fit inside the measured step (JSON rounded to 1 ms)
    assert res["step_s"] >= res["generation_s"] + res["training_s"] - 2e-3
    assert all(v > 0 for v in res["tflops"].values()) and res["peak_memory_gb"] > 0
    assert res["offload_idle_models"] and set(res["phase_peak_memory_gb"]) == {"generation", "experience", "training"}
    # against this machine's limits: the decode reads the actor's weights at a fraction of the memory bandwidth
    assert res["machine"]["memory_gbps"] > 0 and res["machine"]["matmul_gflops"] > 0
    assert 0 < res["decode_bandwidth_fraction"] < 1 and 0 < res["training_matmul_fraction"] < 1
    assert all(0 < v <= res["peak_memory_gb"] + 1e-3 for v in res["phase_peak_memory_gb"].values())
    # reading every weight once at memory bandwidth is a floor that a measured decode step cannot beat
    assert 0 < res["decode_floor_ms"] < res["decode_ms_per_step"]
    assert set(res["rollout_s"]) == {"hybrid_engine", "plain_hf_generate", "engine_generate"}
