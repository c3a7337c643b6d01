"""The tables of ``vs_trl.py``'s stage works: loop and process times, ratios, FLOP rates, RL phases."""
from __future__ import annotations

import statistics

SIDES = {"ours": "this project", "trl": "TRL"}
NAMES = {"sft": "SFT", "rm": "reward model", "dpo": "DPO", "grpo": "GRPO", "rloo": "RLOO"}


def table(results: dict) -> str:
    fmt = lambda s: f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"
    m = results.get("machine", {})
    lines = [f"versions: {results['versions']}; machine: fp32 matmul {m.get('matmul_gflops')} GFLOP/s, "
             f"memory {m.get('memory_gbps')} GB/s", "",
             "| work | side | loop s (median) | process s (median) | samples/s loop | samples/s process | "
             "loop model GFLOP/s (of matmul rate) | pass-rate |",
             "|---|---|---|---|---|---|---|---|"]
    for work, runs in results["runs"].items():
        for side in SIDES:
            rs = [r[side] for r in runs if side in r]
            if not rs:
                continue
            med = lambda k, rs=rs: statistics.median(r[k] for r in rs)
            pr = ", ".join(f"{r['pass_rate']:.3f}" for r in rs if "pass_rate" in r) or "-"
            rate = f"{med('gflops_loop'):.1f} ({med('matmul_fraction'):.0%})" if "gflops_loop" in rs[0] else "-"
            lines.append(f"| {NAMES[work]} | {SIDES[side]} | {med('loop_s'):.1f} | "
                         f"{med('process_s'):.1f} | {med('samples_per_s_loop'):.3f} | "
                         f"{med('samples_per_s_process'):.3f} | {rate} | {pr} |")
        ratio = results.get("ratios", {}).get(work)
        if ratio:
            lines.append(f"| {NAMES[work]} | **TRL time / ours, median (range) of {ratio['loop']['n']}** | "
                         f"**{fmt(ratio['loop'])}** | **{fmt(ratio['process'])}** | | | | |")
    phased = [(w, side, [r[side] for r in runs if side in r]) for w, runs in results["runs"].items() for side in SIDES]
    phased = [(w, side, rs) for w, side, rs in phased if rs and "generation_s" in rs[0]]    # the RL works
    if phased:
        lines += ["", "| RL loop, median s | side | generation | scoring + log-probs around it | training | loop |",
                  "|---|---|---|---|---|---|"]
        for w, side, rs in phased:
            med = lambda k, rs=rs: statistics.median(r[k] for r in rs)
            lines.append(f"| {NAMES[w]} | {SIDES[side]} | {med('generation_s'):.1f} | "
                         f"{med('experience_s'):.1f} | {med('train_s'):.1f} | {med('loop_s'):.1f} |")
    if "sft_pass_rate" in results:
        lines.append(
            f"\nSFT start: pass-rate {results['sft_pass_rate']:.3f} on {results['eval_prompts']} held-out prompts"
        )
    return "\n".join(lines)

