"""A child process's output, line by line, collected on a thread so that a
test waits for what it expects with a deadline instead of blocking in
readline()."""

from __future__ import annotations

import threading


class PipeLines:
    def __init__(self, pipe) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, predicate, timeout: float) -> None:
        """Waits until predicate(lines) holds; AssertionError with the lines
        so far when the deadline passes."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.lines), timeout):
                raise AssertionError("timed out; lines so far:\n" + "\n".join(self.lines))

    def join(self, timeout: float) -> None:
        """The pipe reaches EOF once the child is gone; what it wrote before is
        still read."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the pipe never reached its end"
