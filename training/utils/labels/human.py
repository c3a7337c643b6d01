"""Human labels as a JSONL file: stage 2 exports the comparisons to make, people fill in a
``preference`` per row, stage 2 reads the verdicts back as chosen/rejected pairs.

A row: ``{"prompt": str or [messages], "answer_a": str, "answer_b": str, "preference": "a" | "b" |
"tie" | "skip"}`` (``A`` / ``B`` accepted too; other keys are kept for the people and ignored here).
A tie or a skip gives no pair. Any other preference, or a missing field, stops the run with the
file, row and field named.

``human:DIR`` reads a collection directory (``chat.py --serve --collect DIR``): the verdicts on its
comparisons (``comparisons.labels.jsonl``, the file above) and the thumbs on its answers
(``feedback.jsonl``, joined with ``conversations.jsonl`` by the answer's id). A thumb is a pointwise label
(1 up, 0 down: the ``--pointwise_weight`` term); a conversation with an answer up and another down also
gives that pair.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..data.sources import (COLLECTED_FILES, DataError, Keys, collected_conversations, first_of_each,
                            jsonl_objects, log, normalise_row, plain_conversation)

PREFERENCES = ("a", "b", "tie", "skip")


def _err(path, row: int, field: str, msg: str) -> DataError:
    return DataError(f"{path}: row {row}: field '{field}': {msg}")


def read_human_labels(path: str | os.PathLike) -> tuple[list[dict], dict, list[dict]]:
    """(pairs as canonical rows {prompt, chosen, rejected}, counts {rows, a, b, tie, skip, ...}, pointwise labels
    {prompt (messages), answer, label}) of a human-label JSONL or a collection directory."""
    p = Path(path)
    if p.is_dir():
        return read_collected_labels(p)
    pairs, counts = read_verdicts(p)
    if counts["rows"] == 0:
        raise DataError(f"human labels {p}: no rows")
    return pairs, counts, []


def read_verdicts(p: Path, journal: bool = False) -> tuple[list[dict], dict]:
    """(pairs, counts) of a human-label JSONL (no rows: empty pairs, counts["rows"] 0); ``journal``: a server's
    verdicts file (``jsonl_objects``)."""
    if not p.is_file():
        raise DataError(f"human labels {p}: no such file (export one with --export_for_labelling)")
    pairs, counts = [], {"rows": 0, **{k: 0 for k in PREFERENCES}}
    # a verdict given twice for one comparison counts once
    for row, obj in first_of_each(jsonl_objects(p, journal), "id", p):
        if not isinstance(obj, dict):
            raise DataError(f"{p}: row {row}: expected a JSON object, got {type(obj).__name__}")
        for field in ("prompt", "answer_a", "answer_b", "preference"):
            if field not in obj or obj[field] is None:
                raise _err(p, row, field, "missing")
        for field in ("answer_a", "answer_b"):
            if not isinstance(obj[field], str):
                raise _err(p, row, field, f"expected a string, got {type(obj[field]).__name__}")
            if not obj[field].strip() and not journal:
                raise _err(p, row, field, "empty")
        pref = obj["preference"]
        if not isinstance(pref, str) or pref.strip().lower() not in PREFERENCES:
            raise _err(p, row, "preference", f"{pref!r} is not one of {', '.join(PREFERENCES)}")
        pref = pref.strip().lower()
        counts["rows"] += 1
        counts[pref] += 1
        if pref in ("tie", "skip"):
            continue
        if not obj["answer_a"].strip() or not obj["answer_b"].strip():     # a server's pair with an empty answer
            counts["empty"] = counts.get("empty", 0) + 1
            log.warning("%s: row %d: an empty answer; no pair (a reward-model row needs two answers)", p, row)
            continue
        chosen, rejected = ("answer_a", "answer_b") if pref == "a" else ("answer_b", "answer_a")
        # the same validation as every data row: the prompt may be text or messages, answers non-empty
        pairs.append(normalise_row({"prompt": obj["prompt"], "chosen": obj[chosen], "rejected": obj[rejected]},
                                   str(p), row, Keys(chosen="chosen", rejected="rejected")))
    return pairs, counts


def read_collected_labels(directory: Path) -> tuple[list[dict], dict, list[dict]]:
    """Everything people labelled in a collection directory: the verdicts on its comparisons, and its thumbs as
    pointwise labels (and as pairs where one conversation has an answer up and another down)."""
    verdicts = directory / COLLECTED_FILES["verdicts"]
    none = ([], {"rows": 0, **{k: 0 for k in PREFERENCES}})
    pairs, counts = read_verdicts(verdicts, journal=True) if verdicts.is_file() else none
    feedback = directory / COLLECTED_FILES["feedback"]
    thumbs = list(first_of_each(jsonl_objects(feedback, journal=True), "id", feedback)) if feedback.is_file() else \
        []
    answers = {obj["id"]: obj for _, obj in collected_conversations(directory)} if thumbs else {}
    labels, by_prompt, skipped = [], {}, 0
    for row, obj in thumbs:
        if not isinstance(obj, dict) or obj.get("label") not in (0, 1, 0.0, 1.0):
            raise _err(feedback, row, "label", "expected 1 (up) or 0 (down)")
        if obj.get("id") not in answers:
            raise _err(feedback, row, "id", f"{obj.get('id')!r} is not an answer of "
                                            f"{directory / COLLECTED_FILES['conversations']}")
        rec = answers[obj["id"]]
        if not plain_conversation(rec["messages"]) or not isinstance(rec.get("answer"), str):
            skipped += 1          # a tool-calling turn: its answer is a call, not text to score
            continue
        labels.append({"prompt": rec["messages"], "answer": rec["answer"], "label": float(obj["label"])})
        by_prompt.setdefault(json.dumps(rec["messages"], sort_keys=True), []).append((row, labels[-1]))
    if skipped:
        log.warning("%s: %d thumb(s) on tool-calling turns skipped (only text answers are scored)", feedback, skipped)
    thumb_pairs = 0
    for group in by_prompt.values():
        ups = [(row, x) for row, x in group if x["label"] == 1.0]
        downs = [x for _, x in group if x["label"] == 0.0]
        for row, up in ups:
            for down in downs:
                if up["answer"].strip() != down["answer"].strip() and up["answer"].strip() and down["answer"].strip():
                    pairs.append(normalise_row({"prompt": up["prompt"], "chosen": up["answer"],
                                                "rejected": down["answer"]}, str(feedback), row, Keys()))
                    thumb_pairs += 1
    up = sum(x["label"] == 1.0 for x in labels)
    counts.update(thumbs=len(labels), up=up, down=len(labels) - up, thumb_pairs=thumb_pairs)
    if counts["rows"] == 0 and not labels:
        raise DataError(f"human labels {directory}: nothing labelled yet: no verdicts in {verdicts.name} and no "
                        f"thumbs in {feedback.name} (label at the server's /label page, or thumbs on its chat page)")
    return pairs, counts, labels


def prompt_field(messages: list[dict]):
    """A canonical prompt as a file shows it: the text of a lone user turn, else the message list."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return messages


def write_jsonl(path: str | os.PathLike, rows: Sequence[dict], replace: bool = False) -> Path:
    """Write ``rows`` whole or not at all (a temporary file renamed); an existing file is replaced only
    with ``replace``."""
    p = Path(path)
    if p.exists() and not replace:
        raise DataError(f"{p} exists: it may hold labels; choose another path or move it away")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, p)
    return p
