"""The bundled verifiable dataset: a seeded generator of instruction-following rows.

Every row has a ``prompt`` (one of the instructions in ``checker.PATTERNS``), a ``chosen`` answer
that passes ``checker.check`` and a ``rejected`` near-miss that fails it.  Rows are split into
train and eval by a hash of the prompt, so held-out prompts never appear in training, whatever
the size or seed.  Run ``python -m training.utils.data.bundled OUT_DIR`` to write the rows as
``train.jsonl`` / ``eval.jsonl``.
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

from .checker import PATTERNS, check, math_result

TOPICS = [
    "the ocean", "coffee", "winter", "a library", "mountains", "bicycles", "the moon", "gardens",
    "trains", "music", "rain", "cats", "dogs", "bread", "forests", "the city", "rivers", "summer",
    "books", "the desert", "bees", "tea", "snow", "bridges", "the sun", "clouds", "islands",
    "chess", "painting", "soccer", "honey", "owls", "lighthouses", "volcanoes", "apples",
    "the wind", "friendship", "cooking", "maps", "stars", "ships", "birds", "museums", "tigers",
    "the night sky", "a small village", "old clocks", "the harbor", "autumn leaves", "spring",
    "robots", "computers", "dolphins", "horses", "candles", "markets", "schools", "windmills",
    "glaciers", "kites",
]
VERB_PHRASES = [
    "can be calm and quiet", "brings people together", "changes with every season",
    "has a long history", "makes many people happy", "is full of small surprises",
    "looks different in the morning", "teaches us to be patient", "is worth a closer look",
    "can inspire a good story", "feels peaceful at dusk", "is loved by children",
    "needs care and attention", "shapes the lives of many", "is often underrated",
]
TAILS = [
    "in many parts of the world", "for those who notice", "on a quiet afternoon",
    "when the weather is kind", "throughout the year", "in every generation",
    "after a long day", "in its own way", "more than we think", "from time to time",
]
START_WORDS = ["Today", "Sometimes", "Honestly", "Clearly", "Every", "Many", "Often", "Indeed",
               "Surely", "Perhaps", "Always", "Most"]
END_PHRASES = ["every single day", "under the open sky", "for a long time", "all year round",
               "in the end", "with great care", "like never before", "at the right moment",
               "without any doubt", "near and far", "by the water", "in the quiet hours"]
CATEGORIES = {
    "fruits": ["apple", "banana", "cherry", "mango", "pear", "grape", "peach", "plum", "kiwi", "lemon"],
    "colors": ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown"],
    "animals": ["cat", "dog", "horse", "lion", "tiger", "rabbit", "eagle", "whale", "fox", "bear"],
    "countries": ["France", "Japan", "Brazil", "Canada", "Egypt", "India", "Kenya", "Norway", "Peru", "Spain"],
    "vegetables": ["carrot", "potato", "onion", "pepper", "spinach", "cabbage", "pea", "leek", "bean", "corn"],
    "musical instruments": ["piano", "violin", "guitar", "drum", "flute", "trumpet", "cello", "harp",
                            "clarinet", "banjo"],
    "planets": ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"],
    "sports": ["soccer", "tennis", "golf", "rugby", "cricket", "hockey", "boxing", "rowing", "skiing",
               "cycling"],
}
JSON_KEYS = ["name", "color", "size", "age", "location", "type", "weight", "origin", "price",
             "rating", "speed", "height"]
KEY_VALUES = {"name": "example", "color": "blue", "size": "medium", "age": 3, "location": "north",
              "type": "common", "weight": 12, "origin": "unknown", "price": 5, "rating": 4,
              "speed": "slow", "height": 2}
RAMBLE = "and there is so much more that could be said about it if we had the time."
REPEAT_WORDS = ["hello", "yes", "blue", "tree", "go", "sun", "cat", "red", "one", "sky", "ok", "love"]

EVAL_SHARE = 10  # percent of prompts held out, chosen by prompt hash
VERSION = 2       # bump when generated rows change: part of the data cache key


def _sentence(rng: random.Random, topic: str) -> str:
    return f"{topic[0].upper()}{topic[1:]} {rng.choice(VERB_PHRASES)} {rng.choice(TAILS)}."


def _n_words(rng: random.Random, topic: str, n: int) -> str:
    words: list[str] = []
    while len(words) < n:
        words += _sentence(rng, topic).rstrip(".").split()
    return " ".join(words[:n]) + "."


def _task_upper(rng):
    t = rng.choice(TOPICS)
    s = _sentence(rng, t)
    bad = s if rng.random() < 0.5 else " ".join(w.upper() if i else w for i, w in enumerate(s.split()))
    if bad == bad.upper():
        bad = s
    return {"topic": t}, s.upper(), bad


def _task_lower(rng):
    t = rng.choice(TOPICS)
    s = _sentence(rng, t)
    return {"topic": t}, s.lower(), s if s != s.lower() else s.upper()


def _task_words(rng):
    t, n = rng.choice(TOPICS), rng.randint(3, 12)
    good, bad = _n_words(rng, t, n), _n_words(rng, t, n + rng.choice([-1, 1, 2]))
    if n % 2 == 0:  # the other common failure: ignoring the limit and rambling on
        bad = bad.rstrip(".") + " " + RAMBLE
    return {"topic": t, "n": n}, good, bad


def _task_ends(rng):
    t, ph = rng.choice(TOPICS), rng.choice(END_PHRASES)
    s = _sentence(rng, t).rstrip(".")
    good = f"{s} {ph}."
    bad = f"{s}." if rng.random() < 0.5 else f"{ph[0].upper()}{ph[1:]}, {s[0].lower()}{s[1:]}."
    return {"topic": t, "phrase": ph}, good, bad


def _task_starts(rng):
    t, w = rng.choice(TOPICS), rng.choice(START_WORDS)
    s = _sentence(rng, t)
    good = f"{w}, {s[0].lower()}{s[1:]}"
    other = rng.choice([x for x in START_WORDS if x != w])
    bad = s if rng.random() < 0.5 else f"{other}, {s[0].lower()}{s[1:]}"
    return {"topic": t, "word": w}, good, bad


def _task_list(rng):
    cat = rng.choice(sorted(CATEGORIES))
    n = rng.randint(2, min(7, len(CATEGORIES[cat]) - 1))
    items = rng.sample(CATEGORIES[cat], n + 1)
    good = "\n".join(f"- {x}" for x in items[:n])
    r = rng.random()
    if r < 0.4:
        bad = "\n".join(f"- {x}" for x in items[:n - 1] if n > 1) or f"- {items[0]}\n- {items[1]}"
    elif r < 0.7:
        bad = "\n".join(f"- {x}" for x in items)
    else:
        bad = "\n".join(f"{i + 1}. {x}" for i, x in enumerate(items[:n]))
    return {"category": cat, "n": n}, good, bad


def _task_json(rng):
    t = rng.choice(TOPICS)
    k1, k2, k3 = rng.sample(JSON_KEYS, 3)
    good = json.dumps({k: KEY_VALUES[k] for k in (k1, k2, k3)})
    r = rng.random()
    if r < 0.4:
        bad = json.dumps({k: KEY_VALUES[k] for k in (k1, k2)})
    elif r < 0.7:
        extra = rng.choice([k for k in JSON_KEYS if k not in (k1, k2, k3)])
        bad = json.dumps({k: KEY_VALUES[k] for k in (k1, k2, k3, extra)})
    else:
        bad = "{" + ", ".join(f"{k}: {json.dumps(KEY_VALUES[k])}" for k in (k1, k2, k3)) + "}"
    return {"topic": t, "k1": k1, "k2": k2, "k3": k3}, good, bad


def _task_math(rng):
    op = rng.choice("+-*")
    a, b = (rng.randint(2, 12), rng.randint(2, 12)) if op == "*" else (rng.randint(1, 99), rng.randint(1, 99))
    want = math_result(a, op, b)
    bad = str(want + rng.choice([-10, -2, -1, 1, 2, 10]))
    if (a + b) % 2:  # right number, but not "the number only"
        bad = f"{a} {op} {b} = {want}"
    return {"a": a, "op": op, "b": b}, str(want), bad


def _task_repeat(rng):
    w, n = rng.choice(REPEAT_WORDS), rng.randint(2, 8)
    bad = " ".join([w] * (n + rng.choice([-1, 1])))
    if n % 2 == 0:  # right count, wrong separator
        bad = ", ".join([w] * n)
    return {"word": w, "n": n}, " ".join([w] * n), bad


MAKERS = {"upper": _task_upper, "lower": _task_lower, "words": _task_words, "ends": _task_ends,
          "starts": _task_starts, "list": _task_list, "json": _task_json, "math": _task_math,
          "repeat": _task_repeat}


def is_eval_prompt(prompt: str) -> bool:
    return int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 100 < EVAL_SHARE


def generate(n: int = 4000, seed: int = 0) -> list[dict]:
    """``n`` rows with distinct prompts; deterministic in (n, seed)."""
    rng = random.Random(seed)
    rows, seen = [], set()
    names = sorted(MAKERS)
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 50 * n:
            raise RuntimeError(f"bundled generator found only {len(rows)} distinct prompts of {n}")
        name = names[len(rows) % len(names)] if attempts < 5 * n else rng.choice(names)
        params, good, bad = MAKERS[name](rng)
        prompt = rng.choice(PATTERNS[name]).format(**params)
        if prompt in seen:
            continue
        if not check(prompt, good) or check(prompt, bad):
            raise AssertionError(f"bundled generator bug for task {name}: {prompt!r} {good!r} {bad!r}")
        seen.add(prompt)
        rows.append({"prompt": prompt, "chosen": good, "rejected": bad, "task": name})
    return rows


def train_eval(n: int = 4000, seed: int = 0) -> tuple[list[dict], list[dict]]:
    rows = generate(n, seed)
    train = [r for r in rows if not is_eval_prompt(r["prompt"])]
    evals = [r for r in rows if is_eval_prompt(r["prompt"])]
    return train, evals


def write(out_dir: str, n: int = 4000, seed: int = 0) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in zip(("train", "eval"), train_eval(n, seed)):
        p = out / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(p)
    return paths[0], paths[1]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m training.utils.data.bundled OUT_DIR [N] [SEED]")
    tr, ev = write(sys.argv[1], *(int(x) for x in sys.argv[2:4]))
    print(f"wrote {tr} and {ev}")
