"""Stage-3 (PPO) throughput with random-weight models built from a config (nothing downloaded).

Actor + frozen reference (actor shape), critic + frozen reward model (critic shape), N PPO steps
with fixed prompt and answer lengths (answers forced to exactly ``--answer_len`` tokens), as
DeepSpeed-Chat's step-3 benchmark does. Reports per phase: generation time and tokens/s,
experience forward passes, training time and tokens/s, end-to-end samples/s, achieved TFLOP/s
and peak memory; and, on the same actor (before training) and the same prompts, the rollout paths:
Hybrid Engine vs plain Hugging Face ``generate`` (an unpartitioned copy) vs ``generate`` through
the ZeRO-3 engine, with greedy tokens checked equal.

    python scripts/bench/step3_throughput.py                               # CPU-sized default
    python scripts/bench/step3_throughput.py --actor opt-1.3b --critic opt-350m \\
        --prompt_len 256 --answer_len 256 --batch 16 --steps 3             # DeepSpeed-Chat's shape (GPU)
    deepspeed --num_gpus 2 scripts/bench/step3_throughput.py ...            # several ranks

Shapes: opt-125m, opt-350m, opt-1.3b, opt-2.7b, opt-6.7b, or ``hidden,layers,heads,ffn``.
Prints a JSON line per run (and appends it to ``--json``) and a markdown table.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SHAPES = {  # hidden, layers, heads, ffn (OPT family; 350m projects embeddings to 512)
    "opt-125m": (768, 12, 12, 3072), "opt-350m": (1024, 24, 16, 4096), "opt-1.3b": (2048, 24, 32, 8192),
    "opt-2.7b": (2560, 32, 32, 10240), "opt-6.7b": (4096, 32, 32, 16384),
    "cpu-actor": (256, 4, 4, 1024), "cpu-critic": (128, 2, 2, 512),
}


def opt_config(shape: str, tok, max_len: int):
    from transformers import OPTConfig

    if shape in SHAPES:
        h, n, heads, ffn = SHAPES[shape]
    else:
        try:
            h, n, heads, ffn = (int(x) for x in shape.split(","))
        except ValueError:
            raise SystemExit(f"shape {shape!r}: use one of {', '.join(SHAPES)} or hidden,layers,heads,ffn") from None
    proj = 512 if shape == "opt-350m" else h
    return OPTConfig(vocab_size=50272 if shape.startswith("opt-") else len(tok), hidden_size=h, num_hidden_layers=n,
                     num_attention_heads=heads, ffn_dim=ffn, word_embed_proj_dim=proj,
                     max_position_embeddings=max(2048, max_len), eos_token_id=tok.eos_token_id,
                     bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, dropout=0.0,
                     attention_dropout=0.0, activation_dropout=0.0, do_layer_norm_before=shape != "opt-350m")


def nparams(model) -> int:
    return sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters())


def peak_memory_gb(dev) -> float:
    """The process's peak so far (on CPU, Linux lowers it when ``reset_phase_peak`` resets the
    high-water mark: the caller takes the max with the phase peaks)."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # KiB -> GiB (process RSS)


def reset_phase_peak(dev) -> None:
    """Start a new peak: CUDA's allocator statistics, or the process's peak RSS (Linux clear_refs 5)."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass           # not Linux, or not allowed: the figure is then the process's peak so far


def phase_peak_gb(dev) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2 ** 30
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 2 ** 20


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def build(a, tok, dev):
    from transformers import OPTForCausalLM, OPTForSequenceClassification

    from training.utils.arguments import parse_config
    from training.utils.deepspeed_setup import build_train_engine, frozen
    from training.utils.hybrid_engine import HybridEngine
    from training.utils.model import ValueModel

    L = a.prompt_len + a.answer_len
    cfg = parse_config(
        [
            "--zero_stage",
            str(a.actor_zero_stage),
            "--per_device_train_batch_size",
            str(a.train_batch),
            "--critic_zero_stage",
            str(a.critic_zero_stage),
            "--learning_rate",
            "1e-6",
            "--critic_learning_rate",
            "1e-6",
            "--per_device_generation_batch_size",
            str(a.batch),
            "--per_device_training_batch_size",
            str(a.train_batch),
            "--max_answer_seq_len",
            str(a.answer_len),
            "--dtype",
            a.dtype,
            *(["--offload"] if a.offload else []),
            *(["--gradient_checkpointing"] if a.gradient_checkpointing else []),
        ]
    )
    torch.manual_seed(0)
    actor = OPTForCausalLM(opt_config(a.actor, tok, L))
    plain = copy.deepcopy(actor)
    ref = copy.deepcopy(actor)
    ccfg = opt_config(a.critic, tok, L)
    ccfg.num_labels = 1
    critic = OPTForSequenceClassification(ccfg)
    rm = copy.deepcopy(critic)
    steps = a.warmup + a.steps
    updates = steps * max(1, a.batch // a.train_batch)
    he = HybridEngine(build_train_engine(actor, cfg, updates), tok, a.actor_zero_stage)
    critic_e = build_train_engine(ValueModel(critic), cfg, updates, zero_stage=a.critic_zero_stage)
    ref_e = frozen(ref, cfg, 3 if a.actor_zero_stage == 3 else 0)
    rm_e = frozen(ValueModel(rm), cfg, 3 if a.critic_zero_stage == 3 else 0)
    dtype = next(he.engine.module.parameters()).dtype
    plain = plain.to(dev, dtype).eval()
    return cfg, he, critic_e, ref_e, rm_e, plain


def rollout_paths(a, tok, he, plain, prompts, mask):
    """HE vs plain HF vs generate through the (ZeRO-3) engine: seconds, and greedy tokens equal."""
    from training.utils.generation import GenerationSettings, PlainHFBackend

    s = GenerationSettings(max_new_tokens=a.answer_len, min_new_tokens=a.answer_len, do_sample=False)
    engine = he.engine

    def direct(ids, m, settings):
        engine.eval()
        with torch.no_grad():
            return engine.module.generate(input_ids=ids, attention_mask=m, max_new_tokens=settings.max_new_tokens,
                                          min_new_tokens=settings.min_new_tokens, do_sample=False,
                                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, use_cache=True)

    paths = {"hybrid_engine": he.generate, "plain_hf_generate": PlainHFBackend(plain, tok).generate,
             "engine_generate": direct}
    outs, secs = {}, {}
    for name, fn in paths.items():
        fn(prompts, mask, s)                       # warm-up
        sync(prompts.device)
        t0 = time.perf_counter()
        outs[name] = fn(prompts, mask, s)
        sync(prompts.device)
        secs[name] = time.perf_counter() - t0
    equal = {k: bool(torch.equal(v, outs["plain_hf_generate"])) for k, v in outs.items() if k != "plain_hf_generate"}
    return secs, equal


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--actor", default=None, help="actor shape (default: opt-1.3b on CUDA, cpu-actor on CPU)")
    ap.add_argument("--critic", default=None, help="critic shape (default: opt-350m on CUDA, cpu-critic on CPU)")
    ap.add_argument("--prompt_len", type=int, default=None, help="default 256 on CUDA, 64 on CPU")
    ap.add_argument("--answer_len", type=int, default=None, help="default 256 on CUDA, 64 on CPU")
    ap.add_argument("--batch", type=int, default=None, help="prompts per rollout (default 16 on CUDA, 8 on CPU)")
    ap.add_argument("--train_batch", type=int, default=None, help="PPO micro-batch (default: --batch)")
    ap.add_argument("--steps", type=int, default=3, help="measured PPO steps")
    ap.add_argument("--warmup", type=int, default=1, help="PPO steps before measuring")
    ap.add_argument("--actor_zero_stage", type=int, default=3)
    ap.add_argument("--critic_zero_stage", type=int, default=3)
    ap.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    ap.add_argument("--offload", action="store_true")
    ap.add_argument("--gradient_checkpointing", action="store_true")
    ap.add_argument("--static_cache", action="store_true", help="rollouts with the static KV cache path")
    ap.add_argument("--offload_idle_models", action="store_true",
                    help="reference, reward model and critic leave device memory while a phase does not use them")
    ap.add_argument("--bandwidth_gbs", type=float, default=3350.0,
                    help="memory bandwidth for the decode floor (GB/s; H100 SXM HBM3 about 3350)")
    ap.add_argument("--json", default=None, help="append the JSON line to this file")
    ap.add_argument("--local_rank", type=int, default=-1)
    a = ap.parse_args(argv)

    from training.utils.distributed import device, init_distributed, is_main, world_size
    from training.utils.model import end_scores, load_tokenizer
    from training.utils.rl.advantages import algorithm
    from training.utils.rl.experience import ExperienceMaker
    from training.utils.rl.residency import Residency
    from training.utils.rl.hooks import KLCoef
    from training.utils.rl.models import Models
    from training.utils.rl.trainer import RLTrainer

    init_distributed()
    dev = device()
    gpu = dev.type == "cuda"
    a.actor = a.actor or ("opt-1.3b" if gpu else "cpu-actor")
    a.critic = a.critic or ("opt-350m" if gpu else "cpu-critic")
    a.prompt_len = a.prompt_len or (256 if gpu else 64)
    a.answer_len = a.answer_len or (256 if gpu else 64)
    a.batch = a.batch or (16 if gpu else 8)
    a.train_batch = a.train_batch or a.batch
    tok = load_tokenizer("tiny")
    cfg, he, critic, ref, rm, plain = build(a, tok, dev)
    cfg.rl.rollout.static_cache = a.static_cache
    p_actor, p_critic = nparams(he.engine.module), nparams(critic.module)
    weight_bytes = p_actor * next(he.engine.module.parameters()).element_size()

    def reward_fn(seq, attn, pos, end, batch):
        return end_scores(rm(seq, attn, pos), end)

    resident = Residency(a.offload_idle_models, dev, {"ref": ref, "critic": critic, "reward:0": rm})
    algo = algorithm(cfg.rl)
    models = Models(he, reference=ref, critic=critic)
    kl = KLCoef(cfg.rl.kl, a.batch)
    trainer = RLTrainer(cfg, algorithm=algo, models=models, kl=kl, residency=resident)
    maker = ExperienceMaker(cfg, algorithm=algo, models=models, reward_fn=reward_fn, tokenizer=tok, kl=kl,
                            residency=resident)
    maker.settings.min_new_tokens = a.answer_len          # fixed answer length
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(10, min(len(tok), 49000) - 10, (a.batch, a.prompt_len), generator=g).to(dev)
    mask = torch.ones_like(prompts)
    B, P, A = a.batch, a.prompt_len, a.answer_len
    L = P + A
    # the rollout paths first, while the copy outside DeepSpeed still has the actor's weights
    secs, equal = rollout_paths(a, tok, he, plain, prompts, mask)
    del plain                    # the comparison copy is done with: it would count in every phase's memory
    rec = {"gen": [], "exp": [], "train": [], "step": []}
    peak = {"generation": 0.0, "experience": 0.0, "training": 0.0}
    generate = he.generate

    def measured_generate(*args):          # the generation phase's own peak, inside the experience maker
        reset_phase_peak(dev)
        out = generate(*args)
        peak["generation"] = max(peak["generation"], phase_peak_gb(dev))
        reset_phase_peak(dev)
        return out
    he.generate = measured_generate
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for i in range(a.warmup + a.steps):
        sync(dev)
        t0 = time.perf_counter()
        exp, m = maker.make({"input_ids": prompts, "attention_mask": mask})
        sync(dev)
        peak["experience"] = max(peak["experience"], phase_peak_gb(dev))
        t1 = time.perf_counter()
        reset_phase_peak(dev)
        trainer.train([exp], i, a.train_batch, dev)
        sync(dev)
        peak["training"] = max(peak["training"], phase_peak_gb(dev))
        t2 = time.perf_counter()
        if i >= a.warmup:
            assert int(exp.action_mask.sum()) == B * A, "answers were not the fixed length"
            rec["gen"].append(m["generation_s"])
            rec["exp"].append(t1 - t0 - m["generation_s"])
            rec["train"].append(t2 - t1)
            rec["step"].append(t2 - t0)
    mean = {k: sum(v) / len(v) for k, v in rec.items()}
    # FLOPs: 2 x params per token for a forward pass, 6 x for forward + backward
    gen_flops = 2 * p_actor * B * L
    exp_flops = 2 * (2 * p_actor + 2 * p_critic) * B * L
    train_flops = 6 * (p_actor + p_critic) * B * L
    res = {
        "device": torch.cuda.get_device_name(dev) if gpu else "cpu",
        "ranks": world_size(),
        "dtype": str(next(he.engine.module.parameters()).dtype).replace("torch.", ""),
        "actor": a.actor,
        "critic": a.critic,
        "actor_params_m": round(p_actor / 1e6, 1),
        "critic_params_m": round(p_critic / 1e6, 1),
        "batch": B,
        "prompt_len": P,
        "answer_len": A,
        "actor_zero_stage": a.actor_zero_stage,
        "critic_zero_stage": a.critic_zero_stage,
        "steps": a.steps,
        "generation_s": round(mean["gen"], 3),
        "generation_tokens_per_s": round(B * A / mean["gen"], 1),
        "experience_s": round(mean["exp"], 3),
        "training_s": round(mean["train"], 3),
        "training_tokens_per_s": round(B * L / mean["train"], 1),
        "step_s": round(mean["step"], 3),
        "samples_per_s": round(B * world_size() / mean["step"], 3),
        "tflops": {
            "generation": round(gen_flops / mean["gen"] / 1e12, 4),
            "experience": round(exp_flops / mean["exp"] / 1e12, 4),
            "training": round(train_flops / mean["train"] / 1e12, 4),
            "end_to_end": round((gen_flops + exp_flops + train_flops) / mean["step"] / 1e12, 4),
        },
        "peak_memory_gb": round(max(peak_memory_gb(dev), *peak.values()), 3),
        "offload_idle_models": a.offload_idle_models,
        "phase_peak_memory_gb": {k: round(v, 3) for k, v in peak.items()},
        # one decode step reads every actor weight once: that read at --bandwidth_gbs is the floor
        "decode_ms_per_step": round(secs["hybrid_engine"] / A * 1e3, 3),
        "decode_floor_ms": round(weight_bytes / (a.bandwidth_gbs * 1e9) * 1e3, 3),
        "rollout_s": {k: round(v, 3) for k, v in secs.items()},
        "ratio_plain_over_he": round(secs["plain_hf_generate"] / secs["hybrid_engine"], 3),
        "ratio_engine_generate_over_he": round(secs["engine_generate"] / secs["hybrid_engine"], 3),
        "greedy_equal_to_plain": equal,
    }
    # how close to this machine's limits (scripts/bench/machine.py; on a GPU the given --bandwidth_gbs)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import probe

    m = {"memory_gbps": a.bandwidth_gbs, "matmul_gflops": None} if gpu else probe()
    res["machine"] = m
    res["decode_weight_gbs"] = round(weight_bytes / (secs["hybrid_engine"] / A) / 1e9, 3)
    res["decode_bandwidth_fraction"] = round(res["decode_weight_gbs"] / m["memory_gbps"], 4)
    res["training_matmul_fraction"] = (round(train_flops / mean["train"] / 1e9 / m["matmul_gflops"], 4)
                                       if m["matmul_gflops"] else None)
    if is_main():
        line = json.dumps(res)
        print(line)
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(line + "\n")
        print(table(res))
    return res


def table(r: dict) -> str:
    t = r["tflops"]
    rows = [
        (
            "models",
            f"actor {r['actor']} ({r['actor_params_m']}M, ZeRO-{r['actor_zero_stage']}), critic {r['critic']} "
            f"({r['critic_params_m']}M, ZeRO-{r['critic_zero_stage']}), {r['dtype']}, {r['ranks']} rank(s), "
            f"{r['device']}",
        ),
        ("batch", f"{r['batch']} prompts x ({r['prompt_len']} + {r['answer_len']}) tokens"),
        ("generation", f"{r['generation_s']} s, {r['generation_tokens_per_s']} tokens/s, {t['generation']} TFLOP/s"),
        ("experience (actor, ref, critic, reward forwards)", f"{r['experience_s']} s, {t['experience']} TFLOP/s"),
        (
            "training (actor + critic)",
            f"{r['training_s']} s, {r['training_tokens_per_s']} tokens/s, {t['training']} TFLOP/s",
        ),
        ("end to end", f"{r['step_s']} s per step, {r['samples_per_s']} samples/s, {t['end_to_end']} TFLOP/s"),
        ("peak memory", f"{r['peak_memory_gb']} GiB"),
        (
            "peak memory per phase" + (" (idle models offloaded)" if r["offload_idle_models"] else ""),
            ", ".join(f"{k} {v} GiB" for k, v in r["phase_peak_memory_gb"].items()),
        ),
        (
            "decode step (greedy rollout / answer tokens)",
            f"{r['decode_ms_per_step']} ms; weight-read floor "
            f"{r['decode_floor_ms']} ms; weights read at "
            f"{r['decode_weight_gbs']} GB/s = "
            f"{r['decode_bandwidth_fraction']:.1%} of the memory bandwidth",
        ),
        (
            "training against the machine's fp32 matmul",
            "-" if r["training_matmul_fraction"] is None else f"{r['training_matmul_fraction']:.1%}",
        ),
        ("rollout: Hybrid Engine", f"{r['rollout_s']['hybrid_engine']} s"),
        (
            "rollout: plain HF generate",
            f"{r['rollout_s']['plain_hf_generate']} s ({r['ratio_plain_over_he']}x the HE time)",
        ),
        (
            "rollout: generate through the engine",
            f"{r['rollout_s']['engine_generate']} s ({r['ratio_engine_generate_over_he']}x the HE time)",
        ),
        ("greedy tokens equal to plain HF", ", ".join(f"{k}: {v}" for k, v in r["greedy_equal_to_plain"].items())),
    ]
    return "\n| phase | measured |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


if __name__ == "__main__":
    main()
