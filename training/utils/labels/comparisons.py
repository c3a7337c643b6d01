"""Stage 2's comparison data from the policy, end to end: sample and label on rank 0, write the pairs
(and the held-out samples that measure the reward model) as JSONL, and hand every rank the rows.

Files under the stage's output directory:
- ``policy_pairs.jsonl``: the chosen/rejected pairs with the labeller's verdicts (reusable with
  ``--data_path``);
- ``policy_labels.jsonl``: every labelled answer with its label (the ``--pointwise_weight`` term);
- ``on_policy_eval.jsonl``: the held-out prompts' sampled answers and their labels, scored by the
  reward model after training (``on_policy_auc`` in the summary).
With ``--labeller human:FILE`` the pairs are the file's verdicts and nothing is sampled for training; with
``human:DIR`` (a collection directory) also its thumbs, as pointwise labels.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.format import answer_token_ids, prompt_token_ids, render_answer, render_prompt, to_messages
from ..distributed import barrier, is_main
from ..shared_prefix import score_rows
from .human import prompt_field, read_human_labels, write_jsonl
from ..source_kinds import parse
from .labellers import DEFAULT_JUDGE_TEMPLATE, build_labeller
from .policy import Sampler, collect_pairs, comparison_rows, label_rows, on_policy_auc, pair_rows, unique_prompts

PAIRS_FILE, LABELS_FILE, EVAL_FILE = "policy_pairs.jsonl", "policy_labels.jsonl", "on_policy_eval.jsonl"


@dataclass
class Comparisons:
    pairs: list[dict]                       # canonical {prompt, chosen, rejected} rows
    eval_records: list[dict]                # held-out {prompt, answers, labels}
    stats: dict = field(default_factory=dict)
    labels: list[dict] = field(default_factory=list)    # every labelled answer {prompt (messages), answer, label}


def _labeller(m):
    return build_labeller(m.labeller, m.judge_template or DEFAULT_JUDGE_TEMPLATE)


def _sampler(cfg, tok):
    from ..model import load_causal_lm

    m, d = cfg.rm, cfg.data
    name = m.policy_model_name_or_path or cfg.model.model_name_or_path
    model = load_causal_lm(name, tok, trust_remote_code=cfg.model.trust_remote_code, seed=cfg.optim.seed)
    return Sampler(model, tok, m.samples_per_prompt, m.policy_max_new_tokens, m.policy_temperature,
                   d.max_prompt_seq_len, d.template), name


def build(cfg, tok, log, out: Path) -> Comparisons:
    """Rank 0 samples, labels and writes; every rank reads the written files back."""
    from ..data.pipeline import collect_rows

    m = cfg.rm
    kind, target = parse(m.labeller, "label")
    human = read_human_labels(target) if kind.offline else None    # (pairs, counts, pointwise labels)
    if is_main():
        rows = collect_rows(cfg.data, 2, cfg.optim.seed)
        torch.manual_seed(cfg.optim.seed)
        stats: dict = {"labeller": m.labeller}
        rows_out, eval_records, labels_out = [], [], []
        if human is not None:      # people's verdicts: nothing to sample or ask
            pairs, counts, points = human
            labels_out = [{"prompt": prompt_field(x["prompt"]), "answer": x["answer"], "label": x["label"],
                           "labeller": "human"} for x in points]
            stats.update(human_rows=counts, labels=counts["rows"] + len(points), pairs=len(pairs))
            log.info("human labels %s: %d verdicts, %d thumbs (%s): %d pairs", target, counts["rows"], len(points),
                     ", ".join(f"{k} {v}" for k, v in counts.items() if k != "rows"), len(pairs))
        else:
            labeller = _labeller(cfg.rm)
            sampler, stats["policy"] = _sampler(cfg, tok)

            def progress(used, budget):
                log.info("policy comparisons: %d of %d labels spent (%s)", used, budget, labeller.name)
            records, st = collect_pairs(unique_prompts(rows["train"]), sampler, labeller, m.label_budget,
                                        m.pair_rule, cfg.optim.seed, progress)
            stats.update(st)
            rows_out, labels_out = pair_rows(records, labeller.name), label_rows(records, labeller.name)
            log.info("policy comparisons: %d labels (%s) on %d prompts (K %d), %d with answers that differ -> %d "
                     "pairs (%s); sampling %.0f s, all %.0f s", st["labels"], labeller.name, st["prompts"],
                     m.samples_per_prompt, st["mixed_prompts"], st["pairs"], m.pair_rule, st["sampling_seconds"],
                     st["seconds"])
            if m.export_for_labelling:
                path = write_jsonl(m.export_for_labelling, comparison_rows(records, cfg.optim.seed))
                stats["exported"] = str(path)
                log.info("wrote %s: comparisons for people to label (fill in 'preference' with a, b, tie or skip; "
                         "then --labeller human:%s)", path, path)
            elif m.on_policy_eval_prompts:
                held = unique_prompts(rows["eval"])[:m.on_policy_eval_prompts]
                torch.manual_seed(cfg.optim.seed + 7)     # the same held-out samples whatever the label budget
                for n, (h, ans) in enumerate(zip(held, sampler([h["prompt"] for h in held])), start=1):
                    labels, _ = labeller.scores(sampler.text(h["prompt"]), ans, n)
                    eval_records.append({"prompt": h["prompt"], "answers": ans, "labels": labels})
                stats["eval_labels"] = sum(len(r["answers"]) for r in eval_records)
                stats["eval_sampling_seconds"] = round(sampler.seconds - st["sampling_seconds"], 1)
                log.info("on-policy evaluation set: %d held-out prompts x %d answers sampled and labelled (%.0f s)",
                         len(eval_records), m.samples_per_prompt, stats["eval_sampling_seconds"])
            del sampler
        write_jsonl(out / PAIRS_FILE, rows_out, replace=True)
        write_jsonl(out / LABELS_FILE, labels_out, replace=True)
        write_jsonl(out / EVAL_FILE, eval_records, replace=True)
        (out / "comparisons.json").write_text(json.dumps(stats, indent=2) + "\n")
    barrier()
    stats = json.loads((out / "comparisons.json").read_text())
    read = lambda f: [json.loads(x) for x in (out / f).read_text().splitlines() if x.strip()]
    if human is not None:
        pairs = human[0]
    else:
        pairs = read_pairs(out / PAIRS_FILE)
    labels = [
        {"prompt": to_messages(r["prompt"]), "answer": r["answer"], "label": r["label"]} for r in read(LABELS_FILE)
    ]
    return Comparisons(pairs, read(EVAL_FILE), stats, labels)


def label_batches(labels: list[dict], tok, d, batch_size: int, seed: int, rank: int = 0, world: int = 1):
    """Right-padded batches of labelled answers (input_ids, attention_mask, prompt_len, end_index, label), without
    end: each pass over this rank's share in a new seeded order. Tokenised as stage 2's pairs (``d``: the data
    section)."""
    import numpy as np

    from ..data.collate import pad_sequences

    rows = []
    for r in labels[rank::world]:
        p = prompt_token_ids(tok, render_prompt(tok, r["prompt"], d.template), d.template)[-d.max_prompt_seq_len:]
        a = answer_token_ids(tok, render_answer(r["answer"], tok, d.template))[:d.max_seq_len - len(p)]
        rows.append((p, a, float(r["label"])))
    if not rows:
        return
    rng = np.random.RandomState(seed + 86028121)
    while True:
        order = rng.permutation(len(rows))
        for k in range(0, len(order), batch_size):
            chunk = [rows[int(i)] for i in order[k:k + batch_size]]
            seqs = [p + a for p, a, _ in chunk]
            ids, mask = pad_sequences(seqs, tok.pad_token_id, left=False)
            yield {"input_ids": ids, "attention_mask": mask,
                   "prompt_len": torch.tensor([len(p) for p, _, _ in chunk]),
                   "end_index": torch.tensor([len(x) - 1 for x in seqs]),
                   "label": torch.tensor([lab for _, _, lab in chunk])}


def read_pairs(path: Path) -> list[dict]:
    """The canonical {prompt (messages), chosen, rejected} rows of a ``policy_pairs.jsonl`` (stage 2 trains
    on them; stage 3's reward-model refreshes replay them), each naming its file and row."""
    from ..data.sources import jsonl_objects

    return [{"prompt": to_messages(r["prompt"]), "chosen": r["chosen"], "rejected": r["rejected"],
             "_src": str(path), "_row": i} for i, r in jsonl_objects(path)]


def mix(train_ds, pair_ds, weight: float, seed: int):
    """The training rows: the dataset's pairs and the policy pairs, the policy pairs repeated or sampled so
    that they are ``weight`` of the rows (1: the policy pairs alone, 0: the dataset's alone)."""
    import datasets

    from ..data.pipeline import share_indices

    if weight <= 0 or len(pair_ds) == 0:
        return train_ds
    if weight >= 1:
        return pair_ds
    idx = share_indices(len(train_ds), len(pair_ds), weight, seed + 49979687)
    cols = ("chosen_ids", "rejected_ids", "prompt_len")
    return datasets.concatenate_datasets([train_ds.select_columns(list(cols)),
                                          pair_ds.select(idx).select_columns(list(cols))])


def score(model, tok, records: list[dict], d, batch_size: int = 16, share: bool = True) -> list[float]:
    """The reward model's score of every sampled answer, in record order (a prompt's answers together, so
    its prompt runs once), tokenised as stage 2's pairs (prompt rendered, answer + EOS, cut to the
    length limits; ``d``: the data section)."""
    rows = []
    for r in records:
        p = prompt_token_ids(tok, render_prompt(tok, to_messages(r["prompt"]), d.template), d.template)
        p = p[-d.max_prompt_seq_len:]
        rows += [(p, answer_token_ids(tok, render_answer(a, tok, d.template))[:d.max_seq_len - len(p)])
                 for a in r["answers"]]
    return score_rows(model, rows, tok.pad_token_id, batch_size, share)


def measure(engine, tok, comp: Comparisons, cfg, log) -> dict:
    """On-policy AUC of the trained reward model on the held-out samples (every rank scores the same rows:
    a ZeRO-3 engine gathers its weights with collectives)."""
    if not comp.eval_records:
        return {}
    engine.eval()
    scores = score(engine, tok, comp.eval_records, cfg.data, cfg.optim.per_device_eval_batch_size,
                   cfg.model.share_prompt_forward)
    res = on_policy_auc(comp.eval_records, scores)
    fmt = lambda x: "-" if x is None else f"{x:.3f}"
    log.info("on-policy AUC against %s on %d held-out prompts x %d sampled answers: %s (within a prompt: %s over %d "
             "pairs)", comp.stats["labeller"], res["prompts"], cfg.rm.samples_per_prompt, fmt(res["on_policy_auc"]),
             fmt(res["on_policy_within_prompt_auc"]), res["within_prompt_pairs"])
    return res
