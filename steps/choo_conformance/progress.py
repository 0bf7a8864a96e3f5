"""The stream from the pytest process to the runner: one JSON object per
line, flushed as it happens, so the runner reports each rule as it finishes
and knows where a run that had to be stopped was.

Records, by "type": collected (every selected scenario, applicable or not),
collect_error, started, step, daemon (a process group to stop at the end),
finished (outcome, detail, duration), done.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import IO


class ProgressWriter:
    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._out: IO[str] = open(path, "a", encoding="utf-8")

    def write(self, type: str, **fields: object) -> None:
        line = json.dumps({"type": type, **fields}, ensure_ascii=False)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def close(self) -> None:
        with self._lock:
            self._out.close()


class ProgressReader:
    """Reads the records written so far; call read() again for more."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> Iterator[dict]:
        try:
            with open(self._path, "rb") as source:
                source.seek(self._offset)
                data = source.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
