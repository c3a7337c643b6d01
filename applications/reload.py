"""Swapping the served model while the server runs: ``POST /admin/reload {"model": DIR}``.

The new model loads beside the old one, off the request path; it must be a loadable causal LM whose
tokenizer is the served one's (the same vocabulary and chat template: queued prompts were tokenized with
it). Then the engine is swapped between two batches: a batch already generating finishes on the old
weights, the next one runs on the new. A directory that does not load, or does not match, is refused with
the reason and the old model keeps serving. The admin key is separate from the API keys (``chat.py --serve
--admin-key-file FILE``); without one, reloading is off.

Every served model has a version: the first 12 hex digits of the sha256 of its weights (``GET /v1/models``).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from pathlib import Path
from typing import Callable, Optional

import torch
from starlette.requests import Request

from applications.auth import Keys
from applications.errors import HTTPError, json_body

log = logging.getLogger("speedchat")


class ReloadError(ValueError):
    """The model directory cannot replace the served model; the old one keeps serving."""


def weights_version(model) -> str:
    """The first 12 hex digits of the sha256 of the model's weights (names and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


class Served:
    """The model the server answers with (``engine``), its stable ``name`` and its weights' ``version``;
    ``reload(dir)`` builds a new engine with ``make_engine(dir)`` and swaps it in, telling ``on_swap``."""

    def __init__(self, engine, make_engine: Optional[Callable] = None, admin_key: Optional[str] = None):
        self.name, self.make = engine.name, make_engine
        self.admin = Keys({"admin": admin_key}) if admin_key else None
        self.current = (engine, weights_version(engine.model), engine.name)     # swapped whole: one assignment
        self.on_swap: list[Callable] = []
        self.lock = threading.Lock()              # one reload at a time

    @property
    def engine(self):
        return self.current[0]

    @property
    def version(self) -> str:
        return self.current[1]

    @property
    def path(self) -> str:
        return self.current[2]

    def describe(self) -> dict:
        return {"id": self.name, "version": self.version, "path": self.path}

    def reload(self, model_dir) -> dict:
        if self.make is None:
            raise ReloadError("this server cannot reload: it was not started with an engine factory")
        if not isinstance(model_dir, str) or not model_dir:
            raise ReloadError("body must be {\"model\": DIR}")
        d = Path(model_dir)
        if not (d / "config.json").is_file():
            raise ReloadError(f"{d}: not a model directory (no config.json); the served model is unchanged")
        with self.lock:
            try:
                new = self.make(str(d))
            except Exception as e:          # anything a broken directory raises: named, and the old one stays
                raise ReloadError(f"{d}: does not load ({type(e).__name__}: {e}); the served model is "
                                  "unchanged") from e
            old = self.engine
            if new.tok.get_vocab() != old.tok.get_vocab():
                raise ReloadError(f"{d}: its tokenizer's vocabulary differs from the served model's; the served "
                                  "model is unchanged")
            if getattr(new.tok, "chat_template", None) != getattr(old.tok, "chat_template", None):
                raise ReloadError(f"{d}: its chat template differs from the served model's; the served model is "
                                  "unchanged")
            version = weights_version(new.model)
            previous = self.version
            new.name = self.name                  # clients keep asking for the model by the name they know
            self.current = (new, version, str(d))
            for f in self.on_swap:
                f(new)
        log.info("reloaded %s: version %s -> %s", d, previous, version)
        return {**self.describe(), "previous": previous}


def add_route(app, served: Served) -> None:
    """``POST /admin/reload {"model": DIR}``: swap the served weights (the admin key only; 403 without one)."""
    @app.post("/admin/reload")
    async def reload(http: Request):
        if served.admin is None:
            raise HTTPError(403, "reloading is off: start the server with --admin-key-file FILE")
        if served.admin.who(http.headers.get("authorization")) is None:
            raise HTTPError(401, "reloading needs the admin key: send 'Authorization: Bearer ADMIN_KEY'")
        body = await json_body(http)
        model = body.get("model") if isinstance(body, dict) else None
        try:
            return await asyncio.to_thread(served.reload, model)       # loads off the event loop
        except ReloadError as e:
            raise HTTPError(400, str(e), "model") from e
