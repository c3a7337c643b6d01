"""Forward + backward seconds of one SFT step and one reward-model step, each fast path against
its plain form, on the main job's data (the stage presets' first training batches).

    python scripts/bench/stage_steps.py --model output/actor-models/smollm2-135m [--reps 3] [--batches 3]

SFT: the LM head and log-softmax on every column (plain) against the columns from the batch's
first scored label on (``scored_logits``). Reward model: chosen and rejected rows run whole
(plain) against a pair's prompt once with its KV cache (``pair_scores`` with sharing). The two
forms of a stage alternate on the same batches in one process, so the machine's drift between
runs lands on both; the losses of the two forms are printed beside the times (they agree up
to float rounding; ``tests/{e2e,unit}/test_sft_e2e.py`` and ``tests/unit/test_shared_prefix.py`` assert it).
Then one AdamW step over the SFT model's weights, torch's plain kernel against its fused one.

Each form's model FLOP/s (6 x the parameters of the linear layers x the batch's tokens, padding
included, per step: the work of the plain form; attention's share left out) is printed as a fraction of
this machine's fp32 matmul rate (``scripts/bench/machine.py``, measured in the same process).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))


def batches(stage: str, model: str, n: int):
    """The first ``n`` training batches of the stage's preset, collated as the stage collates them."""
    from training.utils.arguments import parse_config
    from training.utils.data import PairCollator, SFTCollator, build_phase
    from training.utils.loop import make_loader
    from training.utils.model import load_tokenizer

    step = 1 if stage == "sft" else 2
    cfg = parse_config(["--config", str(ROOT / f"training/configs/smollm2-step{step}.yaml"),
                        "--model_name_or_path", model], "bench", stage=stage)
    tok = load_tokenizer(model)
    train, _, _, _ = build_phase(cfg.data, tok, step, cfg.optim.seed)
    collate = SFTCollator(tok.pad_token_id, cfg.sft.sft_loss_on) if step == 1 else PairCollator(tok.pad_token_id)
    loader = make_loader(train, cfg.optim.per_device_train_batch_size, collate, True, cfg.optim.seed)
    out = []
    for b in loader:
        out.append(b)
        if len(out) == n:
            break
    return tok, out


def linear_params(model) -> int:
    """Weights of the linear layers (a tied LM head counted once): the matmuls of a step."""
    import torch

    seen = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return sum(seen.values())


def timed(forms: dict, data: list, params, reps: int, n_linear: int) -> dict:
    """Mean seconds per batch of loss + backward for each form, forms alternating batch by batch, and its
    model FLOP/s (6 x ``n_linear`` x tokens)."""
    tokens = sum(b["input_ids"].numel() for b in data) / len(data)
    secs = {k: 0.0 for k in forms}
    loss = {k: [] for k in forms}
    for r in range(reps):
        for b in data:
            for name, fn in forms.items():
                for p in params:
                    p.grad = None
                t0 = time.perf_counter()
                lo = fn(b)
                lo.backward()
                secs[name] += time.perf_counter() - t0
                if r == 0:
                    loss[name].append(round(lo.item(), 6))
    out = {k: {"s_per_step": secs[k] / (reps * len(data)), "losses": loss[k]} for k in forms}
    for r in out.values():
        r["model_gflops"] = 6 * n_linear * tokens / r["s_per_step"] / 1e9
    return out


def optimizer_steps(params, reps: int) -> dict:
    """Mean seconds of one AdamW step over ``params`` (random gradients) for torch's plain
    (one tensor at a time) and fused CPU kernels, alternating, and the largest difference of the
    weights after ``reps`` steps from the same start."""
    import torch

    start = [p.detach().clone() for p in params]
    grads = [torch.randn_like(p) * 1e-3 for p in params]
    forms = {}
    for name, fused in (("plain", False), ("fused", True)):
        ws = [w.clone().requires_grad_(True) for w in start]
        for w, g in zip(ws, grads):
            w.grad = g
        forms[name] = (ws, torch.optim.AdamW(ws, lr=5e-5, betas=(0.9, 0.95), foreach=False, fused=fused))
    secs = {k: 0.0 for k in forms}
    for _, opt in forms.values():                # the first step allocates the moments: not timed
        opt.step()
    for _ in range(reps):
        for name, (_, opt) in forms.items():
            t0 = time.perf_counter()
            opt.step()
            secs[name] += time.perf_counter() - t0
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(forms["plain"][0], forms["fused"][0]))
    return {"plain_s": secs["plain"] / reps, "fused_s": secs["fused"] / reps, "max_weight_diff": diff}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a causal LM directory (the SFT output), or a tiny model name")
    p.add_argument("--reps", type=int, default=3, help="passes over the batches")
    p.add_argument("--batches", type=int, default=3, help="training batches per stage")
    p.add_argument("--json", default="", help="write the figures here too")
    a = p.parse_args(argv)

    import torch

    from training.step1_supervised_finetuning.main import sft_step
    from training.step2_reward_model_finetuning.main import pair_scores
    from training.utils.losses import causal_lm_loss, pairwise_loss
    from training.utils.model import ValueModel, end_scores, load_causal_lm, load_reward_model

    out = {"torch_threads": torch.get_num_threads()}
    tok, data = batches("sft", a.model, a.batches)
    lm = load_causal_lm(a.model, tok).train()
    full = lambda b: causal_lm_loss(lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                       use_cache=False).logits, b["labels"])
    scored = lambda b: sft_step(lambda **kw: lm(**kw), b)[0]
    out["sft"] = timed({"plain": full, "scored columns": scored}, data, list(lm.parameters()), a.reps,
                       linear_params(lm))
    out["adamw"] = optimizer_steps(list(lm.parameters()), 2 * a.reps)
    lm = full = scored = None  # the SFT model's memory is freed before the reward model loads
    tok, data = batches("reward", a.model, a.batches)
    rm = ValueModel(load_reward_model(a.model, tok)).train()
    plain = lambda b: pairwise_loss(*end_scores(rm(b["input_ids"], b["attention_mask"]), b["end_index"]).chunk(2))
    shared = lambda b: pairwise_loss(*pair_scores(rm, b, True))
    out["reward"] = timed({"plain": plain, "prompt once": shared}, data, list(rm.parameters()), a.reps,
                          linear_params(rm))
    from machine import probe

    out["machine"] = probe()
    peak = out["machine"]["matmul_gflops"]
    print(f"machine: fp32 matmul {peak} GFLOP/s, memory {out['machine']['memory_gbps']} GB/s")
    print(f"{'stage':8} {'form':16} {'s / step':>9} {'vs plain':>9} {'GFLOP/s':>8} {'of matmul':>9}")
    for stage in ("sft", "reward"):
        base = out[stage]["plain"]["s_per_step"]
        for form, r in out[stage].items():
            r["matmul_fraction"] = r["model_gflops"] / peak
            print(f"{stage:8} {form:16} {r['s_per_step']:9.3f} {base / r['s_per_step']:8.2f}x {r['model_gflops']:8.1f} "
                  f"{r['matmul_fraction']:9.0%}   losses {r['losses']}")
    o = out["adamw"]
    print(
        f"AdamW step over the SFT model's weights: plain {o['plain_s']:.3f} s, fused {o['fused_s']:.3f} s "
        f"({o['plain_s'] / o['fused_s']:.2f}x); "
        f"weights after {2 * a.reps + 1} steps differ by <= {o['max_weight_diff']:.1e}"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
