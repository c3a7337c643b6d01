"""Tools from ``module:function`` specs: the function and its JSON schema (transformers' ``get_json_schema``,
from the type hints and the Google-style docstring), so the chat template can render it."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

BUNDLED = {"calculator": "training.utils.tools.calculator:calculator"}    # short names for bundled tools


class ToolError(ValueError):
    """A tool spec that cannot be used; the message names the spec and the flag."""


@dataclass(frozen=True)
class Tool:
    name: str
    target: str           # module:function, importable in a worker process too
    fn: Callable
    schema: dict          # {"type": "function", "function": {"name", "description", "parameters"}}


def load_tool(spec: str, flag: str = "--tools") -> Tool:
    from transformers.utils import get_json_schema

    target = BUNDLED.get(spec, spec)
    mod, _, name = target.rpartition(":")
    if not mod or not name:
        raise ToolError(f"{flag}: {spec!r} is neither a bundled tool ({', '.join(BUNDLED)}) nor module:function")
    try:
        fn = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ToolError(f"{flag}: {spec!r}: cannot import ({e})") from e
    if not callable(fn):
        raise ToolError(f"{flag}: {spec!r} is not callable")
    try:
        schema = get_json_schema(fn)
    except Exception as e:      # transformers' DocstringParsingException / TypeHintParsingException
        raise ToolError(f"{flag}: {spec!r}: no JSON schema from its type hints and docstring: {e}") from e
    schema["function"].pop("return", None)
    return Tool(schema["function"]["name"], target, fn, schema)


def load_tools(specs, flag: str = "--tools") -> list[Tool]:
    """``specs``: a list of specs, each of which may hold several separated by commas."""
    tools = [load_tool(s.strip(), flag) for item in specs for s in str(item).split(",") if s.strip()]
    names = [t.name for t in tools]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ToolError(f"{flag}: two tools are named {', '.join(dup)}")
    return tools

