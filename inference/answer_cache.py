"""Greedy answers kept on disk, keyed by what determines them.

Greedy decoding is deterministic: the same weights, tokenizer, prompts and generation settings
give the same answers. The closing evaluation of ``train.py`` answers the same held-out prompts
with the same base model on every run; this cache lets a second run reuse those answers instead
of generating them again (about 40 s on 2 CPU cores). A model is identified by the content of its
files (weights, config, tokenizer), never by its name or path, so a retrained model in the same
directory is a different entry.

    key = answers_key(model_dir, prompts, max_new_tokens=48, batch_size=32, template="auto")
    answers = load(key)            # None when absent
    store(key, answers)
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Optional

from training.utils.model.loader import CACHE

# files whose content decides what a model directory generates
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".jinja", ".model", ".txt")
_CHUNK = 1 << 22


def cache_dir() -> Path:
    return CACHE / "answers"


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """sha256 over the names and contents of the files that define the model (sorted)."""
    d = Path(model_dir)
    h = hashlib.sha256()
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES)
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        raise FileNotFoundError(f"{d}: no weight files (*.safetensors / *.bin) to fingerprint")
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def answers_key(model_dir: str | os.PathLike, prompts: list[str], **settings) -> str:
    """Cache key of greedy answers: model content, prompts, generation settings and library versions."""
    import torch
    import transformers

    blob = json.dumps({"model": model_fingerprint(model_dir), "prompts": prompts, "settings": settings,
                       "torch": torch.__version__, "transformers": transformers.__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load(key: str) -> Optional[list[str]]:
    p = cache_dir() / f"{key}.json"
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: corrupt answer cache entry ({e}); delete it and run again") from e
    return data["answers"]


def store(key: str, answers: list[str]) -> Path:
    """Write atomically (temporary file + rename): a reader never sees half an entry."""
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    target = d / f"{key}.json"
    tmp = d / f".tmp-{uuid.uuid4().hex}"
    tmp.write_text(json.dumps({"answers": answers}))
    os.replace(tmp, target)
    return target
