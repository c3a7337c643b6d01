"""The server's one generation queue: a worker thread takes the oldest request and every other queued one with
the same sampling settings (up to ``max_batch`` sequences) and generates them as one left-padded batch; jobs
submitted as idle (``--compare``'s second answers) start a batch only when no request waits."""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from applications.chat_engine import ChatEngine, Request, Sampling
from applications.errors import HTTPError
from applications.schema import Limits

log = logging.getLogger(__name__)


@dataclass
class _Job:
    requests: list[Request]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float = field(default_factory=time.time)


class Batcher:
    """A worker thread that batches queued jobs with equal sampling settings; jobs submitted as ``idle`` (the
    second answers of ``--compare``) start a batch only when no request waits."""

    def __init__(self, engine: ChatEngine, limits: Limits):
        self.engine, self.limits = engine, limits
        self.q: "queue.Queue[_Job]" = queue.Queue(maxsize=limits.max_queue)
        self.idle: "queue.Queue[_Job]" = queue.Queue(maxsize=limits.max_queue)
        self.pending: list[_Job] = []      # taken from the queue but not batchable yet (worker only)
        self.batches = 0
        self.thread = threading.Thread(target=self._work, name="speedchat-batcher", daemon=True)
        self.thread.start()

    def submit(self, job: _Job) -> None:
        try:
            self.q.put_nowait(job)
        except queue.Full:
            raise HTTPError(503, f"server busy: {self.limits.max_queue} requests already queued; retry later") from None

    def submit_idle(self, job: _Job) -> bool:
        """Queue a job that runs when no request waits; False when that queue is full."""
        try:
            self.idle.put_nowait(job)
            return True
        except queue.Full:
            return False

    def _first(self) -> _Job:
        if self.pending:
            return self.pending.pop(0)
        while True:
            try:
                return self.q.get(timeout=0.05)
            except queue.Empty:
                try:
                    return self.idle.get_nowait()
                except queue.Empty:
                    continue

    def _take(self) -> list[_Job]:
        """The oldest job plus every waiting job with the same sampling settings that fits."""
        first = self._first()
        jobs, rows, key = [first], len(first.requests), first.sampling.key()

        def fits(job):
            return job.sampling.key() == key and rows + len(job.requests) <= self.limits.max_batch

        for job in list(self.pending):
            if fits(job):
                self.pending.remove(job)
                jobs.append(job)
                rows += len(job.requests)
        deadline = time.time() + self.limits.batch_wait_s
        while rows < self.limits.max_batch:
            try:
                job = self.q.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                break
            if fits(job):
                jobs.append(job)
                rows += len(job.requests)
            else:                      # waits, in arrival order, for a later batch
                self.pending.append(job)
        return jobs

    def _work(self) -> None:
        while True:
            jobs = self._take()
            try:
                results = self.engine.generate([r for j in jobs for r in j.requests], jobs[0].sampling)
                self.batches += 1
            except Exception as e:       # reported to every waiting client, and logged
                log.exception("generation failed for a batch of %d request(s)", len(jobs))
                for j in jobs:
                    _reply(j, None, e)
                continue
            i = 0
            for j in jobs:
                part, i = results[i:i + len(j.requests)], i + len(j.requests)
                _reply(j, part, None)


def _reply(job: _Job, result, exc) -> None:
    """Hand a batch's result to the job's waiter; a waiter whose event loop has closed (a server shut down while
    a --compare answer was generating) has gone, and the worker goes on."""
    try:
        job.loop.call_soon_threadsafe(_set, job.future, result, exc)
    except RuntimeError as e:
        log.info("a finished job's server has stopped (%s); its result is dropped", e)


def _set(fut: asyncio.Future, result, exc) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
