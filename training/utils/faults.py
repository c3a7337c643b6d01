"""Fault injection for the reliability tests: ``--fault "kill_after=3,nan_at=2:5"``.

- ``kill_after=N``: the process sends itself SIGKILL right after optimizer step (or stage-3
  iteration) N, as a crash would, mid-stage and between checkpoints;
- ``nan_at=A:B:...``: the loss of those micro-batches (stages 1-2, counted from 1 in this process)
  or the rewards of those stage-3 iterations become NaN.

The flag is read once, when a loop starts (``parse``); without it no hook runs.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Optional

from .config import ConfigError


@dataclass(frozen=True)
class Faults:
    kill_after: frozenset = frozenset()
    nan_at: frozenset = frozenset()

    def after_step(self, step: int) -> None:
        if step in self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def nan(self, count: int) -> bool:
        return count in self.nan_at


def parse(spec: str) -> Optional[Faults]:
    """``Faults`` from ``--fault``'s text; None when it is empty."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, val = part.partition("=")
        if key not in ("kill_after", "nan_at"):
            raise ConfigError(f"--fault {spec!r}: unknown fault {key!r} (kill_after=N, nan_at=A:B)")
        try:
            out[key] = frozenset(int(v) for v in val.split(":") if v.strip())
        except ValueError:
            raise ConfigError(f"--fault {spec!r}: {key} takes integers separated by ':'") from None
    return Faults(**out) if out else None


class Faulty:
    """The reward of a run with ``--fault nan_at=...``: the rewards of those iterations become NaN (the
    loop sets ``iteration``)."""

    def __init__(self, reward, fault: Faults):
        self.reward, self.fault, self.iteration = reward, fault, 0

    @property
    def parts(self) -> dict:
        return self.reward.parts

    def __call__(self, rollout):
        r = self.reward(rollout)
        return r * float("nan") if self.iteration and self.fault.nan(self.iteration) else r
