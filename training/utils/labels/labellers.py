"""Labellers: who says which of a prompt's answers is better when the reward model's comparison
data comes from the policy's own samples (InstructGPT's labellers).

Specs (``--labeller``):

- ``checker``: the bundled dataset's checker (pass 1 / fail 0), the default on the bundled data;
- ``rule:module:function`` (or ``module:function``): ``function(prompt, answer) -> float``;
- ``http://...`` / ``https://...``: the HTTP reward contract, POST ``{"prompts": [...], "answers":
  [...]}`` -> ``{"rewards": [float, ...]}``;
- ``judge:MODEL``: a local causal LM asked to compare two answers (``--judge_template``); each
  comparison is asked in both orders and counts only when both orders agree (else a tie);
- ``human:FILE``: comparisons people made, a JSONL of ``{prompt, answer_a, answer_b, preference}``
  (``labels/human.py``; ``--export_for_labelling`` writes the file to fill in).

Every labeller except ``human`` answers ``scores(prompt, answers, row)``: one number per answer (the
higher the better) and the labels it spent. A labeller that fails or answers something unusable
raises ``LabelError`` naming itself and the row.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..data.sources import DataError
from ..reward_sources import RewardError
from ..source_kinds import SourceError, parse, register
from .ranking import copeland_scores

DEFAULT_JUDGE_TEMPLATE = (
    "Here is an instruction and two answers to it.\n\nInstruction: {prompt}\n\nAnswer A: {answer_a}\n\n"
    "Answer B: {answer_b}\n\nWhich answer follows the instruction exactly? Reply with the letter A or B only.")


class LabelError(DataError):
    """A labeller failed or answered something unusable; the message names it and the row."""


def labels_per_prompt(labeller, k: int) -> int:
    """What labelling K answers to one prompt costs: K (one score each), or K(K-1)/2 for a labeller that
    compares two answers at a time (``pairwise``)."""
    return k * (k - 1) // 2 if getattr(labeller, "pairwise", False) else k


class ScoreLabeller:
    """A rule or an HTTP endpoint (any reward source with ``score_texts``): one label per answer."""

    pairwise = False

    def __init__(self, source, name: str):
        self.source, self.name = source, name

    def scores(self, prompt: str, answers: Sequence[str], row: int) -> tuple[list[float], int]:
        try:
            vals = self.source.score_texts([prompt] * len(answers), list(answers)).tolist()
        except RewardError as e:
            raise LabelError(f"labeller {self.name}: row {row}: {e}") from e
        bad = [i for i, v in enumerate(vals) if not math.isfinite(v)]
        if bad:
            raise LabelError(f"labeller {self.name}: row {row}: answer(s) {bad} got a non-finite label {vals}")
        return vals, len(answers)


class JudgeLabeller:
    """A local causal LM compares two answers at a time: the probability of the letter A against B as
    its next token, asked in both orders; a verdict counts when both orders agree (else a tie).
    K answers cost K(K-1)/2 comparisons (labels), ranked by wins (``copeland_scores``)."""

    pairwise = True

    def __init__(self, model_name: str, template: str = DEFAULT_JUDGE_TEMPLATE, batch_size: int = 16):
        from ..model import load_causal_lm, load_tokenizer

        for key in ("{prompt}", "{answer_a}", "{answer_b}"):
            if key not in template:
                raise LabelError(f"labeller judge:{model_name}: --judge_template has no {key} field "
                                 f"(it needs {{prompt}}, {{answer_a}} and {{answer_b}})")
        self.name, self.template, self.batch_size = f"judge:{model_name}", template, batch_size
        self.tok = load_tokenizer(model_name, padding_side="left")
        self.model = load_causal_lm(model_name, self.tok).eval()
        self.letters = []
        for letter in ("A", "B"):
            ids = self.tok(letter, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise LabelError(f"labeller {self.name}: the letter {letter!r} is {len(ids)} tokens for this "
                                 "tokenizer; the judge reads a one-token answer")
            self.letters.append(ids[0])

    def _texts(self, prompt: str, a: str, b: str) -> str:
        from ..data.format import render_prompt, to_messages

        try:
            text = self.template.format(prompt=prompt, answer_a=a, answer_b=b)
        except (KeyError, IndexError, ValueError) as e:
            raise LabelError(f"labeller {self.name}: --judge_template cannot be filled: {e}") from e
        return render_prompt(self.tok, to_messages(text))

    def prefer_first(self, items: list[tuple[str, str, str]]) -> list[float]:
        """P(first answer better) for each (prompt, a, b), from the judge's next-token A/B logits."""
        import torch

        from ..data.collate import pad_sequences
        from ..data.format import prompt_token_ids

        out = []
        for k in range(0, len(items), self.batch_size):
            ids = [prompt_token_ids(self.tok, self._texts(*it)) for it in items[k:k + self.batch_size]]
            input_ids, mask = pad_sequences(ids, self.tok.pad_token_id, left=True)
            with torch.no_grad():
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, -1, self.letters].float()
            out += torch.softmax(logits, -1)[:, 0].tolist()
        return out

    def scores(self, prompt: str, answers: Sequence[str], row: int) -> tuple[list[float], int]:
        k = len(answers)
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        both = [(prompt, answers[i], answers[j]) for i, j in pairs] + [
            (prompt, answers[j], answers[i]) for i, j in pairs
        ]
        p = self.prefer_first(both)
        if any(not math.isfinite(x) for x in p):
            raise LabelError(f"labeller {self.name}: row {row}: non-finite judge probabilities")
        n = len(pairs)
        verdicts = {}
        for m, (i, j) in enumerate(pairs):
            a_first, a_second = p[m] > 0.5, p[n + m] < 0.5        # A wins asked as (i, j) and as (j, i)
            verdicts[(i, j)] = "a" if a_first and a_second else "b" if not a_first and not a_second else "tie"
        return copeland_scores(k, verdicts), n


@register("judge", "label")
def _judge(target: str, judge_template: str = DEFAULT_JUDGE_TEMPLATE, **_) -> JudgeLabeller:
    return JudgeLabeller(target, judge_template)


def build_labeller(spec: str, judge_template: str = DEFAULT_JUDGE_TEMPLATE, timeout: float = 30.0):
    """The labeller of ``--labeller``: the kind's own (a judge), else one scoring with the kind's reward source
    (checker, rule, HTTP). Not ``human:FILE``, whose pairs are read, not asked for."""
    try:
        kind, target = parse(spec, "label")
        if kind.offline:
            raise LabelError(f"labeller {spec!r}: its labels are read from their file, not asked for")
        if kind.label is not None:
            return kind.label(target, judge_template=judge_template)
        return ScoreLabeller(kind.reward(target, timeout=timeout), spec)
    except (SourceError, RewardError) as e:
        raise LabelError(f"labeller {spec!r}: {e}") from e
