"""Verifiable rewards for stage 3, used as ``--reward rule:training.rewards:NAME`` (and as
``--eval_reward``), or copied as a starting point for your own.

Each is a batch function in TRL's reward-function signature, ``(prompts, completions, **columns) ->
[float, ...]``: the dataset's other columns arrive as lists, one entry per completion.

- ``math_answer``: 1.0 when the completion's last number equals the reference's: the row's ``answer``
  column (GSM8K's "...#### 42": the number after ``####``, else its last number) or ``solution``.
- ``answer_format``: 1.0 when the completion ends with a final answer line ("#### 42", "Answer: 42",
  "The answer is 42"); ``regex_reward(pattern)`` builds the same for any pattern.
"""
from __future__ import annotations

import re
from typing import Callable, Optional, Sequence

NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def to_number(text: str) -> Optional[float]:
    """'$1,234.50' -> 1234.5; None when it is not a number."""
    try:
        return float(text.replace("$", "").replace(",", "").rstrip("."))
    except ValueError:
        return None


def last_number(text: str) -> Optional[float]:
    found = NUMBER.findall(text or "")
    return to_number(found[-1]) if found else None


def reference_number(text: str) -> Optional[float]:
    """GSM8K's reference: the number after the last ``####``, else the text's last number."""
    text = str(text)
    return last_number(text.rsplit("####", 1)[1]) if "####" in text else last_number(text)


def math_answer(prompts: Sequence[str], completions: Sequence[str], answer: Optional[Sequence] = None,
                solution: Optional[Sequence] = None, **_) -> list[float]:
    refs = answer if answer is not None else solution
    if refs is None:
        raise ValueError("math_answer compares with the row's 'answer' (or 'solution') column; the data has neither")
    out = []
    for completion, ref in zip(completions, refs):
        want, got = reference_number(ref), last_number(completion)
        out.append(float(want is not None and got is not None and abs(got - want) <= 1e-6 * max(1.0, abs(want))))
    return out


def regex_reward(pattern: str, flags: int = 0) -> Callable:
    """A batch reward: 1.0 for each completion that ``re.search(pattern)`` matches, else 0.0."""
    compiled = re.compile(pattern, flags)

    def reward(prompts: Sequence[str], completions: Sequence[str], **_) -> list[float]:
        return [float(compiled.search(c or "") is not None) for c in completions]

    reward.__doc__ = f"1.0 when the completion matches {pattern!r}"
    return reward


answer_format = regex_reward(r"(?:####|[Aa]nswer:|[Tt]he answer is)\s*-?\$?\d[\d,]*(?:\.\d+)?\s*\.?\s*$")
