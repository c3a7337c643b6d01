"""API keys for what the server serves (``/v1/*``), as OpenAI-compatible servers take them: the
``Authorization: Bearer KEY`` header, so the ``openai`` client's ``api_key=`` works.

Keys come from ``--api-key KEY`` (repeatable), the ``SPEEDCHAT_API_KEY`` environment variable
(comma-separated) and ``--api-key-file FILE`` (one ``NAME KEY`` or bare ``KEY`` per line; blank lines
and ``#`` comments skipped), each with the name of whoever holds it (``key1``, ``key2``, ... when not
given). A request's key is compared with every key in constant time (``hmac.compare_digest``).
"""
from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Optional, Sequence

ENV = "SPEEDCHAT_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class AuthError(ValueError):
    """A key file or key that cannot be used; the message names the file and line."""


class Keys:
    """{name: key}; ``who(authorization header)`` -> the holder's name, or None."""

    def __init__(self, named: dict[str, str]):
        self.named = dict(named)

    def __bool__(self) -> bool:
        return bool(self.named)

    @classmethod
    def gather(cls, keys: Sequence[str] = (), key_file: Optional[str] = None, env: Optional[dict] = None) -> "Keys":
        env = os.environ if env is None else env
        plain = list(keys) + [k.strip() for k in env.get(ENV, "").split(",") if k.strip()]
        named: dict[str, str] = {}
        if key_file:
            named.update(read_key_file(key_file))
        for k in plain:
            _check_key(k, "--api-key" if k in keys else ENV)
            if k not in named.values():
                named[f"key{len(named) + 1}"] = k
        return cls(named)

    def who(self, authorization: Optional[str]) -> Optional[str]:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip().encode() if scheme.lower() == "bearer" else b""
        found = None
        for name, key in self.named.items():        # every key compared: the time does not say which matched
            if hmac.compare_digest(token, key.encode()):
                found = name
        return found


def _check_key(key: str, where: str) -> None:
    if len(key) < 8 or any(c.isspace() for c in key):
        raise AuthError(f"{where}: an API key must be at least 8 characters without spaces")


def read_key_file(path: str) -> dict[str, str]:
    """{name: key} of a key file; AuthError naming the file and line for a bad one."""
    p = Path(path)
    if not p.is_file():
        raise AuthError(f"--api-key-file {path}: no such file")
    named: dict[str, str] = {}
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) > 2:
            raise AuthError(f"{path}: line {i}: expected 'NAME KEY' or 'KEY', got {len(parts)} fields")
        name, key = (parts if len(parts) == 2 else (f"key{len(named) + 1}", parts[0]))
        _check_key(key, f"{path}: line {i}")
        if name in named:
            raise AuthError(f"{path}: line {i}: the name {name!r} is given twice")
        if key in named.values():
            raise AuthError(f"{path}: line {i}: this key is already given to another name")
        named[name] = key
    if not named:
        raise AuthError(f"{path}: no key in the file")
    return named


def refuse_open_binding(host: str, keys: Keys, no_auth: bool) -> None:
    """Serving beyond loopback needs a key, or ``--no-auth`` saying so on purpose."""
    if host not in LOOPBACK and not keys and not no_auth:
        raise AuthError(f"--host {host} is reachable from other machines: give --api-key / --api-key-file / "
                        f"{ENV}, or --no-auth to serve without a key")
