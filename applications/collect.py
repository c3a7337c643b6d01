"""Collecting what the server serves, opt-in (``chat.py --serve --collect DIR``): every answer with the
conversation it answers, and the thumbs people give it.

- ``DIR/conversations.jsonl``: one record per served answer: ``id`` (the completion's id and the choice's
  index, ``chatcmpl-...:0``), ``messages`` (the request's conversation), ``answer``, ``sampling``
  (temperature, top_p, max_tokens), ``model`` and ``version`` (the hash of the weights that answered) and
  ``time``. The answer is sent first; its record is written right after, off the request's path.
- ``DIR/feedback.jsonl``: thumbs up / down on an answer (``POST /v1/feedback {"id", "rating": "up" | "down"}``):
  a pointwise label (``label`` 1.0 or 0.0) keyed by the answer's id, with the key holder's name.

With ``--compare`` the server also samples a second answer to each collected prompt (temperature at least
``COMPARE_TEMPERATURE``), off the request's path: the served answer is never delayed, and the second one is
generated when no request waits. A pair whose answers differ goes to ``DIR/comparisons.jsonl`` (``id``,
``prompt`` as messages, ``answer_a`` the served one, ``answer_b``) and to the labelling page at ``/label``; the
verdicts go to ``DIR/comparisons.labels.jsonl``, stage 2's human-label file.

The files are journals (``journal.py``): fsynced per record, a torn last line cut off at the next start, one
server per directory. Without ``--collect`` nothing is written and ``/v1/feedback`` answers 404.
"""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Optional

from fastapi import Depends
from starlette.requests import Request

from applications.errors import HTTPError, json_body
from applications.journal import Journal
from training.utils.data.sources import COLLECTED_FILES
from training.utils.labels.human import prompt_field

RATINGS = {"up": 1.0, "down": 0.0}
COMPARE_TEMPERATURE = 0.7
PAIRS_FILE, VERDICTS_FILE = COLLECTED_FILES["comparisons"], COLLECTED_FILES["verdicts"]


class FeedbackError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Collector:
    def __init__(self, directory: str, compare: bool = False, **label_order):
        self.dir, self.compare = Path(directory), compare
        self.conversations = Journal(self.dir / COLLECTED_FILES["conversations"], "collection: the conversations file")
        self.journals = [self.conversations]
        try:
            self.feedback = Journal(self.dir / COLLECTED_FILES["feedback"], "collection: the feedback file")
            self.journals.append(self.feedback)
            self.pairs = Journal(self.dir / PAIRS_FILE, "collection: the comparisons file") if compare else None
            if self.pairs is not None:
                self.journals.append(self.pairs)
            self.labels = None          # the labelling page's store of the pairs, when on
            if compare:
                from applications.labelling import LabelStore

                self.labels = LabelStore(str(self.dir / PAIRS_FILE), str(self.dir / VERDICTS_FILE), live=True,
                                         **label_order)      # order, margin: labelling.LabelStore's
        except Exception:
            self.close()
            raise
        self.answers = {rec["id"] for _, rec in self.conversations.records()}
        self.rated = {rec["id"] for _, rec in self.feedback.records()}
        self.lock = threading.Lock()

    def note(self, rid: str, n: int) -> list[str]:
        """The ids of a completion's ``n`` answers, known at once (a thumb may come before the record is written)."""
        ids = [f"{rid}:{i}" for i in range(n)]
        with self.lock:
            self.answers.update(ids)
        return ids

    def record(self, ids: list[str], messages: list[dict], answers: list[str], sampling: dict, served: dict) -> None:
        now = round(time.time(), 3)
        with self.lock:
            for i, text in zip(ids, answers):
                self.conversations.append({"id": i, "messages": messages, "answer": text, "sampling": sampling,
                                           "model": served["id"], "version": served["version"], "time": now})

    def thumb(self, answer_id, rating, labeller: Optional[str]) -> dict:
        if rating not in RATINGS:
            raise FeedbackError(400, f"rating {rating!r} is not one of {', '.join(RATINGS)}")
        with self.lock:
            if not isinstance(answer_id, str) or answer_id not in self.answers:
                raise FeedbackError(404, f"no collected answer with id {answer_id!r}")
            if answer_id in self.rated:
                raise FeedbackError(409, f"answer {answer_id} already has a rating")
            self.feedback.append({"id": answer_id, "rating": rating, "label": RATINGS[rating],
                                  "labeller": labeller or "anonymous", "time": round(time.time(), 3)})
            self.rated.add(answer_id)
        return {"id": answer_id, "rating": rating}

    def pair(self, answer_id: str, messages: list[dict], first: str, second: str) -> Optional[dict]:
        """Queue the served answer and a second one to the same conversation for labelling (None when they are
        the same text, or one is empty: nothing to compare, or nothing a reward model can train on)."""
        if second.strip() == first.strip() or not first.strip() or not second.strip():
            return None
        item = {"id": f"{answer_id}/b", "prompt": prompt_field(messages), "answer_a": first, "answer_b": second,
                "time": round(time.time(), 3)}
        with self.lock:
            self.pairs.append(item)
        if self.labels is not None:
            self.labels.add(item)
        return item

    def close(self) -> None:
        for j in self.journals:
            j.close()
        if getattr(self, "labels", None) is not None:
            self.labels.close()


def add_route(app, collect: Optional[Collector], authorised) -> None:
    """``POST /v1/feedback``: thumbs up / down on a collected answer, ``{"id": "<completion id>:<choice index>",
    "rating": "up"}``; 404 without ``--collect``."""
    @app.post("/v1/feedback")
    async def feedback(http: Request, who: Optional[str] = Depends(authorised)):
        if collect is None:
            raise HTTPError(404, "collection is off: start the server with --collect DIR to take feedback")
        body = await json_body(http)
        if not isinstance(body, dict):
            raise HTTPError(400, 'body must be {"id", "rating"}')
        try:
            return await asyncio.to_thread(collect.thumb, body.get("id"), body.get("rating"), who)
        except FeedbackError as e:
            raise HTTPError(e.status, str(e)) from e
