"""The command line of every stage: flags from the config tree, layered over presets and files.

``parse_config(argv, stage=...)`` builds a ``Config`` from (lowest first) the stage's overrides, each
``--config`` file and the command-line flags, then applies every rule: the tree's own
(``Config.validate``), the algorithm's (``rl/advantages.check``) and the reward sources'
(``reward_sources.check``). The choices of a field that names a registry (``--algo``,
``--policy_loss``) are that registry's entries, so a new algorithm is a flag value at once. Values from
flags and YAML/JSON files are converted to each field's type here (``load_config_file``,
``config_from_flat``), with errors that name the file, key or flag.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Optional

from . import reward_sources
from .source_kinds import syntaxes
from .config import STAGE_SECTIONS, Config, ConfigError, all_fields, owners, section, top_sections
from .losses import PREFERENCE_LOSSES
from .rl import advantages
from .rl.policy_losses import POLICY_LOSSES
from .rl.rollout import ROLLOUT_ENGINES
from .tools.check import check as check_tools

REGISTRIES = {           # registry name (a field's ``registry``) -> its choices
    "algorithms": tuple(advantages.ESTIMATORS),
    "policy_losses": ("",) + tuple(n for n, loss in POLICY_LOSSES.items() if not loss.pairs),
    "rollout_engines": tuple(ROLLOUT_ENGINES),
    "preference_losses": tuple(PREFERENCE_LOSSES),
}


# --------------------------------------------------------------------------- values into the tree

def str2bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "y", "on"):
        return True
    if s in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")


def _coerce(value: Any, typ, where: str):
    """Convert a file or flag value to the field's type, or raise ConfigError naming it."""
    try:
        if typ is bool:
            return str2bool(value)
        if typing.get_origin(typ) is list:
            if isinstance(value, str):
                value = value.split()
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"expected a list, got {type(value).__name__}")
            item = typing.get_args(typ)[0] if typing.get_args(typ) else str
            return [_coerce(v, item, where) for v in value]
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise TypeError(f"expected an integer, got {value}")
            if isinstance(value, bool):
                raise TypeError("expected an integer, got a boolean")
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise TypeError("expected a number, got a boolean")
            return float(value)
        if typ is str:
            if isinstance(value, (dict, list)):
                raise TypeError(f"expected a string, got {type(value).__name__}")
            return str(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
        raise ConfigError(f"{where}: {e}") from None
    raise AssertionError(f"unsupported config type {typ}")


def load_config_file(path: str) -> dict:
    """Flat {field: value} from a YAML/JSON file with flat keys or section mappings."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml
            raw = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ConfigError(f"{path}: cannot parse config file: {e}") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    leaves = {f.name: (s, typ) for s, f, typ in all_fields()}
    paths = {path for path, _, _ in all_fields()} | {name for name, _ in top_sections()}
    alias = _alias_map()
    flat: dict[str, Any] = {}

    def take(mapping: dict, where: str) -> None:
        """A section's keys: its leaves (at any depth below it: ``rl: {kl_coef: ..}``) or its subsections."""
        for k, v in mapping.items():
            here = f"{where}.{k}" if where else k
            if here in paths and isinstance(v, dict):
                take(v, here)
                continue
            name = alias.get(k, k)
            if name not in leaves or not (leaves[name][0] + ".").startswith(f"{where}." if where else ""):
                raise ConfigError(f"{path}: unknown key '{here}'")
            flat[name] = _coerce(v, leaves[name][1], f"{path}: '{here}'")
    take(raw, "")
    return flat


def _alias_map() -> dict[str, str]:
    out = {}
    for _, f, _ in all_fields():
        out[f.name.replace("_", "-")] = f.name
        for a in f.metadata.get("aliases", ()):
            out[a.lstrip("-")] = f.name
            out[a.lstrip("-").replace("_", "-")] = f.name
    return out


def config_from_flat(values: dict) -> Config:
    cfg = Config()
    leaves = {f.name: (s, typ) for s, f, typ in all_fields()}
    for name, value in values.items():
        sec, typ = leaves[name]
        setattr(section(cfg, sec), name, _coerce(value, typ, f"--{name}"))
    if cfg.model.disable_dropout:       # DeepSpeed-Chat's step-2 spelling of --dropout 0
        cfg.model.dropout = 0.0
    return cfg


# --------------------------------------------------------------------------- the command line

def _help(f: dataclasses.Field, default: Any) -> str:
    text = f.metadata.get("help", "")
    if f.metadata.get("registry") == "algorithms":
        text += ": " + ", ".join(advantages.critic_free())
    if f.metadata.get("sources"):
        text += f"; one of: {syntaxes(f.metadata['sources'])}"
    # argparse %-formats help strings: a literal '%' (e.g. "2-4% of the rows") must be doubled
    return f"{text} (default: {default!r})".replace("%", "%%")


def build_parser(description: str = "", stage: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of ``stage`` (a key of ``STAGE_SECTIONS``; None: every field of the tree)."""
    if stage is not None and stage not in STAGE_SECTIONS:
        raise AssertionError(f"unknown stage {stage!r}")
    p = argparse.ArgumentParser(description=description, argument_default=argparse.SUPPRESS, allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", nargs="+", help="YAML or JSON file(s) with config values (sections or flat keys; keys "
                                               "of other stages are allowed and left to them); a later file wins")
    for sec_name, f, typ in all_fields():
        if stage is not None and stage not in owners(sec_name, f.name):
            continue
        group = next((g for g in p._action_groups if g.title == sec_name), None) or p.add_argument_group(sec_name)
        names = [f"--{f.name}"]
        if "_" in f.name:
            names.append(f"--{f.name.replace('_', '-')}")
        for a in f.metadata.get("aliases", ()):
            names += [a] + ([a.replace("_", "-")] if "_" in a[2:] else [])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw: dict[str, Any] = {"dest": f.name, "help": _help(f, default)}
        if typ is bool:
            kw.update(nargs="?", const=True, type=str2bool, metavar="BOOL")
        elif typing.get_origin(typ) is list:
            kw.update(nargs="+", type=(typing.get_args(typ) or (str,))[0])
        else:
            kw["type"] = typ
        choices = REGISTRIES[f.metadata["registry"]] if f.metadata.get("registry") else f.metadata.get("choices")
        if choices:
            kw["choices"] = choices
        group.add_argument(*names, **kw)
    return p


def _layers(argv: Optional[list[str]], description: str, overrides: Optional[dict],
            stage: Optional[str]) -> list[tuple[str, dict]]:
    """(source, {field: value}) from the lowest to the highest: stage overrides, each --config file,
    the command-line flags."""
    ns = vars(build_parser(description, stage).parse_args(argv))
    layers = [("overrides", dict(overrides or {}))]
    layers += [(f"config file {path}", load_config_file(path)) for path in ns.pop("config", [])]
    return layers + [("flag", ns)]


def check(cfg: Config) -> Config:
    """Every rule: the tree's, the algorithm's, the reward sources', the tools'."""
    cfg.validate()
    advantages.check(cfg.rl)
    reward_sources.check(cfg)
    check_tools(cfg.tools)
    return cfg


def parse_config(argv: Optional[list[str]] = None, description: str = "",
                 overrides: Optional[dict] = None, stage: Optional[str] = None) -> Config:
    """Defaults < stage overrides < --config files (in order) < command-line flags (``stage``'s flags only)."""
    values: dict = {}
    for _, layer in _layers(argv, description, overrides, stage):
        values.update(layer)
    cfg = config_from_flat(values)
    if stage == "rl" and "max_seq_len" not in values:     # stage 3's sequences: a prompt and its answer
        cfg.data.max_seq_len = cfg.data.max_prompt_seq_len + cfg.data.max_answer_seq_len
    return check(cfg)


def explain(argv: list[str], stage: str) -> list[tuple[str, Any, str]]:
    """(field, resolved value, where it came from: 'flag', 'config file PATH' or 'default') for every
    field of ``stage``, as ``parse_config(argv, stage=stage)`` resolves them."""
    cfg, source = parse_config(argv, stage=stage), {}
    for where, layer in _layers(argv, "", None, stage):
        source.update({name: where for name in layer})
    if stage == "rl" and "max_seq_len" not in source:
        source["max_seq_len"] = "max_prompt_seq_len + max_answer_seq_len"
    if cfg.model.disable_dropout and "dropout" not in source:
        source["dropout"] = "--disable_dropout"
    return [(f.name, getattr(section(cfg, sec), f.name), source.get(f.name, "default"))
            for sec, f, _ in all_fields() if stage in owners(sec, f.name)]
