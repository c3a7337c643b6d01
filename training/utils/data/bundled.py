"""The bundled verifiable dataset: a seeded generator of instruction-following rows.

Every row has a ``prompt`` (one of the instructions in ``checker.PATTERNS``), a ``chosen`` answer
that passes ``checker.check``, a ``rejected`` near-miss that fails it, and its ``task``.

Three disjoint splits, cut by what a prompt is about rather than by its text:

- every word list of ``vocab.py`` (topic nouns, start words, end phrases, repeated words, list
  categories, JSON keys) and every arithmetic problem is cut by a hash into a ``train`` pool (70%),
  a ``dev`` pool (10%) and a ``test`` pool (20%); a row draws its parameters from its split's pool
  only, so an evaluation prompt shares no topic, word, phrase, category, key or problem with any
  training row (counts such as "exactly 5 words" are shared: they are the instruction, not the
  subject);
- the last phrasing of each task (``checker.EVAL_ONLY_PHRASINGS``) appears only in ``dev`` and
  ``test``.

``generate(n, seed)`` gives training rows; ``eval_rows("dev")`` (32 prompts per task) is where
presets and levers are chosen, ``eval_rows("test")`` (64 per task) is what results report. Both are
fixed (their own seeds), task-balanced and interleaved by task, so their first ``k`` rows are
balanced too. ``python -m training.utils.data.bundled OUT_DIR [N] [SEED]`` writes ``train.jsonl``,
``eval.jsonl`` (dev) and ``test.jsonl``.
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
from functools import lru_cache
from pathlib import Path

from .checker import EVAL_ONLY_PHRASINGS, PATTERNS, check, math_result, parse_task
from .vocab import (ADJECTIVES, CATEGORIES, END_PHRASES, KEY_VALUES, NOUNS, RAMBLE, REPEAT_WORDS,
                    START_WORDS, TAILS, VERB_PHRASES)

SPLITS = ("train", "dev", "test")
SHARES = {"train": 70, "dev": 10, "test": 20}       # percent of every word list and problem space
EVAL_PER_TASK = {"dev": 32, "test": 64}
EVAL_SEEDS = {"dev": 1001, "test": 2002}
VERSION = 3       # bump when generated rows change: part of the data cache key


def _hash(kind: str, value) -> int:
    return int(hashlib.sha256(f"{kind}:{value}".encode()).hexdigest(), 16)


WORD_LISTS = {"noun": NOUNS, "start": START_WORDS, "end": END_PHRASES, "repeat": REPEAT_WORDS,
              "category": sorted(CATEGORIES), "key": sorted(KEY_VALUES)}


@lru_cache(maxsize=None)
def _pools(kind: str) -> dict[str, tuple]:
    ranked = sorted(WORD_LISTS[kind], key=lambda v: _hash(kind, v))
    n_train = round(len(ranked) * SHARES["train"] / 100)
    n_dev = max(1, round(len(ranked) * SHARES["dev"] / 100))
    cut = {"train": ranked[:n_train], "dev": ranked[n_train:n_train + n_dev], "test": ranked[n_train + n_dev:]}
    order = {v: i for i, v in enumerate(WORD_LISTS[kind])}
    return {s: tuple(sorted(vs, key=order.__getitem__)) for s, vs in cut.items()}


def pool(kind: str, split: str) -> tuple:
    """The values of word list ``kind`` that belong to ``split`` (a fixed hash ranking cut at the
    shares), in list order."""
    return _pools(kind)[split]


def split_of(kind: str, value) -> str:
    """The split that owns ``value`` of a word list, or of the ``math`` problem space (a fixed hash),
    whatever the generator's seed or size."""
    if kind == "math":
        h = _hash(kind, value) % 100
        return "train" if h < SHARES["train"] else "dev" if h < SHARES["train"] + SHARES["dev"] else "test"
    return next(s for s, vs in _pools(kind).items() if value in vs)


def phrasings(task: str, split: str) -> list[str]:
    """The phrasings a row of ``split`` may use: training rows never use the evaluation-only ones."""
    ps = PATTERNS[task]
    return ps[:-EVAL_ONLY_PHRASINGS] if split == "train" else ps


def math_key(a: int, op: str, b: int) -> str:
    """One problem, however its operands are ordered (``3 + 5`` and ``5 + 3`` are the same problem)."""
    if op in "+*":
        a, b = min(a, b), max(a, b)
    return f"{a}{op}{b}"


def _topic(rng: random.Random, split: str) -> str:
    noun = rng.choice(pool("noun", split))
    return noun if rng.random() < 0.25 else f"{rng.choice(ADJECTIVES)} {noun}"


def _sentence(rng: random.Random, topic: str) -> str:
    return f"{topic[0].upper()}{topic[1:]} {rng.choice(VERB_PHRASES)} {rng.choice(TAILS)}."


def _n_words(rng: random.Random, topic: str, n: int) -> str:
    words: list[str] = []
    while len(words) < n:
        words += _sentence(rng, topic).rstrip(".").split()
    return " ".join(words[:n]) + "."


def _task_upper(rng, split):
    t = _topic(rng, split)
    s = _sentence(rng, t)
    bad = s if rng.random() < 0.5 else " ".join(w.upper() if i else w for i, w in enumerate(s.split()))
    if bad == bad.upper():
        bad = s
    return {"topic": t}, s.upper(), bad


def _task_lower(rng, split):
    t = _topic(rng, split)
    s = _sentence(rng, t)
    return {"topic": t}, s.lower(), s if s != s.lower() else s.upper()


def _task_words(rng, split):
    t, n = _topic(rng, split), rng.randint(3, 12)
    good, bad = _n_words(rng, t, n), _n_words(rng, t, n + rng.choice([-1, 1, 2]))
    if n % 2 == 0:  # the other common failure: ignoring the limit and rambling on
        bad = bad.rstrip(".") + " " + RAMBLE
    return {"topic": t, "n": n}, good, bad


def _task_ends(rng, split):
    t, ph = _topic(rng, split), rng.choice(pool("end", split))
    s = _sentence(rng, t).rstrip(".")
    good = f"{s} {ph}."
    bad = f"{s}." if rng.random() < 0.5 else f"{ph[0].upper()}{ph[1:]}, {s[0].lower()}{s[1:]}."
    return {"topic": t, "phrase": ph}, good, bad


def _task_starts(rng, split):
    t, w = _topic(rng, split), rng.choice(pool("start", split))
    s = _sentence(rng, t)
    good = f"{w}, {s[0].lower()}{s[1:]}"
    other = rng.choice([x for x in START_WORDS if x != w])
    bad = s if rng.random() < 0.5 else f"{other}, {s[0].lower()}{s[1:]}"
    return {"topic": t, "word": w}, good, bad


def _task_list(rng, split):
    cat = rng.choice(pool("category", split))
    n = rng.randint(2, min(8, len(CATEGORIES[cat]) - 1))
    items = rng.sample(CATEGORIES[cat], n + 1)
    good = "\n".join(f"- {x}" for x in items[:n])
    r = rng.random()
    if r < 0.4:
        bad = "\n".join(f"- {x}" for x in items[:n - 1])
    elif r < 0.7:
        bad = "\n".join(f"- {x}" for x in items)
    else:
        bad = "\n".join(f"{i + 1}. {x}" for i, x in enumerate(items[:n]))
    return {"category": cat, "n": n}, good, bad


def _task_json(rng, split):
    t = _topic(rng, split)
    keys = pool("key", split)
    k1, k2, k3 = rng.sample(keys, 3)
    good = json.dumps({k: KEY_VALUES[k] for k in (k1, k2, k3)})
    r = rng.random()
    if r < 0.4:
        bad = json.dumps({k: KEY_VALUES[k] for k in (k1, k2)})
    elif r < 0.7:
        extra = rng.choice([k for k in KEY_VALUES if k not in (k1, k2, k3)])
        bad = json.dumps({k: KEY_VALUES[k] for k in (k1, k2, k3, extra)})
    else:
        bad = "{" + ", ".join(f"{k}: {json.dumps(KEY_VALUES[k])}" for k in (k1, k2, k3)) + "}"
    return {"topic": t, "k1": k1, "k2": k2, "k3": k3}, good, bad


def _task_math(rng, split):
    while True:
        op = rng.choice("+-*")
        a, b = (rng.randint(2, 19), rng.randint(2, 12)) if op == "*" else (rng.randint(1, 99), rng.randint(1, 99))
        if split_of("math", math_key(a, op, b)) == split:
            break
    want = math_result(a, op, b)
    bad = str(want + rng.choice([-10, -2, -1, 1, 2, 10]))
    if (a + b) % 2:  # right number, but not "the number only"
        bad = f"{a} {op} {b} = {want}"
    return {"a": a, "op": op, "b": b}, str(want), bad


def _task_repeat(rng, split):
    w, n = rng.choice(pool("repeat", split)), rng.randint(2, 9)
    bad = " ".join([w] * (n + rng.choice([-1, 1])))
    if n % 2 == 0:  # right count, wrong separator
        bad = ", ".join([w] * n)
    return {"word": w, "n": n}, " ".join([w] * n), bad


MAKERS = {"upper": _task_upper, "lower": _task_lower, "words": _task_words, "ends": _task_ends,
          "starts": _task_starts, "list": _task_list, "json": _task_json, "math": _task_math,
          "repeat": _task_repeat}
TASKS = sorted(MAKERS)


def make_row(task: str, split: str, rng: random.Random) -> dict:
    """One checked row of ``task`` whose parameters and phrasing belong to ``split``."""
    params, good, bad = MAKERS[task](rng, split)
    prompt = rng.choice(phrasings(task, split)).format(**params)
    parsed = parse_task(prompt)
    if parsed is None or parsed.name != task or not check(prompt, good) or check(prompt, bad):
        raise AssertionError(f"bundled generator bug for task {task}: {prompt!r} {good!r} {bad!r}")
    return {"prompt": prompt, "chosen": good, "rejected": bad, "task": task}


def sample(task_counts: dict[str, int], split: str, seed: int) -> list[dict]:
    """``task_counts[task]`` rows of each task with distinct prompts, from ``split``'s pools,
    interleaved by task (task order, round-robin); deterministic in (task_counts, split, seed)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    rng = random.Random(f"{split}:{seed}")
    by_task: dict[str, list[dict]] = {t: [] for t in task_counts}
    seen: set[str] = set()
    for task, want in task_counts.items():
        attempts = 0
        while len(by_task[task]) < want:
            attempts += 1
            if attempts > 50 * want + 1000:
                raise RuntimeError(f"bundled generator found only {len(by_task[task])} distinct {task!r} "
                                   f"prompts of {want} in the {split!r} split")
            row = make_row(task, split, rng)
            if row["prompt"] not in seen:
                seen.add(row["prompt"])
                by_task[task].append(row)
    longest = max(task_counts.values(), default=0)
    return [by_task[t][i] for i in range(longest) for t in task_counts if i < len(by_task[t])]


def generate(n: int = 4000, seed: int = 0) -> list[dict]:
    """``n`` training rows with distinct prompts, tasks in turn; deterministic in (n, seed)."""
    counts = {t: n // len(TASKS) + (i < n % len(TASKS)) for i, t in enumerate(TASKS)}
    return sample(counts, "train", seed)


@lru_cache(maxsize=None)
def _eval_rows(split: str) -> tuple:
    if split not in EVAL_PER_TASK:
        raise ValueError(f"unknown evaluation set {split!r} (expected one of {', '.join(EVAL_PER_TASK)})")
    return tuple(sample({t: EVAL_PER_TASK[split] for t in TASKS}, split, EVAL_SEEDS[split]))


def eval_rows(split: str) -> list[dict]:
    """The fixed, task-balanced evaluation set ``split`` (``dev``: 32 per task, ``test``: 64)."""
    return [dict(r) for r in _eval_rows(split)]


def calculator_call(prompt: str) -> str | None:
    """The bundled calculator call that answers a ``math`` prompt (None for other tasks)."""
    task = parse_task(prompt)
    if task is None or task.name != "math":
        return None
    p = task.params
    args = {"expression": f"{p['a']} {p['op']} {p['b']}"}
    return "<tool_call>\n" + json.dumps({"name": "calculator", "arguments": args}) + "\n</tool_call>"


def calculator_turns(rows: list[dict]) -> list[dict]:
    """Supervised rows that teach the calculator: each ``math`` row becomes two, the call (its first turn)
    and the answer after the tool's result (its second); the other rows stay as they are."""
    from ..tools.calculator import calculator

    out = []
    for r in rows:
        user = r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}]
        call = calculator_call(user[-1]["content"]) if user[-1]["role"] == "user" else None
        if call is None:
            out.append(r)
            continue
        expression = json.loads(call.split("\n")[1])["arguments"]["expression"]
        result = {"role": "tool", "content": calculator(expression)}
        out.append({**r, "prompt": user, "chosen": call})
        out.append({**r, "prompt": user + [{"role": "assistant", "content": call}, result]})
    return out


def train_eval(n: int = 4000, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(training rows, the dev set): what the training stages see; the test set is never among them."""
    return generate(n, seed), eval_rows("dev")


def write(out_dir: str, n: int = 4000, seed: int = 0) -> tuple[Path, Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in (("train", generate(n, seed)), ("eval", eval_rows("dev")), ("test", eval_rows("test"))):
        p = out / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(p)
    return paths[0], paths[1], paths[2]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m training.utils.data.bundled OUT_DIR [N] [SEED]")
    paths = write(sys.argv[1], *(int(x) for x in sys.argv[2:4]))
    print("wrote " + ", ".join(str(p) for p in paths))
