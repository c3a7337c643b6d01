"""Environments: what answers the model between its turns.

The protocol has two calls, made on one instance per rollout (a conversation):

- ``reset(row) -> messages``: the conversation the model starts from (``row``: the dataset row, its
  ``messages`` and its other columns);
- ``step(messages) -> (observations, done, reward)``: given the conversation so far, which ends with
  the model's turn, the messages that answer it (``tool``, ``user``, ...), whether the conversation is
  over, and an optional reward (None, or a float added to the reward sources' score).

An environment may also have ``tools`` (JSON schemas the chat template shows the model). It is loaded
by ``--environment module:Class`` and built once per rollout as ``Class()``. The tool loop below is one
environment: each turn's calls are parsed and run, their results are the observations, and a turn
without a call ends the conversation.

TRL's ``environment_factory`` builds the same thing: a factory per rollout whose ``reset`` and
``step`` map onto these two calls. verl's ``BaseTool`` (create / execute / calc_reward / release)
is one tool of a ``ToolEnvironment``: ``execute`` is the function, ``calc_reward`` the ``reward``
returned by ``step``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from .executor import ToolExecutor
from .parsers import Parsed


class EnvError(ValueError):
    """An environment spec or answer that cannot be used; the message names the flag or the class."""


class Environment(Protocol):
    def reset(self, row: dict) -> list[dict]: ...

    def step(self, messages: list[dict]) -> tuple[list[dict], bool, Optional[float]]: ...


@dataclass
class Step:
    observations: list[dict]
    done: bool
    reward: Optional[float] = None
    calls: list[dict] = field(default_factory=list)     # {"name", "arguments", "status", "content"} per call


def as_step(out, where: str) -> Step:
    """An environment's ``step`` answer (a Step, or a 2- or 3-tuple) as a Step; a clear error otherwise."""
    if isinstance(out, Step):
        return out
    if isinstance(out, tuple) and len(out) in (2, 3):
        obs, done, reward = (*out, None) if len(out) == 2 else out
        if not isinstance(obs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in obs):
            raise EnvError(f"{where}.step: observations must be a list of {{'role', 'content'}} messages, "
                                    f"got {obs!r:.200}")
        if reward is not None and not isinstance(reward, (int, float)):
            raise EnvError(f"{where}.step: reward must be a number or None, got {reward!r:.100}")
        return Step(obs, bool(done), None if reward is None else float(reward))
    raise EnvError(f"{where}.step must return (observations, done) or (observations, done, reward), "
                            f"got {out!r:.200}")


class ToolEnvironment:
    """The tool loop: parse the model's calls, run them, answer with one ``tool`` message per call."""

    def __init__(self, executor: ToolExecutor, parser: Callable[[str], Parsed]):
        self.executor, self.parser = executor, parser
        self.tools = [t.schema for t in executor.tools.values()]

    def reset(self, row: dict) -> list[dict]:
        return [dict(m) for m in row["messages"]]

    def parse(self, messages: list[dict]) -> Parsed:
        return self.parser(messages[-1]["content"])

    def observe(self, parsed: Parsed, results) -> Step:
        calls = [{"name": c.name, "arguments": c.arguments, "status": r.status, "content": r.content}
                 for c, r in zip(parsed.calls, results)]
        return Step([r.message() for r in results], not parsed.calls, None, calls)

    def step(self, messages: list[dict]) -> Step:
        parsed = self.parse(messages)
        return self.observe(parsed, self.executor.run(parsed.calls))


def load_environment(spec: str, flag: str = "--environment") -> Callable[[], object]:
    """The class (factory) named ``module:Class``; checked for ``reset`` and ``step``."""
    mod, _, name = spec.rpartition(":")
    if not mod or not name:
        raise EnvError(f"{flag}: expected module:Class, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise EnvError(f"{flag}: {spec!r}: cannot import ({e})") from e
    for method in ("reset", "step"):
        if not callable(getattr(factory, method, None)):
            raise EnvError(f"{flag}: {spec!r} has no {method}() method (an environment has reset(row) "
                                    "and step(messages))")
    return factory
