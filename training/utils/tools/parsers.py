"""Tool-call parsers: a model's turn text -> the calls it makes, by name (``--tool_parser``).

A parser returns a ``Parsed``: the text outside the calls and one ``Call`` per call found. A call
whose JSON does not parse, or lacks a name, is still returned, with ``error`` set, so the executor
can answer it with an error message and the metrics can count it. Another format is one function
registered with ``@register_parser("name")``.
"""
from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass
class Call:
    name: str = ""
    arguments: dict = field(default_factory=dict)
    error: str = ""          # why the call could not be read ("" when it could)
    raw: str = ""


@dataclass
class Parsed:
    content: str             # the text outside the calls
    calls: list[Call]


PARSERS: dict[str, Callable[[str], Parsed]] = {}


def register_parser(name: str):
    def deco(fn):
        PARSERS[name] = fn
        return fn
    return deco


def _call_from_json(raw: str) -> Call:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        return Call(error=f"the call is not valid JSON ({e.msg} at character {e.pos})", raw=raw)
    if not isinstance(obj, dict):
        return Call(error=f"the call is a JSON {type(obj).__name__}, not an object", raw=raw)
    name, args = obj.get("name"), obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(name, str) or not name:
        return Call(error="the call has no \"name\"", raw=raw)
    if isinstance(args, str):          # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return Call(name=name, error="\"arguments\" is a string that is not JSON", raw=raw)
    if not isinstance(args, dict):
        return Call(name=name, error=f"\"arguments\" is a JSON {type(args).__name__}, not an object", raw=raw)
    return Call(name=name, arguments=args, raw=raw)


_HERMES = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)


@register_parser("hermes")
def hermes(text: str) -> Parsed:
    """Hermes / Qwen: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, any number of them
    (an unclosed last tag runs to the end of the text)."""
    calls = [_call_from_json(m.group(1).strip()) for m in _HERMES.finditer(text)]
    return Parsed(_HERMES.sub("", text).strip(), calls)


def get_parser(name: str, flag: str = "--tool_parser") -> Callable[[str], Parsed]:
    """A registered parser by name, or ``module:function``."""
    if name in PARSERS:
        return PARSERS[name]
    mod, _, fn = name.rpartition(":")
    if not mod:
        raise ValueError(f"{flag}: no tool-call parser {name!r}; registered: {', '.join(sorted(PARSERS))} "
                         "(or give module:function)")
    try:
        parser = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{flag}: {name!r}: cannot import ({e})") from e
    if not callable(parser):
        raise ValueError(f"{flag}: {name!r} is not callable")
    return parser


def first_error(calls: list[Call]) -> Optional[str]:
    return next((c.error for c in calls if c.error), None)
