"""The daemon's "shutting down" signal, which ends open watches (W6, W18)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class ShutdownSignal:
    """Set once. Listeners run when it is set (or at once if already set)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._listeners: dict[int, Callable[[], None]] = {}
        self._next_token = 0

    def is_set(self) -> bool:
        return self._set

    def trigger(self) -> bool:
        """Set the signal; returns False if it was already set."""
        with self._lock:
            if self._set:
                return False
            self._set = True
            listeners = list(self._listeners.values())
            self._listeners.clear()
        for listener in listeners:
            listener()
        return True

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Register a callback; returns the call that removes it."""
        with self._lock:
            if not self._set:
                token = self._next_token
                self._next_token += 1
                self._listeners[token] = listener

                def remove() -> None:
                    with self._lock:
                        self._listeners.pop(token, None)

                return remove
        listener()
        return lambda: None
