"""Rollout speed with the actor under ZeRO-3, side by side in one run:

1. the Hybrid Engine (parameters gathered once per rollout batch, hooks lifted),
2. ``generate`` through the ZeRO-3 engine directly (DeepSpeed gathers every layer at every token),
3. plain Hugging Face ``generate`` on an unpartitioned copy (the floor).

    python scripts/bench/rollout_zero3.py                       # one rank
    deepspeed --num_gpus 2 scripts/bench/rollout_zero3.py       # two ranks (gloo on CPU)

Prints a JSON line and a markdown table; greedy tokens of (1) and (2) are checked equal to (3).
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt_len", type=int, default=32)
    ap.add_argument("--new_tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--local_rank", type=int, default=-1)
    a = ap.parse_args(argv)

    from transformers import LlamaConfig, LlamaForCausalLM

    from training.utils.arguments import parse_config
    from training.utils.distributed import init_distributed, is_main, world_size
    from training.utils.deepspeed_setup import build_train_engine
    from training.utils.generation import GenerationSettings, PlainHFBackend
    from training.utils.hybrid_engine import HybridEngine
    from training.utils.model import load_tokenizer

    init_distributed()
    torch.manual_seed(0)
    tok = load_tokenizer("tiny")
    conf = LlamaConfig(vocab_size=len(tok), hidden_size=a.hidden, intermediate_size=a.hidden * 4,
                       num_hidden_layers=a.layers, num_attention_heads=max(1, a.hidden // 64),
                       num_key_value_heads=max(1, a.hidden // 64), eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(conf)
    plain = PlainHFBackend(copy.deepcopy(model), tok)
    cfg = parse_config(["--zero_stage", "3", "--per_device_train_batch_size", str(a.batch)])
    engine = build_train_engine(model, cfg, total_steps=1)
    he = HybridEngine(engine, tok, 3)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(10, len(tok) - 10, (a.batch, a.prompt_len), generator=g)
    m = torch.ones_like(x)
    s = GenerationSettings(max_new_tokens=a.new_tokens, do_sample=False, min_new_tokens=a.new_tokens)

    def direct(ids, mask, settings):  # generate through the ZeRO-3-wrapped module, hooks active
        engine.eval()
        with torch.no_grad():
            return engine.module.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                                          min_new_tokens=settings.min_new_tokens, do_sample=False,
                                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, use_cache=True)

    paths = {"hybrid_engine": he.generate, "zero3_engine_generate": direct, "plain_hf_generate": plain.generate}
    outs, times = {}, {}
    for name, fn in paths.items():
        fn(x, m, s)  # warm-up
        t = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            outs[name] = fn(x, m, s)
            t.append(time.perf_counter() - t0)
        times[name] = min(t)
    equal = {k: bool(torch.equal(v, outs["plain_hf_generate"])) for k, v in outs.items() if k != "plain_hf_generate"}
    tokens = a.batch * a.new_tokens
    res = {"ranks": world_size(), "params_m": round(sum(p.numel() for p in plain.model.parameters()) / 1e6, 2),
           "batch": a.batch, "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
           "seconds": {k: round(v, 3) for k, v in times.items()},
           "tokens_per_s": {k: round(tokens / v, 1) for k, v in times.items()},
           "speedup_he_vs_zero3_generate": round(times["zero3_engine_generate"] / times["hybrid_engine"], 2),
           "greedy_equal_to_plain": equal}
    if is_main():
        print(json.dumps(res))
        print("\n| path | s per rollout | tokens/s | tokens equal to plain HF |\n|---|---|---|---|")
        for k in paths:
            print(f"| {k} | {times[k]:.3f} | {tokens / times[k]:.1f} | {equal.get(k, '(the reference)')} |")
        print(f"\nHybrid Engine vs generate through the ZeRO-3 engine: {res['speedup_he_vs_zero3_generate']}x")
    return res


if __name__ == "__main__":
    main()
