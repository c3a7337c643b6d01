"""The kinds of reward source and labeller, registered once: how a spec of each kind is written, how it is
recognised, and what it can do (reward stage 3, score its evaluation, label comparisons now or from a file).

    checker                   the bundled dataset's checker
    rule:module:function      a Python function (``module:function`` also works)
    http(s)://URL             the HTTP reward contract
    model / model:DIR         a trained scalar reward model
    judge:MODEL               a local causal LM comparing two answers
    human:FILE / human:DIR   people's verdicts, read from a filled-in labelling file or a server's collection
                             (chat.py --collect DIR: its verdicts, and its thumbs as pointwise labels)

``parse(spec, role)`` finds a spec's kind once and checks that it can play ``role``; its error lists the
kinds that can, as does ``syntaxes(role)`` for the command line's help. The builders are registered by the
modules that own them (``reward_sources`` for rewards, ``labels/labellers`` for labellers), so that this file
imports nothing of the project.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


class SourceError(ValueError):
    """A spec of no known kind, or of a kind that cannot play the role asked for."""


@dataclass
class SourceKind:
    name: str
    syntax: str                                 # how a spec is written (help text and errors)
    match: Callable[[str], Optional[str]]       # spec -> its target (the part after the prefix), None: not this kind
    roles: frozenset                            # what it can do: keys of ROLES
    reward: Optional[Callable] = None           # (target, **options) -> a reward source; set by reward_sources
    label: Optional[Callable] = None            # (target, **options) -> a labeller; set by labels/labellers
                                                # (none: a labeller scoring with the kind's reward source)

    @property
    def offline(self) -> bool:
        """Its labels are read from a file, not asked for."""
        return "label" in self.roles and "judge" not in self.roles


ROLES = {       # role -> what a source playing it does (errors and help)
    "reward": "reward stage 3",
    "metric": "score the evaluation",
    "label": "label comparisons",
    "judge": "label rollouts as they come",
}
REWARD, ANSWERS = frozenset({"reward", "metric", "label", "judge"}), frozenset({"label", "judge"})


def _prefixed(prefix: str) -> Callable[[str], Optional[str]]:
    def match(spec: str) -> Optional[str]:
        if spec.startswith(prefix) and spec[len(prefix):]:
            return spec[len(prefix):]
        return None
    return match


def _model(spec: str) -> Optional[str]:
    return "" if spec == "model" else _prefixed("model:")(spec)


def _rule(spec: str) -> Optional[str]:
    target = spec[5:] if spec.startswith("rule:") else spec
    module, _, function = target.partition(":")
    return target if module and function else None


SOURCE_KINDS: dict[str, SourceKind] = {k.name: k for k in (     # in the order specs are matched
    SourceKind("checker", "checker", lambda s: "" if s == "checker" else None, REWARD),
    SourceKind("http", "http(s)://URL", lambda s: s if s.startswith(("http://", "https://")) else None, REWARD),
    SourceKind("model", "model, model:DIR", _model, frozenset({"reward"})),
    SourceKind("judge", "judge:MODEL", _prefixed("judge:"), ANSWERS),
    SourceKind("human", "human:FILE", _prefixed("human:"), frozenset({"label"})),       # read from its file
    SourceKind("rule", "rule:module:function", _rule, REWARD),
)}


def register(kind: str, role: str) -> Callable:
    """Decorator: the builder of ``kind`` for ``role`` ('reward' or 'label')."""
    def deco(fn: Callable) -> Callable:
        assert role in SOURCE_KINDS[kind].roles, (kind, role)
        setattr(SOURCE_KINDS[kind], role, fn)
        return fn
    return deco


def kinds_for(role: str) -> list[SourceKind]:
    return [k for k in SOURCE_KINDS.values() if role in k.roles]


def syntaxes(role: str) -> str:
    """The specs that can play ``role``, for help texts and errors."""
    return ", ".join(k.syntax for k in kinds_for(role))


def parse(spec: str, role: str) -> tuple[SourceKind, str]:
    """(the kind of ``spec``, its target); ``SourceError`` when no kind matches or the kind cannot play ``role``."""
    what = ROLES[role]
    for k in SOURCE_KINDS.values():
        target = k.match(spec)
        if target is not None:
            if role not in k.roles:
                raise SourceError(f"{spec!r} ({k.syntax}) cannot {what}: use {syntaxes(role)}")
            return k, target
    raise SourceError(f"unknown source {spec!r}: to {what} use {syntaxes(role)}")
