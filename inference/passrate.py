"""Batch generation on an evaluation set of the bundled dataset, scored by its checker, with 95%
intervals (overall and per task) and, for two or more models, each model's gain over the first.

    python -m inference.passrate --model output/actor-models/smollm2-135m --set dev
    python -m inference.passrate --model smollm2-135m output/actor-models/smollm2-135m --set test --json t.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from inference import answer_cache
from inference.greedy import greedy_token_ids

from inference.intervals import interval_text, paired_gain, rate_interval
from training.utils.data.bundled import eval_rows
from training.utils.data.checker import check, parse_task
from training.utils.data.format import prompt_token_ids, render_prompt, to_messages
from training.utils.generation import GenerationSettings, generate_answers
from training.utils.model import load_causal_lm, load_tokenizer
from training.utils.model.loader import local_path, resolve


def eval_prompts(split: str = "test", n: int = 0) -> list[str]:
    """The bundled evaluation set ``split`` (``dev``: presets and levers are chosen on it; ``test``:
    results are reported on it), or its first ``n`` prompts (still task-balanced: the set is
    interleaved by task). No prompt shares wording or parameters with any training row."""
    rows = eval_rows(split)
    if n > len(rows):
        raise ValueError(f"asked for {n} prompts of the {split!r} set, which has {len(rows)}")
    return [r["prompt"] for r in rows[:n or len(rows)]]


def scored(answers: list[dict]) -> dict:
    """Pass-rates of checked answers ({prompt, pass}) with 95% intervals: overall (bootstrap over prompts
    within each task) and per task."""
    tasks = [(t.name if (t := parse_task(a["prompt"])) else "unknown") for a in answers]
    passes = [int(a["pass"]) for a in answers]
    out = {"pass_rate": sum(passes) / len(passes), "n": len(passes),
           "pass_rate_ci": list(rate_interval(passes, tasks)), "per_task": {}, "per_task_ci": {}, "per_task_n": {}}
    for t in sorted(set(tasks)):
        p = [x for x, g in zip(passes, tasks) if g == t]
        out["per_task"][t] = sum(p) / len(p)
        out["per_task_ci"][t] = list(rate_interval(p))
        out["per_task_n"][t] = len(p)
    return out


def gain(before: list[dict], after: list[dict]) -> dict:
    """{gain, lo, hi, n, per_task: {task: {gain, lo, hi, n}}}: ``after``'s pass-rate minus ``before``'s on
    the same prompts, with paired-bootstrap 95% intervals."""
    if [a["prompt"] for a in before] != [a["prompt"] for a in after]:
        raise ValueError("a gain compares two models' answers to the same prompts in the same order")
    tasks = [(t.name if (t := parse_task(a["prompt"])) else "unknown") for a in before]
    b, a = [int(x["pass"]) for x in before], [int(x["pass"]) for x in after]
    out = paired_gain(b, a, tasks)
    out["per_task"] = {t: paired_gain([x for x, g in zip(b, tasks) if g == t], [x for x, g in zip(a, tasks) if g == t])
                       for t in sorted(set(tasks))}
    return out


def generate(model, tok, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 288,
             template: str = "auto", progress: str = "", num_beams: int = 1, vllm_dir: str = "") -> list[str]:
    """Greedy (or beam-search) answers, EOS-terminated and special tokens stripped, to user prompts;
    ``progress`` labels a progress bar (none when empty). Greedy answers take the evaluation fast path
    (``inference/greedy.py``: the shared prefix once, finished rows dropped), or with ``vllm_dir`` vLLM
    serving that model directory; beams the project's one generate."""
    ids = [prompt_token_ids(tok, render_prompt(tok, to_messages(p), template), template) for p in prompts]
    if vllm_dir and num_beams == 1:
        from training.utils.vllm_engine import greedy_token_ids as vllm_greedy

        answers = vllm_greedy(vllm_dir, ids, tok.eos_token_id, max_new_tokens)
        return [tok.decode(a, skip_special_tokens=True).strip() for a in answers]
    if num_beams == 1:
        from tqdm.auto import tqdm

        with tqdm(total=len(ids), desc=progress, unit="prompt", disable=not progress, dynamic_ncols=True) as bar:
            answers = greedy_token_ids(model, ids, tok.eos_token_id, max_new_tokens, batch_size, bar)
        return [tok.decode(a, skip_special_tokens=True).strip() for a in answers]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
                                  batch_size=batch_size)
    return generate_answers(model, tok, ids, settings, progress)


def generate_with_tools(model, tok, prompts: list[str], tools_cfg, max_new_tokens: int = 64,
                        batch_size: int = 64, progress: str = "") -> list[dict]:
    """Greedy multi-turn answers with the tools (or environment) of ``tools_cfg`` (the config's ``tools``
    section): per prompt {answer: the last turn's text, conversation, tool_calls}; ``max_new_tokens`` is
    per turn."""
    from tqdm.auto import tqdm

    from training.utils.generation import PlainHFBackend
    from training.utils.rl.multiturn import rollout_from_config

    rollout = rollout_from_config(tools_cfg, PlainHFBackend(model, tok), tok)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False)
    dev, out = next(model.parameters()).device, []
    with tqdm(total=len(prompts), desc=progress, unit="prompt", disable=not progress, dynamic_ncols=True) as bar:
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i:i + batch_size]
            batch = {"input_ids": torch.zeros(len(chunk), 1, dtype=torch.long, device=dev),
                     "messages": [to_messages(p) for p in chunk], "columns": [{} for _ in chunk]}
            batch, _ = rollout(batch, settings)
            out += [{"answer": a, "conversation": c["conversation"], "tool_calls": c["tool_calls"]}
                    for a, c in zip(batch["answers"], batch["columns"])]
            bar.update(len(chunk))
    return out


def _vllm_dir(model_name: str) -> str:
    if resolve(model_name).kind == "tiny":
        raise ValueError(f"--engine vllm serves saved models; {model_name!r} is built in memory")
    return local_path(model_name)


EVAL_ENGINES = {          # --engine: model name -> the directory vLLM serves ("" : transformers in this process)
    "hf": lambda model_name: "",
    "vllm": _vllm_dir,
}


def cacheable_dir(model_name: str) -> str | None:
    """The local directory whose files define ``model_name``, or None (random ``tiny`` models, hub ids)."""
    src = resolve(model_name)
    if src.kind == "tiny" or (src.kind == "hf" and not Path(src.path).is_dir()):
        return None
    return local_path(model_name)


def evaluate_model(model_name: str, n: int = 0, max_new_tokens: int = 64, batch_size: int = 288,
                   template: str = "auto", prompts: list[str] | None = None, progress: str = "",
                   cache: bool = False, tools_cfg=None, engine: str = "hf") -> dict:
    """Greedy answers of ``model_name`` to ``prompts`` (default: the first ``n`` prompts of the test set),
    scored by the checker: pass-rate and per-task rates with 95% intervals, and every prompt/answer/verdict.
    With ``cache``,
    answers of a local model are read from / written to ``answer_cache`` (keyed by the model's file
    contents, the prompts and the settings; never with tools); ``cached`` says whether they were reused.
    With ``tools_cfg`` (a config's ``tools`` section naming tools or an environment) the answers are
    multi-turn conversations, and each answer also holds its ``conversation`` and ``tool_calls``. ``engine``
    ``vllm`` answers single-turn prompts of a saved model with vLLM (``EVAL_ENGINES``)."""
    prompts = prompts if prompts is not None else eval_prompts("test", n)
    multi = tools_cfg is not None and bool(tools_cfg.tools or tools_cfg.environment)
    t0 = time.time()
    key, answers = None, None
    if cache and not multi and (d := cacheable_dir(model_name)) is not None:   # tools may answer differently
        key = answer_cache.answers_key(d, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                       template=template, **({"engine": engine} if engine != "hf" else {}))
        answers = answer_cache.load(key)
    cached = answers is not None
    if not cached:
        tok = load_tokenizer(model_name, padding_side="left")
        vllm_dir = EVAL_ENGINES[engine](model_name) if not multi else ""
        model = load_causal_lm(model_name, tok) if not vllm_dir else None
        if multi:
            answers = generate_with_tools(model, tok, prompts, tools_cfg, max_new_tokens, min(batch_size, 64), progress)
        else:
            answers = generate(model, tok, prompts, max_new_tokens, batch_size, template, progress, vllm_dir=vllm_dir)
        if key is not None:
            answer_cache.store(key, answers)
    checked = [{"prompt": p, "answer": a, "pass": check(p, a)} if isinstance(a, str) else
               {"prompt": p, **a, "pass": check(p, a["answer"])} for p, a in zip(prompts, answers)]
    res = scored(checked)
    res.update(model=model_name, seconds=round(time.time() - t0, 1), cached=cached, answers=checked)
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, nargs="+", help="model names or directories")
    ap.add_argument("--set", default="dev", choices=("dev", "test"),
                    help="the evaluation set: dev (choose presets and levers on it) or test (report on it)")
    ap.add_argument("--n", type=int, default=0, help="the set's first N prompts (task-balanced; 0: all)")
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--batch_size", type=int, default=288)
    ap.add_argument("--template", default="auto", choices=("auto", "chat", "plain"))
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--engine", default="hf", choices=tuple(EVAL_ENGINES),
                    help="hf: transformers' greedy fast path; vllm: vLLM serving each saved model")
    ap.add_argument("--cache", action="store_true",
                    help="reuse greedy answers of an earlier run with the same model files, prompts and settings")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    prompts = eval_prompts(a.set, a.n)
    results = [evaluate_model(m, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, template=a.template,
                              prompts=prompts, cache=a.cache, engine=a.engine) for m in a.model]
    for r in results:
        lo, hi = r["pass_rate_ci"]
        tasks = "  ".join(f"{k} {v:.2f}" for k, v in r["per_task"].items())
        print(f"{r['model']}: pass-rate {r['pass_rate']:.3f} (95% {interval_text(lo, hi)} points) on {r['n']} "
              f"{a.set} prompts ({r['seconds']} s)\n  {tasks}")
    for r in results[1:]:
        r["gain"] = g = gain(results[0]["answers"], r["answers"])
        print(f"{r['model']} over {results[0]['model']}: {100 * g['gain']:+.1f} points "
              f"(95% {interval_text(g['lo'], g['hi'], signed=True)})")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return {"results": results}


if __name__ == "__main__":
    main(sys.argv[1:])
