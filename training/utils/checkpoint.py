"""Resumable checkpoints: DeepSpeed engine state (model, optimizer, scheduler) plus our own state.

Layout under ``<output_dir>/checkpoints/``::

    step-00000040/
        actor/ ...             engine.save_checkpoint(dir, tag="actor") (one tag per engine)
        state.json             step, data position, counters, controller statistics (rank 0)
        rng-rank{r}.pt         torch / CUDA / Python / NumPy RNG states of rank r (tensors and ints only)
        MANIFEST.json          every file with its size, written last
    .tmp-step-00000060/        a checkpoint being written: never loaded, removed on the next save

A checkpoint is written into a temporary directory and renamed into place once complete; the
manifest lets ``latest()`` reject a checkpoint whose files were truncated or removed afterwards and
fall back to the one before. The last ``keep`` checkpoints are kept.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .distributed import barrier, is_main, rank
from .files import usual_modes

log = logging.getLogger("speedchat")
NAME = re.compile(r"^step-(\d{8})$")
MANIFEST = "MANIFEST.json"


def ckpt_root(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "python": random.getstate()}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    st["numpy"] = [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    v, keys, pos = st["python"]
    random.setstate((v, tuple(keys), pos))
    kind, keys, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _manifest(d: Path) -> dict:
    return {str(p.relative_to(d)): p.stat().st_size for p in sorted(d.rglob("*")) if p.is_file() and p.name != MANIFEST}


def verify(d: Path) -> Optional[str]:
    """None when checkpoint ``d`` is complete and intact, else the reason it is not."""
    m = d / MANIFEST
    if not m.is_file():
        return "no manifest (the save did not finish)"
    try:
        want = json.loads(m.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"unreadable manifest ({e})"
    for rel, size in want.items():
        p = d / rel
        if not p.is_file():
            return f"missing file {rel}"
        if p.stat().st_size != size:
            return f"{rel} is {p.stat().st_size} bytes, the manifest says {size}"
    return None


def list_checkpoints(output_dir) -> list[tuple[int, Path]]:
    root = ckpt_root(output_dir)
    if not root.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in root.iterdir() if (m := NAME.match(p.name)) and p.is_dir()]
    return sorted(out)


def latest(output_dir) -> Optional[Path]:
    """The newest intact checkpoint; damaged ones are reported and skipped."""
    for _step, d in reversed(list_checkpoints(output_dir)):
        why = verify(d)
        if why is None:
            return d
        log.warning("checkpoint %s is not usable (%s); trying the one before", d, why)
    return None


def save(output_dir, step: int, engines: dict, state: dict, keep: int = 2, extra_tensors: Optional[dict] = None,
         rank_state: Optional[dict] = None) -> Path:
    """Write checkpoint ``step`` atomically (collective: every rank calls it). ``state`` is rank 0's;
    ``rank_state`` is each rank's own (``load`` merges it back into the state on that rank)."""
    root = ckpt_root(output_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if is_main():
        root.mkdir(parents=True, exist_ok=True)
        for old in root.glob(".tmp-*"):          # leftovers of a run killed while saving
            shutil.rmtree(old, ignore_errors=True)
        tmp.mkdir()
    barrier()
    for name, engine in engines.items():
        engine.save_checkpoint(str(tmp), tag=name, save_latest=False)
    torch.save(rng_state(), tmp / f"rng-rank{rank()}.pt")
    if rank_state:
        (tmp / f"state-rank{rank()}.json").write_text(json.dumps(rank_state))
    if is_main():
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
        if extra_tensors:
            from safetensors.torch import save_file

            for fname, tensors in extra_tensors.items():
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / fname))
    barrier()
    if is_main():
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp), indent=1))
        usual_modes(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint saved: %s", final)
    barrier()
    return final


def load(d: Path, engines: dict) -> dict:
    """Restore engines and RNG states from checkpoint ``d``; returns our state dict."""
    for name, engine in engines.items():
        path, _ = engine.load_checkpoint(str(d), tag=name, load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"checkpoint {d}: DeepSpeed could not load the {name!r} engine state")
    rng_file = d / f"rng-rank{rank()}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=True))
    else:
        log.warning("checkpoint %s has no RNG state for rank %d (saved with another world size?)", d, rank())
    state = json.loads((d / "state.json").read_text())
    own = d / f"state-rank{rank()}.json"
    if own.is_file():
        state.update(json.loads(own.read_text()))
    log.info("resumed from %s (step %d)", d, state["step"])
    return state


def load_tensors(d: Path, fname: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(d / fname))


def find_resume(cfg) -> Optional[Path]:
    """The checkpoint to resume from when ``--resume`` is on (None: start from scratch)."""
    if not cfg.ckpt.resume:
        return None
    d = latest(cfg.log.output_dir)
    if d is None:
        log.info("--resume: no usable checkpoint under %s; starting from scratch", ckpt_root(cfg.log.output_dir))
    return d
