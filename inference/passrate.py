"""Batch generation on held-out prompts of the bundled dataset, scored by its checker.

    python -m inference.passrate --model output/actor-models/smollm2-135m --n 200
    python -m inference.passrate --model smollm2-135m --n 200 --json base.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from inference import answer_cache

from training.utils.data.bundled import train_eval
from training.utils.data.checker import check, pass_rate
from training.utils.data.format import prompt_token_ids, render_prompt, to_messages
from training.utils.generation import GenerationSettings, generate_answers
from training.utils.model import load_causal_lm, load_tokenizer
from training.utils.model.loader import local_path, resolve


def held_out_prompts(n: int, size: int = 4000, seed: int = 0) -> list[str]:
    """The first ``n`` eval prompts of the bundled dataset (never used for training)."""
    _, ev = train_eval(size, seed)
    if n > len(ev):
        raise ValueError(f"asked for {n} held-out prompts; the bundled eval split has {len(ev)}")
    return [r["prompt"] for r in ev[:n]]


def fresh_prompts(n: int, size: int = 4000, seed: int = 0, skip: int = 96) -> list[str]:
    """``n`` held-out prompts of a second set, for a final check: eval-split prompts after the first
    ``skip`` (the ones reports and presets are read on), tasks taken in turn so every task that has
    prompts left is represented. Like every eval-split prompt, none is in any training slice."""
    _, ev = train_eval(size, seed)
    by_task: dict[str, list[str]] = {}
    for r in ev[skip:]:
        by_task.setdefault(r["task"], []).append(r["prompt"])
    out, i = [], 0
    while len(out) < n:
        column = [ps[i] for _, ps in sorted(by_task.items()) if i < len(ps)]
        if not column:
            raise ValueError(f"asked for {n} fresh prompts; the bundled eval split has {len(out)} after the first {skip}")
        out += column[:n - len(out)]
        i += 1
    return out


def generate(model, tok, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 16,
             template: str = "auto", progress: str = "", num_beams: int = 1) -> list[str]:
    """Greedy (or beam-search) answers, EOS-terminated and special tokens stripped, to user prompts through
    the project's one generate; ``progress`` labels a progress bar (none when empty)."""
    ids = [prompt_token_ids(tok, render_prompt(tok, to_messages(p), template), template) for p in prompts]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
                                  batch_size=batch_size)
    return generate_answers(model, tok, ids, settings, progress)


def cacheable_dir(model_name: str) -> str | None:
    """The local directory whose files define ``model_name``, or None (random ``tiny`` models, hub ids)."""
    src = resolve(model_name)
    if src.kind == "tiny" or (src.kind == "hf" and not Path(src.path).is_dir()):
        return None
    return local_path(model_name)


def evaluate_model(model_name: str, n: int = 200, max_new_tokens: int = 64, batch_size: int = 16,
                   template: str = "auto", prompts: list[str] | None = None, progress: str = "",
                   cache: bool = False) -> dict:
    """Greedy answers of ``model_name`` to ``prompts`` (default: the first ``n`` held-out prompts),
    scored by the checker: pass-rate, per-task rates, and every prompt/answer/verdict. With ``cache``,
    answers of a local model are read from / written to ``answer_cache`` (keyed by the model's file
    contents, the prompts and the settings); ``cached`` in the result says whether they were reused."""
    prompts = prompts if prompts is not None else held_out_prompts(n)
    t0 = time.time()
    key, answers = None, None
    if cache and (d := cacheable_dir(model_name)) is not None:
        key = answer_cache.answers_key(d, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                       template=template)
        answers = answer_cache.load(key)
    cached = answers is not None
    if not cached:
        tok = load_tokenizer(model_name, padding_side="left")
        model = load_causal_lm(model_name, tok)
        answers = generate(model, tok, prompts, max_new_tokens, batch_size, template, progress)
        if key is not None:
            answer_cache.store(key, answers)
    res = pass_rate(prompts, answers)
    res.update(model=model_name, seconds=round(time.time() - t0, 1), cached=cached,
               answers=[{"prompt": p, "answer": a, "pass": check(p, a)} for p, a in zip(prompts, answers)])
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, nargs="+", help="model names or directories")
    ap.add_argument("--n", type=int, default=200, help="held-out prompts")
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--template", default="auto", choices=("auto", "chat", "plain"))
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--cache", action="store_true",
                    help="reuse greedy answers of an earlier run with the same model files, prompts and settings")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    results = [evaluate_model(m, a.n, a.max_new_tokens, a.batch_size, a.template, cache=a.cache) for m in a.model]
    for r in results:
        tasks = "  ".join(f"{k} {v:.2f}" for k, v in r["per_task"].items())
        print(f"{r['model']}: pass-rate {r['pass_rate']:.3f} on {r['n']} held-out prompts ({r['seconds']} s)\n  {tasks}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return {"results": results}


if __name__ == "__main__":
    main(sys.argv[1:])
