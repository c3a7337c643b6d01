"""Running tool calls: every call gets a ``tool`` message back, and no failure stops the rollout.

Failures become the message's text and a status the metrics count: ``malformed`` (the call could not
be read), ``unknown_tool``, ``bad_arguments`` (they do not bind to the function's parameters), ``error``
(the tool raised) and ``timeout`` (over ``timeout`` seconds). Outputs are cut to a token budget.

In-process (``workers`` 0) a call runs in a daemon thread: a call over the timeout is answered with
the timeout error and left running in the background (a thread cannot be killed). With ``workers`` N
the calls run in N worker processes: a worker over the timeout is killed and replaced, so a tool
that hangs costs ``timeout`` seconds and nothing else.
"""
from __future__ import annotations

import importlib
import inspect
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .parsers import Call
from .spec import Tool

STATUSES = ("ok", "malformed", "unknown_tool", "bad_arguments", "error", "timeout")


@dataclass
class Result:
    name: str
    content: str
    status: str                  # one of STATUSES

    def message(self) -> dict:
        return {"role": "tool", "name": self.name or "unknown", "content": self.content}


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _worker_loop(conn) -> None:
    """A worker process: receives (module:function, arguments), answers ("ok" | "error", text)."""
    fns: dict[str, Callable] = {}
    while True:
        try:
            target, args = conn.recv()
        except EOFError:
            return
        try:
            if target not in fns:
                mod, _, name = target.rpartition(":")
                fns[target] = getattr(importlib.import_module(mod), name)
            conn.send(("ok", str(fns[target](**args))))
        except Exception as e:   # the tool's failure is the answer, sent back as text
            conn.send(("error", _describe(e)))


class _Worker:
    def __init__(self, ctx):
        self.ctx, self.proc, self.conn = ctx, None, None

    def start(self, target: str, args: dict) -> None:
        if self.proc is None or not self.proc.is_alive():
            self.conn, child = self.ctx.Pipe()
            self.proc = self.ctx.Process(target=_worker_loop, args=(child,), daemon=True)
            self.proc.start()
            child.close()
        self.conn.send((target, args))

    def finish(self, deadline: float) -> tuple[str, str]:
        if self.conn.poll(max(0.0, deadline - time.monotonic())):
            return self.conn.recv()
        self.kill()
        return "timeout", ""

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            self.conn.close()
            self.proc.join(timeout=5)
            self.kill()


class ToolExecutor:
    """Runs the parsed calls of one turn (``run``) or of many rows at once (``run_many``)."""

    def __init__(self, tools: list[Tool], timeout: float = 10.0, truncate: Optional[Callable[[str], str]] = None,
                 workers: int = 0):
        self.tools = {t.name: t for t in tools}
        self.timeout, self.truncate = timeout, truncate or (lambda s: s)
        self.workers = [_Worker(mp.get_context("spawn")) for _ in range(workers)]

    def close(self) -> None:
        for w in self.workers:
            w.close()

    def _check(self, call: Call) -> Optional[Result]:
        """The result of a call that cannot run (None when it can)."""
        if call.error:
            return Result(call.name, f"Error: {call.error}", "malformed")
        tool = self.tools.get(call.name)
        if tool is None:
            return Result(call.name, f"Error: unknown tool {call.name!r}; the tools are "
                                     f"{', '.join(sorted(self.tools))}", "unknown_tool")
        try:
            inspect.signature(tool.fn).bind(**call.arguments)
        except TypeError as e:
            return Result(call.name, f"Error: bad arguments for {call.name}: {e}", "bad_arguments")
        return None

    def _finish(self, call: Call, status: str, text: str) -> Result:
        if status == "ok":
            return Result(call.name, self.truncate(text), "ok")
        if status == "timeout":
            return Result(call.name, f"Error: {call.name} took longer than {self.timeout:g} s", "timeout")
        return Result(call.name, self.truncate(f"Error: {text}"), "error")

    def _in_process(self, call: Call) -> Result:
        box: dict = {}

        def target():
            try:
                box["out"] = ("ok", str(self.tools[call.name].fn(**call.arguments)))
            except Exception as e:   # the tool's failure is the answer
                box["out"] = ("error", _describe(e))
        th = threading.Thread(target=target, daemon=True)
        th.start()
        th.join(self.timeout)
        return self._finish(call, *box.get("out", ("timeout", "")))

    def run(self, calls: list[Call]) -> list[Result]:
        return self.run_many([calls])[0]

    def run_many(self, batches: list[list[Call]]) -> list[list[Result]]:
        """The results of each row's calls, in order; worker processes run up to N calls at once."""
        flat = [(i, j, c) for i, calls in enumerate(batches) for j, c in enumerate(calls)]
        out: list[list[Optional[Result]]] = [[None] * len(calls) for calls in batches]
        runnable = []
        for i, j, c in flat:
            bad = self._check(c)
            if bad is not None:
                out[i][j] = bad
            else:
                runnable.append((i, j, c))
        if not self.workers:
            for i, j, c in runnable:
                out[i][j] = self._in_process(c)
            return out
        for k in range(0, len(runnable), len(self.workers)):
            chunk = runnable[k:k + len(self.workers)]
            for w, (_, _, c) in zip(self.workers, chunk):
                w.start(self.tools[c.name].target, c.arguments)
            deadline = time.monotonic() + self.timeout
            for w, (i, j, c) in zip(self.workers, chunk):
                out[i][j] = self._finish(c, *w.finish(deadline))
        return out
