"""Base vs finetuned answers, side by side, for a prompt list or file.

    python -m inference.prompt_eval --baseline smollm2-135m --finetune output/step3-models/smollm2-135m/actor
    python -m inference.prompt_eval --model_name_or_path_baseline 1.3b \\
        --model_name_or_path_finetune output/actor-models/1.3b --prompts prompts.txt --json side_by_side.json

Prompts: ``--prompt`` (repeatable), ``--prompts FILE`` (a ``.txt`` with one prompt per line, or
``.json``/``.jsonl`` rows with a ``prompt`` field), or by default the first ``--n`` prompts
of the bundled dev set. Prompts the bundled checker understands get a pass/fail column.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from inference.passrate import eval_prompts, generate
from training.utils.data.checker import parse_task, check
from training.utils.model import load_causal_lm, load_tokenizer


def read_prompts(path: str) -> list[str]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text ({e})") from e
    if p.suffix == ".txt":
        out = [ln.strip() for ln in text.splitlines() if ln.strip()]
    else:
        if p.suffix == ".json":
            rows = json.loads(text)
            if not isinstance(rows, list):
                raise ValueError(f"{p}: expected a JSON list of rows")
        else:
            rows = []
            for i, ln in enumerate(text.splitlines(), 1):
                if ln.strip():
                    try:
                        rows.append(json.loads(ln))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{p}: row {i}: not valid JSON ({e.msg})") from e
        out = []
        for i, r in enumerate(rows, 1):
            if isinstance(r, str):
                out.append(r)
            elif isinstance(r, dict) and isinstance(r.get("prompt"), str) and r["prompt"].strip():
                out.append(r["prompt"])
            else:
                raise ValueError(f"{p}: row {i}: field 'prompt' missing or not a non-empty string")
    if not out:
        raise ValueError(f"{p}: no prompts")
    return out


def answers_of(model_name: str, prompts: list[str], max_new_tokens: int, template: str, **gen) -> list[str]:
    tok = load_tokenizer(model_name, padding_side="left")
    model = load_causal_lm(model_name, tok)
    return generate(model, tok, prompts, max_new_tokens, template=template, **gen)


def side_by_side(prompts: list[str], models: dict[str, list[str]]) -> str:
    lines = []
    for i, p in enumerate(prompts):
        lines.append(f"==== prompt {i + 1}: {p}")
        for name, answers in models.items():
            verdict = (" [pass]" if check(p, answers[i]) else " [fail]") if parse_task(p) else ""
            lines.append(f"---- {name}{verdict}:\n{answers[i]}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", "--model_name_or_path_baseline", dest="baseline", required=True)
    ap.add_argument("--finetune", "--model_name_or_path_finetune", dest="finetune", required=True)
    ap.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    ap.add_argument("--prompts", help="file of prompts (.txt lines, .json/.jsonl rows with 'prompt')")
    ap.add_argument("--n", type=int, default=8, help="prompts of the bundled dev set when none are given")
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--num_beams", type=int, default=1)
    ap.add_argument("--template", default="auto", choices=("auto", "chat", "plain"))
    ap.add_argument("--json", help="write prompts and both answers here")
    a = ap.parse_args(argv)
    prompts = list(a.prompt) + (read_prompts(a.prompts) if a.prompts else [])
    prompts = prompts or eval_prompts("dev", a.n)
    torch.manual_seed(0)
    gen = {"num_beams": a.num_beams}
    models = {f"baseline ({a.baseline})": answers_of(a.baseline, prompts, a.max_new_tokens, a.template, **gen),
              f"finetune ({a.finetune})": answers_of(a.finetune, prompts, a.max_new_tokens, a.template, **gen)}
    print(side_by_side(prompts, models))
    rows = [{"prompt": p, "baseline": models[f"baseline ({a.baseline})"][i],
             "finetune": models[f"finetune ({a.finetune})"][i]} for i, p in enumerate(prompts)]
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return {"rows": rows}


if __name__ == "__main__":
    main(sys.argv[1:])
