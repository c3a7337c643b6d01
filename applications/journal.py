"""An append-only JSONL file that one server writes: the labelling page's verdicts, collected conversations.

- ``append(record)`` returns once the line is written, flushed and fsynced (and the directory fsynced when the
  file is new), so a server killed at any moment loses at most the record being written.
- A line torn by such a kill (no newline at the end of the file) is cut off when the file is opened again, with a
  warning naming the bytes dropped; a complete line that is not JSON stops the start with its row named.
- A second process opening the same file is refused: the first holds ``FILE.lock`` (an ``flock``) while it runs,
  and the message names its pid.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Iterator

from training.utils.data.sources import DataError, jsonl_objects

log = logging.getLogger("speedchat")


class JournalError(DataError):
    """The journal cannot be opened or read; the message names the file."""


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    def __init__(self, path: str | os.PathLike, what: str = "journal"):
        self.path, self.what = Path(path), what
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._lock)
            self._lock = -1
            raise JournalError(f"{what} {self.path}: another process (pid {holder}) is writing it; stop that "
                               f"server or give this one another file") from None
        os.ftruncate(self._lock, 0)
        os.pwrite(self._lock, f"{os.getpid()}\n".encode(), 0)
        self._repair()

    def _repair(self) -> None:
        """Cut a torn last line (a kill during a write) off the end of the file."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end == len(data):
            return
        log.warning("%s %s: its last line was cut short (%d bytes without a newline, a write the process was "
                    "killed in); dropped", self.what, self.path, len(data) - end)
        with open(self.path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> Iterator[tuple[int, dict]]:
        """(row number, record) of every line (``jsonl_objects``); ``JournalError`` naming the row of a record that
        is not a JSON object."""
        if not self.path.is_file():
            return
        for row, obj in jsonl_objects(self.path):
            if not isinstance(obj, dict):
                raise JournalError(f"{self.path}: row {row}: expected a JSON object, got {type(obj).__name__}")
            yield row, obj

    def append(self, record: dict) -> None:
        new = not self.path.exists()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if new:
            _fsync_dir(self.path.parent)

    def close(self) -> None:
        if self._lock >= 0:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = -1

    def __del__(self):
        try:
            self.close()
        except OSError:
            pass

