"""Human labels as a JSONL file: stage 2 exports the comparisons to make, people fill in a
``preference`` per row, stage 2 reads the verdicts back as chosen/rejected pairs.

A row: ``{"prompt": str or [messages], "answer_a": str, "answer_b": str, "preference": "a" | "b" |
"tie" | "skip"}`` (``A`` / ``B`` accepted too; other keys are kept for the people and ignored here).
A tie or a skip gives no pair. Any other preference, or a missing field, stops the run with the
file, row and field named.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..data.sources import DataError, Keys, first_of_each, jsonl_objects, normalise_row

PREFERENCES = ("a", "b", "tie", "skip")


def _err(path, row: int, field: str, msg: str) -> DataError:
    return DataError(f"{path}: row {row}: field '{field}': {msg}")


def read_human_labels(path: str | os.PathLike) -> tuple[list[dict], dict]:
    """(pairs as canonical rows {prompt, chosen, rejected}, counts {rows, a, b, tie, skip}) of a
    human-label JSONL."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"human labels {p}: no such file (export one with --export_for_labelling)")
    pairs, counts = [], {"rows": 0, **{k: 0 for k in PREFERENCES}}
    for row, obj in first_of_each(jsonl_objects(p), "id", p):     # a verdict given twice for one comparison: once
        if not isinstance(obj, dict):
            raise DataError(f"{p}: row {row}: expected a JSON object, got {type(obj).__name__}")
        for field in ("prompt", "answer_a", "answer_b", "preference"):
            if field not in obj or obj[field] is None:
                raise _err(p, row, field, "missing")
        for field in ("answer_a", "answer_b"):
            if not isinstance(obj[field], str):
                raise _err(p, row, field, f"expected a string, got {type(obj[field]).__name__}")
            if not obj[field].strip():
                raise _err(p, row, field, "empty")
        pref = obj["preference"]
        if not isinstance(pref, str) or pref.strip().lower() not in PREFERENCES:
            raise _err(p, row, "preference", f"{pref!r} is not one of {', '.join(PREFERENCES)}")
        pref = pref.strip().lower()
        counts["rows"] += 1
        counts[pref] += 1
        if pref in ("tie", "skip"):
            continue
        chosen, rejected = ("answer_a", "answer_b") if pref == "a" else ("answer_b", "answer_a")
        # the same validation as every data row: the prompt may be text or messages, answers non-empty
        pairs.append(normalise_row({"prompt": obj["prompt"], "chosen": obj[chosen], "rejected": obj[rejected]},
                                   str(p), row, Keys(chosen="chosen", rejected="rejected")))
    if counts["rows"] == 0:
        raise DataError(f"human labels {p}: no rows")
    return pairs, counts


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
