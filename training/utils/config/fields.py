"""The config tree's building blocks: its error, its field maker (help, aliases, choices) and the
``--data_split`` parser. Imports nothing of the project."""
from __future__ import annotations

from dataclasses import field
from typing import Any, Optional


class ConfigError(ValueError):
    """A configuration value (flag or file entry) that cannot be used."""


def _f(default: Any, help: str, *, aliases: tuple[str, ...] = (), choices: Optional[tuple] = None,
       registry: str = "", sources: str = ""):
    """A field with its help, DeepSpeed-Chat aliases and choices; ``registry`` names the registry whose
    entries are the choices (``arguments.REGISTRIES``: filled when the command line is built); ``sources``
    names the role its reward-source or labeller specs play (``source_kinds.ROLES``: the help lists them)."""
    meta = {"help": help, "aliases": aliases, "choices": choices, "registry": registry, "sources": sources}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


def parse_split(text: str) -> list[float]:
    """'2,4,4' -> [0.2, 0.4, 0.4]."""
    try:
        parts = [float(x) for x in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"data_split must be three comma-separated numbers, got {text!r}") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise ConfigError(f"data_split must be three non-negative numbers with a positive sum, got {text!r}")
    total = sum(parts)
    return [p / total for p in parts]
