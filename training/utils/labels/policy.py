"""Comparison data from the policy: K answers sampled from the SFT model per prompt (the Hybrid
Engine's generation path, a prompt prefilled once for its K rows), ranked by a labeller, turned into
chosen/rejected pairs; and the reward model's judgement of such answers measured (on-policy AUC).

The label budget is spent where it teaches: prompts are drawn group by group (``_group``, e.g. the
bundled data's task) in proportion to how often a group's prompts have given answers that disagree
so far (a prompt whose K answers all pass or all fail gives no pair), with a prior of one mixed and
one uniform prompt per group.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import numpy as np
import torch

from ..data.collate import pad_sequences
from ..data.format import prompt_token_ids, render_prompt
from ..generation import GenerationSettings, PlainHFBackend, decode_answers
from .human import prompt_field
from .labellers import labels_per_prompt
from .ranking import ranked_pairs, within_prompt_auc, auc

log = logging.getLogger("speedchat")


def unique_prompts(rows: Sequence[dict]) -> list[dict]:
    """The distinct prompts of canonical rows, first occurrence kept: [{prompt: messages, group}]."""
    import json

    seen, out = set(), []
    for r in rows:
        key = json.dumps(r["prompt"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append({"prompt": r["prompt"], "group": r.get("_group", "")})
    return out


class Sampler:
    """K sampled answers per prompt from a causal LM through ``PlainHFBackend`` (the Hybrid Engine's
    generate on a model as it stands), with the shared-prompt prefill."""

    def __init__(self, model, tok, k: int, max_new_tokens: int, temperature: float, max_prompt_len: int,
                 template: str = "auto", batch_prompts: int = 8):
        self.backend, self.tok, self.k, self.template = PlainHFBackend(model, tok), tok, k, template
        self.max_prompt_len, self.batch_prompts = max_prompt_len, batch_prompts
        self.settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                           share_prompt=True)
        self.seconds = 0.0

    def text(self, messages: list[dict]) -> str:
        """The rendered prompt the labeller reads (the checker parses the instruction back out of it)."""
        return render_prompt(self.tok, messages, self.template)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[list[dict]]) -> list[list[str]]:
        """[len(prompts)][K] answers (EOS-terminated, special tokens stripped)."""
        t0, tok, out = time.time(), self.tok, []
        for s in range(0, len(prompts), self.batch_prompts):
            chunk = prompts[s:s + self.batch_prompts]
            ids = [prompt_token_ids(tok, self.text(m), self.template)[-self.max_prompt_len:] for m in chunk]
            ids = [x for x in ids for _ in range(self.k)]           # a prompt's K rows consecutive
            input_ids, mask = pad_sequences(ids, tok.pad_token_id, left=True)
            answers = decode_answers(tok, self.backend.generate(input_ids, mask, self.settings), input_ids.shape[1])
            out += [answers[i * self.k:(i + 1) * self.k] for i in range(len(chunk))]
        self.seconds += time.time() - t0
        return out


def collect_pairs(prompts: list[dict], sample: Sampler, labeller, budget: int, rule: str, seed: int,
                  progress: Callable[[int, int], None] = lambda used, budget: None) -> tuple[list[dict], dict]:
    """Sample, label and pair until ``budget`` labels are spent or the prompts run out.

    Returns (records, stats): one record per labelled prompt {prompt, group, answers, labels, pairs
    [(chosen, rejected)]}, and {labels, prompts, mixed_prompts, pairs, answers, pass_rate, seconds}."""
    rng = np.random.RandomState(seed + 15485863)
    pools: dict[str, list[dict]] = {}
    for p in prompts:
        pools.setdefault(p["group"], []).append(p)
    for g in pools.values():
        rng.shuffle(g)
    seen = {g: 0 for g in pools}
    mixed = {g: 0 for g in pools}
    records, used = [], 0
    k = sample.k
    per_prompt = labels_per_prompt(labeller, k)
    t0 = time.time()
    while used + per_prompt <= budget:
        groups = [g for g in sorted(pools) if pools[g]]
        if not groups:
            break
        room = min(sample.batch_prompts, (budget - used) // per_prompt)
        w = np.array([(mixed[g] + 1.0) / (seen[g] + 2.0) for g in groups])
        picks = rng.choice(len(groups), size=room, p=w / w.sum())
        batch = []
        for i in picks:
            if pools[groups[i]]:
                batch.append(pools[groups[i]].pop())
        answers = sample([b["prompt"] for b in batch])
        for b, ans in zip(batch, answers):
            row = len(records) + 1
            labels, cost = labeller.scores(sample.text(b["prompt"]), ans, row)
            used += cost
            pairs = ranked_pairs(labels, rule)
            seen[b["group"]] += 1
            mixed[b["group"]] += int(max(labels) > min(labels))
            records.append({**b, "answers": ans, "labels": labels, "pairs": pairs})
        progress(used, budget)
    n_ans = sum(len(r["answers"]) for r in records)
    scored = [x for r in records for x in r["labels"]]
    stats = {"labels": used, "label_budget": budget, "prompts": len(records),
             "mixed_prompts": sum(max(r["labels"]) > min(r["labels"]) for r in records),
             "pairs": sum(len(r["pairs"]) for r in records), "answers": n_ans,
             "mean_label": float(np.mean(scored)) if scored else 0.0,
             "seconds": round(time.time() - t0, 1), "sampling_seconds": round(sample.seconds, 1),
             "per_group": {g: {"prompts": seen[g], "mixed": mixed[g]} for g in sorted(pools) if seen[g]}}
    return records, stats


def pair_rows(records: list[dict], labeller_name: str) -> list[dict]:
    """Canonical chosen/rejected rows of the labelled records, with the labeller's verdicts, as the
    JSONL shows them (reusable with ``--data_path``)."""
    out = []
    for r in records:
        for c, j in r["pairs"]:
            out.append({"prompt": prompt_field(r["prompt"]), "chosen": r["answers"][c], "rejected": r["answers"][j],
                        "labeller": labeller_name, "chosen_label": r["labels"][c], "rejected_label": r["labels"][j],
                        **({"group": r["group"]} if r["group"] else {})})
    return out


def label_rows(records: list[dict], labeller_name: str) -> list[dict]:
    """Every labelled answer as a row {prompt, answer, label, labeller[, group]}: the pointwise data."""
    return [{"prompt": prompt_field(r["prompt"]), "answer": a, "label": float(lab), "labeller": labeller_name,
             **({"group": r["group"]} if r["group"] else {})}
            for r in records for a, lab in zip(r["answers"], r["labels"])]


def comparison_rows(records: list[dict], seed: int) -> list[dict]:
    """Rows for people to label: every two different answers to a prompt, in a random order (the
    order shown is recorded in ``shown``), with ``preference`` left empty."""
    rng = np.random.RandomState(seed + 32452843)
    out = []
    for n, r in enumerate(records, start=1):
        a = r["answers"]
        for i in range(len(a)):
            for j in range(i + 1, len(a)):
                if a[i] == a[j]:
                    continue
                x, y = (i, j) if rng.rand() < 0.5 else (j, i)
                out.append({"id": f"{n}-{x}-{y}", "prompt": prompt_field(r["prompt"]), "answer_a": a[x],
                            "answer_b": a[y], "preference": None})
    return out


def on_policy_auc(records: list[dict], scores: Sequence[float]) -> dict:
    """The reward model's agreement with the labeller on sampled answers: ``scores`` are the reward
    model's, one per answer in record order. Global AUC (any two answers whose labels differ) and
    within-prompt AUC (two answers to the same prompt), with their pair counts."""
    labels = [x for r in records for x in r["labels"]]
    groups, i = [], 0
    for r in records:
        k = len(r["answers"])
        groups.append((list(scores[i:i + k]), r["labels"]))
        i += k
    within, n_within = within_prompt_auc(groups)
    glob = auc(list(scores), labels)
    return {"on_policy_auc": glob, "on_policy_within_prompt_auc": within, "within_prompt_pairs": n_within,
            "answers": len(labels), "prompts": len(records)}
