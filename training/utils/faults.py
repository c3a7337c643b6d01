"""Fault injection for the reliability tests: ``SPEEDCHAT_FAULTS="kill_after=3,nan_at=2:5"``.

- ``kill_after=N``: the process sends itself SIGKILL right after optimizer step (or stage-3
  iteration) N, as a crash would, mid-stage and between checkpoints;
- ``nan_at=A:B:...``: the loss of those micro-batches (stages 1-2, counted from 1 in this process)
  or the rewards of those stage-3 iterations become NaN.

Unset (always, outside tests) it does nothing.
"""
from __future__ import annotations

import os
import signal


def _spec() -> dict:
    out = {}
    for part in filter(None, os.environ.get("SPEEDCHAT_FAULTS", "").split(",")):
        key, _, val = part.partition("=")
        out[key.strip()] = [int(v) for v in val.split(":") if v.strip()]
    return out


def after_step(step: int) -> None:
    if step in _spec().get("kill_after", []):
        os.kill(os.getpid(), signal.SIGKILL)


def nan_at(step: int) -> bool:
    return step in _spec().get("nan_at", [])
