"""Pure maths of comparison data: a labeller's scores -> chosen/rejected pairs, pairwise verdicts ->
scores, and how well a reward model's scores agree with a labeller's (AUC).

No model, no file, no DeepSpeed: lists of numbers in, lists of numbers out.
"""
from __future__ import annotations

from typing import Sequence

PAIR_RULES = ("all", "best_worst")
VERDICTS = ("a", "b", "tie")


def ranked_pairs(scores: Sequence[float], rule: str = "all") -> list[tuple[int, int]]:
    """(chosen index, rejected index) pairs among one prompt's answers ranked by ``scores`` [K].

    ``all``: every two answers whose scores differ (InstructGPT's K-choose-2 comparisons);
    ``best_worst``: the first highest-scored answer against the first lowest, when they differ.
    Answers that tie give no pair. Pairs are in index order of (chosen, rejected) for ``all``."""
    if rule not in PAIR_RULES:
        raise ValueError(f"pair rule {rule!r}: use one of {', '.join(PAIR_RULES)}")
    k = len(scores)
    if rule == "best_worst":
        if k < 2:
            return []
        hi = max(range(k), key=lambda i: (scores[i], -i))
        lo = min(range(k), key=lambda i: (scores[i], i))
        return [(hi, lo)] if scores[hi] > scores[lo] else []
    out = []
    for i in range(k):
        for j in range(i + 1, k):
            if scores[i] > scores[j]:
                out.append((i, j))
            elif scores[j] > scores[i]:
                out.append((j, i))
    return out


def copeland_scores(k: int, verdicts: dict[tuple[int, int], str]) -> list[float]:
    """Scores of K answers from pairwise verdicts {(i, j): 'a' (i better) | 'b' (j better) | 'tie'}:
    wins + half the ties (Copeland's count), so that ``ranked_pairs`` can rank them."""
    out = [0.0] * k
    for (i, j), v in verdicts.items():
        if v == "a":
            out[i] += 1.0
        elif v == "b":
            out[j] += 1.0
        elif v == "tie":
            out[i] += 0.5
            out[j] += 0.5
        else:
            raise ValueError(f"verdict {v!r} for answers {i} and {j}: use one of {', '.join(VERDICTS)}")
    return out


def _concordance(pairs: list[tuple[float, float]]) -> float:
    """Share of (better answer's score, worse answer's score) pairs ordered right; ties count half."""
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)


def auc(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    """Global AUC: the chance that an answer the labeller scored higher gets the higher ``scores``,
    over every two answers (any prompts) whose labels differ; None when all labels are equal."""
    idx = sorted(range(len(labels)), key=lambda i: labels[i])
    pairs = [(scores[j], scores[i]) for a, i in enumerate(idx) for j in idx[a + 1:] if labels[j] > labels[i]]
    return _concordance(pairs) if pairs else None


def within_prompt_auc(groups: Sequence[tuple[Sequence[float], Sequence[float]]]) -> tuple[float | None, int]:
    """(AUC, pairs) over the pairs of answers *to the same prompt* whose labels differ: ``groups`` is
    one (reward-model scores [K], labels [K]) per prompt. This is the agreement a group baseline and
    PPO's per-prompt advantages depend on; None when no prompt's answers disagree."""
    pairs = []
    for scores, labels in groups:
        pairs += [(scores[c], scores[r]) for c, r in ranked_pairs(labels, "all")]
    return (_concordance(pairs) if pairs else None), len(pairs)
