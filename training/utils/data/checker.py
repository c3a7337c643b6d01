"""The checker of the bundled verifiable dataset.

``check(prompt, answer)`` reads the instruction back out of the prompt text (the prompt may be
wrapped in a chat template or DeepSpeed-Chat's ``Human:/Assistant:`` format) and says whether the
answer follows it.  It is the evaluator of the pass-rate reports and, as ``reward``, a rule reward.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable, Optional

# Instruction phrasings.  The generator formats these; the checker parses them back.  The last
# phrasing of each task is evaluation-only: the bundled generator never writes it into a training row.
PATTERNS: dict[str, list[str]] = {
    "upper": [
        "Write one sentence about {topic}. Use only capital letters.",
        "Tell me something about {topic} in a single sentence, written entirely in capital letters.",
        "In one sentence written in all caps, describe {topic}.",
        "Write a single sentence on {topic} using uppercase letters only.",
        "Compose one sentence about {topic} with every letter in upper case.",
    ],
    "lower": [
        "Write one sentence about {topic}. Use only lowercase letters.",
        "Tell me something about {topic} in a single sentence, written entirely in lowercase letters.",
        "In one sentence with no capital letters at all, describe {topic}.",
        "Write a single sentence on {topic} using lowercase letters only.",
        "Compose one sentence about {topic} with every letter in lower case.",
    ],
    "words": [
        "Describe {topic} in exactly {n} words.",
        "Using exactly {n} words, say something about {topic}.",
        "Write exactly {n} words about {topic}.",
        "Say something about {topic} in a reply of exactly {n} words.",
        "Your whole reply must be exactly {n} words long, about {topic}.",
    ],
    "ends": [
        'Write one sentence about {topic} that ends with the words "{phrase}".',
        'Say something about {topic} in one sentence. The sentence must end with "{phrase}".',
        'Write a sentence about {topic}. Its last words must be "{phrase}".',
        'Finish a one-sentence statement about {topic} with the words "{phrase}".',
        'About {topic}: one sentence, and its final words are "{phrase}".',
    ],
    "starts": [
        'Write one sentence about {topic} that starts with the word "{word}".',
        'Say something about {topic} in one sentence. Begin your answer with the word "{word}".',
        'Write a sentence about {topic}. Its first word must be "{word}".',
        'Open with the word "{word}" and write one sentence about {topic}.',
        'About {topic}: one sentence whose very first word is "{word}".',
    ],
    "list": [
        'List {n} {category}. Put each item on its own line starting with "- ".',
        'Name {n} {category}, one per line, each line starting with "- ".',
        'Give me {n} {category} as a list, one item per line, each line beginning with "- ".',
        'Write a list of {n} {category}, each on a separate line that starts with "- ".',
        'I need {n} {category}: one per line, every line opening with "- ".',
    ],
    "json": [
        'Give a JSON object about {topic} with exactly the keys "{k1}", "{k2}" and "{k3}". '
        "Reply with the JSON only.",
        'Describe {topic} as a JSON object whose only keys are "{k1}", "{k2}" and "{k3}". '
        "Reply with the JSON only.",
        'Return only a JSON object about {topic} that has exactly the keys "{k1}", "{k2}" and "{k3}".',
        'Output JSON only: an object about {topic} with the keys "{k1}", "{k2}" and "{k3}" and no others.',
        'Make a JSON object for {topic} using exactly three keys, "{k1}", "{k2}" and "{k3}", '
        "and reply with nothing else.",
    ],
    "math": [
        "What is {a} {op} {b}? Reply with the number only.",
        "Compute {a} {op} {b}. Reply with the number only.",
        "Calculate {a} {op} {b} and give just the number.",
        "Work out {a} {op} {b}. Answer with only the result.",
        "{a} {op} {b} equals what? Reply with the number alone.",
    ],
    "repeat": [
        'Repeat the word "{word}" exactly {n} times, separated by single spaces, and nothing else.',
        'Write the word "{word}" {n} times in a row, separated by single spaces, and nothing else.',
        'Say "{word}" {n} times, with single spaces between, and nothing else.',
        'Output the word "{word}" repeated {n} times, separated by single spaces, and nothing else.',
        'Type "{word}" exactly {n} times with one space between each, and nothing more.',
    ],
}
EVAL_ONLY_PHRASINGS = 1     # the last phrasing(s) of each task above


_FIELD_RE = {
    "topic": r"(?P<topic>[a-z][a-z ]*?)",
    "n": r"(?P<n>\d+)",
    "phrase": r"(?P<phrase>[^\"]+)",
    "word": r"(?P<word>[A-Za-z]+)",
    "category": r"(?P<category>[a-z][a-z ]*?)",
    "k1": r"(?P<k1>[a-z_]+)",
    "k2": r"(?P<k2>[a-z_]+)",
    "k3": r"(?P<k3>[a-z_]+)",
    "a": r"(?P<a>-?\d+)",
    "b": r"(?P<b>-?\d+)",
    "op": r"(?P<op>[+\-*])",
}


def _compile(template: str) -> re.Pattern:
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(_FIELD_RE[m.group(1)])
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


_COMPILED = [(task, _compile(t)) for task, ts in PATTERNS.items() for t in ts]


@dataclass(frozen=True)
class Task:
    name: str
    params: dict


def parse_task(prompt: str) -> Optional[Task]:
    """The task stated in ``prompt`` (None if the prompt is not one of ours)."""
    for name, rx in _COMPILED:
        m = rx.search(prompt)
        if m:
            return Task(name, m.groupdict())
    return None


def _sentence_ok(answer: str) -> bool:
    return len(re.findall(r"[A-Za-z]", answer)) >= 3


def _words(answer: str) -> list[str]:
    return answer.split()


def _check_upper(p, a):
    return _sentence_ok(a) and not re.search(r"[a-z]", a)


def _check_lower(p, a):
    return _sentence_ok(a) and not re.search(r"[A-Z]", a)


def _check_words(p, a):
    return len(_words(a)) == int(p["n"])


def _check_ends(p, a):
    text = a.strip().rstrip(".!")
    return _sentence_ok(a) and text.endswith(p["phrase"]) and len(text) > len(p["phrase"])


def _check_starts(p, a):
    words = _words(a)
    return bool(words) and len(words) >= 2 and re.sub(r"[^A-Za-z]", "", words[0]).lower() == p["word"].lower()


def _check_list(p, a):
    lines = [ln.strip() for ln in a.strip().splitlines() if ln.strip()]
    if len(lines) != int(p["n"]) or not all(ln.startswith("- ") for ln in lines):
        return False
    items = [ln[2:].strip().lower() for ln in lines]
    return all(items) and len(set(items)) == len(items)


def _check_json(p, a):
    try:
        obj = json.loads(a.strip())
    except ValueError:
        return False
    return isinstance(obj, dict) and set(obj) == {p["k1"], p["k2"], p["k3"]}


def math_result(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def _check_math(p, a):
    want = math_result(int(p["a"]), p["op"], int(p["b"]))
    return a.strip().rstrip(".") == str(want)


def _check_repeat(p, a):
    return a.strip().split(" ") == [p["word"]] * int(p["n"])


CHECKS: dict[str, Callable[[dict, str], bool]] = {
    "upper": _check_upper, "lower": _check_lower, "words": _check_words, "ends": _check_ends,
    "starts": _check_starts, "list": _check_list, "json": _check_json, "math": _check_math,
    "repeat": _check_repeat,
}


def check(prompt: str, answer: str) -> bool:
    """True when ``answer`` follows the instruction in ``prompt``; False for unknown prompts."""
    task = parse_task(prompt)
    return task is not None and CHECKS[task.name](task.params, answer)


def reward(prompt: str, answer: str) -> float:
    """Rule reward: 1.0 for an answer that passes the checker, 0.0 otherwise."""
    return 1.0 if check(prompt, answer) else 0.0


def pass_rate(prompts: list[str], answers: list[str]) -> dict:
    """Overall and per-task pass-rates."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    per: dict[str, list[int]] = {}
    for p, a in zip(prompts, answers):
        task = parse_task(p)
        name = task.name if task else "unknown"
        per.setdefault(name, []).append(int(task is not None and CHECKS[task.name](task.params, a)))
    total = sum(sum(v) for v in per.values())
    n = sum(len(v) for v in per.values())
    return {"pass_rate": total / n if n else 0.0, "n": n,
            "per_task": {k: sum(v) / len(v) for k, v in sorted(per.items())}}
