"""The event loop that carries every WatchJob call of the remote transport:
one thread for all of them, however many are open. A thread per watch
would spend more of a small machine than the daemon under test does (a
thousand watches cost the client about eight times the CPU they cost on one
loop), and the suite's deadlines would measure the client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_starting = threading.Lock()


def _running_loop() -> asyncio.AbstractEventLoop:
    """The loop, started on first use; its thread ends with the process."""
    global _loop
    with _starting:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="choo-watch-loop", daemon=True).start()
            _loop = loop
        return _loop


def submit(coroutine: Coroutine[Any, Any, T]) -> Future[T]:
    """Run `coroutine` on the loop; its result or exception comes back in the future."""
    return asyncio.run_coroutine_threadsafe(coroutine, _running_loop())


def call(callback: Callable[[], object], timeout: float) -> None:
    """Run `callback` on the loop and wait until it has run: what a step
    changes (a reader stalled, a call cancelled) holds before the next step."""

    async def run() -> None:
        callback()

    submit(run()).result(timeout)


def open_channel(address: str, options: list[tuple[str, Any]], timeout: float) -> grpc.aio.Channel:
    """A channel bound to the loop: grpc.aio ties a channel to the loop it is made on."""

    async def make() -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(address, options=options)

    return submit(make()).result(timeout)


def close_channel(channel: grpc.aio.Channel, timeout: float) -> None:
    """Close the channel: its calls end CANCELLED, its connection goes away."""
    submit(channel.close()).result(timeout)
