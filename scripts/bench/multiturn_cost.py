"""The cost of a multi-turn rollout against a single-turn one, per generated token, in one run.

The same model answers the same bundled math prompts (dev set, sampled at temperature 1, several answers
per prompt) two ways, in alternating repetitions:

- single-turn: one answer per row, no tools (the prompt as stage 3 renders it without tools);
- multi-turn: the calculator offered, calls run, up to ``--max_turns`` turns (the prompt then carries
  the tools' system message, and every later turn re-reads the conversation so far).

    python scripts/bench/multiturn_cost.py --model bench-out/learning-grpo-tools/seed1/actor-models/smollm2-135m

Prints a JSON line and a markdown table: seconds and generated tokens per rollout, seconds per generated
token, turns and calls per rollout, and the multi-turn / single-turn ratio of seconds per generated token
(median over the repetitions). Give ``scripts/bench/stage_steps.py`` figures of the same day beside it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="a model that has learned the calculator's calls")
    ap.add_argument("--prompts", type=int, default=16, help="math prompts of the dev set")
    ap.add_argument("--samples", type=int, default=4, help="answers per prompt")
    ap.add_argument("--max_new_tokens", type=int, default=48, help="tokens per model turn")
    ap.add_argument("--max_turns", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args(argv)

    from training.utils.config import ToolsConfig
    from training.utils.data.bundled import eval_rows
    from training.utils.data.collate import pad_sequences
    from training.utils.data.format import prompt_token_ids, render_prompt, to_messages
    from training.utils.generation import GenerationSettings, PlainHFBackend
    from training.utils.model import load_causal_lm, load_tokenizer
    from training.utils.rl.multiturn import rollout_from_config

    tok = load_tokenizer(a.model, padding_side="left")
    model = load_causal_lm(a.model, tok).eval()
    backend = PlainHFBackend(model, tok)
    prompts = [r["prompt"] for r in eval_rows("dev") if r["task"] == "math"][:a.prompts]
    rows = [p for p in prompts for _ in range(a.samples)]
    settings = GenerationSettings(max_new_tokens=a.max_new_tokens, do_sample=True, temperature=1.0,
                                  return_logprobs=True)
    ids, mask = pad_sequences([prompt_token_ids(tok, render_prompt(tok, to_messages(p))) for p in rows],
                              tok.pad_token_id, left=True)
    single = rollout_from_config(ToolsConfig(), backend, tok)
    multi = rollout_from_config(ToolsConfig(tools=["calculator"], max_turns=a.max_turns,
                                            turn_stop=["</tool_call>"]), backend, tok)
    batch = {"input_ids": ids, "attention_mask": mask, "messages": [to_messages(p) for p in rows],
             "columns": [{} for _ in rows]}
    runs: dict[str, list[dict]] = {"single": [], "multi": []}
    for rep in range(a.repeats):
        for name in (("single", "multi") if rep % 2 == 0 else ("multi", "single")):
            torch.manual_seed(a.seed + rep)
            t0 = time.perf_counter()
            _, g = (single if name == "single" else multi)(dict(batch), settings)
            secs = time.perf_counter() - t0
            tokens = float(g.action_mask.sum())
            runs[name].append({"seconds": secs, "generated_tokens": tokens, "s_per_token": secs / max(tokens, 1.0),
                               "turns": g.metrics.get("turns_per_rollout", 1.0),
                               "calls": g.metrics.get("calls_per_rollout", 0.0),
                               "call_success_rate": g.metrics.get("call_success_rate")})
    n = len(rows)
    out = {"model": a.model, "rollouts": n, "repeats": a.repeats, "max_new_tokens": a.max_new_tokens,
           "max_turns": a.max_turns}
    for name, rs in runs.items():
        out[name] = {"s_per_rollout": statistics.median(r["seconds"] for r in rs) / n,
                     "tokens_per_rollout": statistics.median(r["generated_tokens"] for r in rs) / n,
                     "s_per_generated_token": statistics.median(r["s_per_token"] for r in rs),
                     "turns_per_rollout": statistics.median(r["turns"] for r in rs),
                     "calls_per_rollout": statistics.median(r["calls"] for r in rs), "runs": rs}
    out["ratio_s_per_token"] = out["multi"]["s_per_generated_token"] / out["single"]["s_per_generated_token"]
    print(json.dumps(out))
    print("\n| rollout | s / rollout | generated tokens / rollout | ms / generated token | turns | calls |")
    print("|---|---|---|---|---|---|")
    for name in ("single", "multi"):
        r = out[name]
        print(
            f"| {name}-turn | {r['s_per_rollout']:.2f} | {r['tokens_per_rollout']:.1f} | "
            f"{1000 * r['s_per_generated_token']:.1f} | {r['turns_per_rollout']:.2f} | {r['calls_per_rollout']:.2f} |"
        )
    print(f"\nmulti / single, seconds per generated token (median of {a.repeats}): {out['ratio_s_per_token']:.2f}x")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return out


if __name__ == "__main__":
    main()
