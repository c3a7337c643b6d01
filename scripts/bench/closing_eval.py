"""Seconds the closing evaluation costs: today's form on the new test set against the form it replaced.

    python scripts/bench/closing_eval.py --run <train.py output dir> [--reps 2]

Both forms answer greedily with the run's base, SFT and RL models (loading included, no answer
cache) and score the answers with its reward model, alternating in one process so the machine's
drift lands on both:

- ``before``: transformers' ``generate`` on left-padded batches of 32 (the Hybrid Engine's path),
  the first 96 prompts, the reward model scoring all 288 answers (the closing report before the
  test set);
- ``after``: the evaluation fast path (``inference/greedy.py``) in batches of 288 on all 576 test
  prompts, the reward model scoring the answers to the first 108 (the closing report now).

Prints a JSON line and a markdown table, and how many of the first 96 prompts' answers the two
forms agree on (they should all agree: the same greedy tokens).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def answer(model_dir: str, prompts: list[str], fast: bool, batch_size: int) -> list[str]:
    from inference.passrate import generate
    from training.utils.data.format import prompt_token_ids, render_prompt, to_messages
    from training.utils.generation import GenerationSettings, generate_answers
    from training.utils.model import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_dir, padding_side="left")
    model = load_causal_lm(model_dir, tok).eval()
    if fast:
        return generate(model, tok, prompts, 48, batch_size)
    ids = [prompt_token_ids(tok, render_prompt(tok, to_messages(p), "auto"), "auto") for p in prompts]
    return generate_answers(
        model, tok, ids, GenerationSettings(max_new_tokens=48, do_sample=False, batch_size=batch_size)
    )


def one_pass(models: dict[str, str], reward_model: str, prompts: list[str], fast: bool, batch_size: int,
             rm_prompts: int) -> tuple[dict, dict[str, list[str]]]:
    from inference.rw_eval import Scorer

    t0 = time.time()
    answers = {name: answer(d, prompts, fast, batch_size) for name, d in models.items()}
    t1 = time.time()
    pairs = [(p, a) for ans in answers.values() for p, a in zip(prompts[:rm_prompts], ans[:rm_prompts])]
    Scorer(reward_model).score(pairs, batch_size=32)
    t2 = time.time()
    return {"generate_s": t1 - t0, "rm_s": t2 - t1, "total_s": t2 - t0, "prompts": len(prompts),
            "rm_answers": len(pairs)}, answers


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a train.py output directory (its report.json names the models)")
    ap.add_argument("--reps", type=int, default=2, help="passes of each form, alternating")
    ap.add_argument("--json", default="", help="write the figures here too")
    a = ap.parse_args(argv)
    from inference.passrate import eval_prompts

    report = json.loads((Path(a.run) / "report.json").read_text())
    models = {"base": "smollm2-135m", **{k: v for k, v in report["models"].items() if k != "reward"}}
    rm = report["models"]["reward"]
    test = eval_prompts("test")
    forms = {"before": (test[:96], False, 32, 96), "after": (test, True, 288, 108)}
    runs: dict[str, list[dict]] = {k: [] for k in forms}
    last = {}
    for rep in range(a.reps):
        for name, (prompts, fast, bs, rm_n) in forms.items():
            fig, last[name] = one_pass(models, rm, prompts, fast, bs, rm_n)
            runs[name].append(fig)
            print(f"pass {rep + 1} {name}: {json.dumps({k: round(v, 1) for k, v in fig.items()})}", flush=True)
    agree = sum(x == y for m in models for x, y in zip(last["before"][m], last["after"][m][:96]))
    med = {
        k: {f: statistics.median(r[f] for r in v) for f in ("generate_s", "rm_s", "total_s")} for k, v in runs.items()
    }
    out = {"models": models, "reps": a.reps, "median": med, "runs": runs, "answers_agree_first_96": agree,
           "answers_compared": 96 * len(models)}
    print(json.dumps(out))
    print(
        "\n| form | prompts x models | answers scored by the RM | generate s | RM s | total s (median) |"
        "\n|---|---|---|---|---|---|"
    )
    for k in forms:
        r = runs[k][0]
        print(f"| {k} | {r['prompts']} x {len(models)} | {r['rm_answers']} | {med[k]['generate_s']:.1f} | "
              f"{med[k]['rm_s']:.1f} | {med[k]['total_s']:.1f} |")
    print(f"\nanswers equal on the first 96 prompts: {agree} of {96 * len(models)}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
