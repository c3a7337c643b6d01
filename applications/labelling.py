"""The labelling page's store: comparisons to make (the JSONL ``--export_for_labelling`` writes: ``id``,
``prompt``, ``answer_a``, ``answer_b``) and the verdicts people give, appended one line each to the
human-label JSONL stage 2 reads (``--labeller human:FILE``).

- Every verdict line is written and fsynced before the answer goes back (``journal.py``), so a killed server
  loses at most the verdict in flight; a restarted one cuts a torn last line off, drops a repeated id with a
  warning, and offers only what has no verdict yet. A second server on the same verdicts file is refused.
- ``next(who)`` lends a comparison to one person at a time (for ``LEASE_S`` seconds), so several
  people labelling at once never get the same one; a verdict for a comparison that already has one
  is refused (409).
- The two answers are shown in a random order, recorded with the verdict (``shown``: ``ab`` or
  ``ba``); the verdict is stored against ``answer_a`` / ``answer_b`` as the file has them.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import Optional

from fastapi import Depends
from starlette.requests import Request

from applications.journal import Journal
from training.utils.data.sources import DataError, first_of_each, jsonl_objects

log = logging.getLogger("speedchat")
LEASE_S = 600.0
ORDERS = ("file", "random", "uncertain")
CHOICES = ("left", "right", "tie", "skip")


class LabelRequestError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class LabelStore:
    """``live``: the comparisons file may be empty or missing; ``add`` queues comparisons as they come (the pairs
    of ``chat.py --serve --collect DIR --compare``). ``order``: ``file`` (as written), ``random`` (seeded), or
    ``uncertain``: by ``margin(item)`` (a reward model's |score(a) - score(b)|), the closest first."""

    def __init__(self, comparisons: str, verdicts: str, seed: int = 0, live: bool = False, order: str = "file",
                 margin=None):
        if order not in ORDERS:
            raise DataError(f"labelling: order {order!r} is not one of {', '.join(ORDERS)}")
        if (order == "uncertain") != (margin is not None):
            raise DataError("labelling: the uncertain order needs a reward model's margin, and only it does")
        self.how, self.margin, self.margins = order, margin, {}
        self.path, self.out = Path(comparisons), Path(verdicts)
        if self.out.resolve() == self.path.resolve():
            raise DataError(f"labelling: the verdicts file must differ from the comparisons file {self.path}")
        self.items: dict[str, dict] = {}
        skipped: set[str] = set()
        if not self.path.is_file() and not live:
            raise DataError(f"labelling: {self.path}: no such file (stage 2 writes one with --export_for_labelling)")
        for row, obj in (jsonl_objects(self.path, journal=live) if self.path.is_file() else []):
            if live and isinstance(obj, dict) and any(isinstance(obj.get(f), str) and not obj[f].strip()
                                                      for f in ("answer_a", "answer_b")):
                log.warning("%s: row %d: an empty answer (a pair an older server queued); not offered", self.path, row)
                skipped.add(str(obj.get("id")))
                continue
            for field in ("id", "prompt", "answer_a", "answer_b"):
                if not isinstance(obj, dict) or obj.get(field) in (None, ""):
                    raise DataError(f"{self.path}: row {row}: field '{field}': missing")
            key = str(obj["id"])
            if key in self.items:
                raise DataError(f"{self.path}: row {row}: field 'id': {key!r} appears twice")
            self.items[key] = obj
        if not self.items and not live:
            raise DataError(f"labelling: {self.path}: no comparisons")
        self.done: set[str] = set()
        self.journal = Journal(self.out, "labelling: the verdicts file")
        # a restart: what already has a verdict is not offered again
        for row, obj in first_of_each(self.journal.records(), "id", self.out):
            key = str(obj.get("id"))
            if key in skipped:
                continue
            if key not in self.items:
                self.journal.close()
                raise DataError(f"{self.out}: row {row}: field 'id': {key!r} is not a comparison of {self.path}")
            self.done.add(key)
        self.rng = random.Random(seed)
        self.order = self._ordered(list(self.items))
        self.leases: dict[str, tuple[str, float, str]] = {}     # id -> (who, until, shown)
        self.lock = threading.Lock()

    def _ordered(self, keys: list[str]) -> list[str]:
        if self.how == "random":
            self.rng.shuffle(keys)
        elif self.how == "uncertain":
            self.margins.update({k: float(self.margin(self.items[k])) for k in keys if k not in self.margins})
            keys.sort(key=lambda k: self.margins[k])
        return keys

    def add(self, item: dict) -> None:
        """A new comparison to label ({id, prompt, answer_a, answer_b}): last in the file and random orders, by its
        margin in the uncertain one."""
        key = str(item["id"])
        if self.how == "uncertain" and key not in self.margins:
            self.margins[key] = float(self.margin(item))            # scored outside the lock
        with self.lock:
            if key in self.items:
                return
            self.items[key] = item
            if self.how == "uncertain":
                at = next((i for i, k in enumerate(self.order) if self.margins[k] > self.margins[key]), len(self.order))
            else:
                at = len(self.order) if self.how == "file" else self.rng.randint(0, len(self.order))
            self.order.insert(at, key)

    def close(self) -> None:
        """Lets another store open the verdicts file (a restart in the same process)."""
        self.journal.close()

    def progress(self) -> dict:
        return {"done": len(self.done), "total": len(self.items)}

    def next(self, who: str) -> dict:
        """The comparison this person (``who``: their key's name and their page's session) should label
        next: the one lent to them already, if any."""
        now = time.time()
        with self.lock:
            mine = [k for k, (w, until, _) in self.leases.items() if w == who and until > now and k not in self.done]
            key = mine[0] if mine else next((k for k in self.order if k not in self.done and (
                k not in self.leases or self.leases[k][1] <= now)), None)
            if key is None:
                return {**self.progress(), "finished": True}
            shown = self.leases[key][2] if mine else self.rng.choice(("ab", "ba"))
            self.leases[key] = (who, now + LEASE_S, shown)
        item = self.items[key]
        left, right = (item["answer_a"], item["answer_b"]) if shown == "ab" else (item["answer_b"], item["answer_a"])
        prompt = item["prompt"] if isinstance(item["prompt"], str) else "\n\n".join(
            f"{m.get('role')}: {m.get('content')}" for m in item["prompt"])       # a conversation, turn by turn
        return {**self.progress(), "finished": False, "id": key, "prompt": prompt, "left": left, "right": right}

    def verdict(self, who: str, key, choice, labeller: str = "anonymous") -> dict:
        """Record ``choice`` (left / right / tie / skip) for comparison ``key`` as lent to ``who``, given
        by ``labeller`` (the name of their API key)."""
        if not isinstance(key, str) or key not in self.items:
            raise LabelRequestError(404, f"no comparison with id {key!r}")
        if choice not in CHOICES:
            raise LabelRequestError(400, f"choice {choice!r} is not one of {', '.join(CHOICES)}")
        with self.lock:
            if key in self.done:
                raise LabelRequestError(409, f"comparison {key} already has a verdict")
            lease = self.leases.get(key)
            if lease is None or lease[0] != who:
                raise LabelRequestError(409, f"comparison {key} is not the one shown to you; ask for the next one")
            shown = lease[2]
            pref = {"tie": "tie", "skip": "skip"}.get(choice) or (
                "a" if (choice == "left") == (shown == "ab") else "b")
            item = self.items[key]
            row = {"id": key, "prompt": item["prompt"], "answer_a": item["answer_a"], "answer_b": item["answer_b"],
                   "preference": pref, "shown": shown, "labeller": labeller, "time": round(time.time(), 3)}
            self.journal.append(row)
            self.done.add(key)
            self.leases.pop(key, None)
        return {**self.progress(), "preference": pref}


def reward_margin(model_dir: str, template: str = "auto"):
    """``margin(item)``: |score(answer_a) - score(answer_b)| by the reward model in ``model_dir``, scored as stage 2
    saw its pairs (``--label-order uncertain``: the pairs it can tell apart least are labelled first)."""
    from inference.rw_eval import Scorer

    scorer, lock = Scorer(model_dir, template), threading.Lock()

    def margin(item: dict) -> float:
        with lock:
            a, b = scorer.score([(item["prompt"], item["answer_a"]), (item["prompt"], item["answer_b"])])
        return abs(a - b)
    return margin


def add_routes(app, store: LabelStore, authorised) -> None:
    """``GET /label`` (the page), ``GET /label/api/next``, ``POST /label/api/verdict`` ({id, choice});
    with API keys the API needs one and each verdict records its holder's name."""
    from fastapi.responses import HTMLResponse

    from applications.errors import error_response

    page = (Path(__file__).parent / "static" / "label.html").read_text(encoding="utf-8")

    def person(http: Request, name: Optional[str] = Depends(authorised)) -> tuple[str, str]:
        """(the lease holder: key name and the page's session, the labeller's name)."""
        name = name or "anonymous"
        session = http.headers.get("x-label-session", "")[:64]
        return f"{name}/{session}", name

    @app.get("/label", response_class=HTMLResponse)
    def label_page():
        return page

    @app.get("/label/api/next")
    def next_item(who: tuple[str, str] = Depends(person)):
        return store.next(who[0])

    @app.post("/label/api/verdict")
    async def verdict(http: Request, who: tuple[str, str] = Depends(person)):
        try:
            body = json.loads(await http.body())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return error_response(400, f"body is not JSON: {e}")
        if not isinstance(body, dict):
            return error_response(400, "body must be {id, choice}")
        try:
            return store.verdict(who[0], body.get("id"), body.get("choice"), who[1])
        except LabelRequestError as e:       # the same OpenAI-style error body as the rest of the server
            return error_response(e.status, str(e))
