"""The ``tools`` section's specs, loaded once at parse time so a bad one fails before any model loads."""
from __future__ import annotations

from ..config import ConfigError
from .environment import EnvError, load_environment
from .parsers import get_parser
from .spec import ToolError, load_tools


def check(tools_cfg) -> None:
    """Tools, parser and environment load; errors name the flag."""
    try:
        load_tools(tools_cfg.tools)
        get_parser(tools_cfg.tool_parser)
        if tools_cfg.environment:
            load_environment(tools_cfg.environment)
    except (ToolError, EnvError, ValueError) as e:
        raise ConfigError(str(e)) from e
