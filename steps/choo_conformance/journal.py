"""The calls a scenario made and what came back, so that a failure can say
which call it was, what the daemon answered and how long the suite waited,
in the words of the service rather than of the step's code.

One journal for the pytest process, emptied when a scenario starts: the
scenarios of a process run one after another."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, text_format

import choo

# Where the installed choo package keeps its .proto files, for grpcurl.
PROTO_ROOT = Path(choo.__file__).resolve().parent.parent
# How much of a request or an answer a line quotes.
_QUOTE = 160


def shorten(text: str, limit: int = _QUOTE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def request_summary(request) -> str:
    """A request as one short line, each long field cut to its start."""
    copy = type(request)()
    copy.CopyFrom(request)
    for descriptor, value in copy.ListFields():
        if isinstance(value, str) and len(value) > 40:
            setattr(copy, descriptor.name, value[:32] + f"...({len(value)} chars)")
    return "{" + shorten(text_format.MessageToString(copy, as_one_line=True)) + "}"


def status_text(status) -> str:
    if status is None:
        return "no answer yet"
    code = status.code.name if isinstance(status.code, grpc.StatusCode) else str(status.code)
    return code if not status.details else f"{code} {shorten(repr(status.details), 120)}"


@dataclass
class Entry:
    """One call: a unary call (its future-like `call`) or a watch."""

    service: str
    method: str
    request: Any
    call: Any
    started: float = field(default_factory=time.monotonic)
    answered: float | None = None
    status: Any = None
    first_started: float | None = None  # of the first of repeated asks
    asks: int = 1

    def note(self, status) -> None:
        if status is not None and self.answered is None:
            self.answered, self.status = time.monotonic(), status

    def refresh(self) -> None:
        """Notes an answer that came meanwhile, unread by any step."""
        if self.status is None and self.method != "WatchJob":
            self.note(self.call.result(0)[1])

    def describe(self) -> str:
        head = f"{self.method} {request_summary(self.request)}"
        if self.method == "WatchJob":
            return f"{head} -> {_watch_outcome(self.call)}"
        self.refresh()
        answered = self.answered
        if self.status is None or answered is None:
            return f"{head} -> no answer after {time.monotonic() - self.started:.1f} s"
        asked = (f" (asked {self.asks} times over {answered - self.first_started:.1f} s)"
                 if self.asks > 1 and self.first_started is not None else "")
        return f"{head} -> {status_text(self.status)} after {answered - self.started:.2f} s{asked}"

    def grpcurl(self, address: str) -> str | None:
        """The same call with grpcurl, for a unary call over a Unix socket, with
        the .proto file its request comes from (DaemonService's or the
        control service's)."""
        if self.method == "WatchJob" or not address.startswith("unix:"):
            return None
        body = json_format.MessageToJson(self.request, indent=None, preserving_proto_field_name=True)
        proto = self.request.DESCRIPTOR.file.name
        return (f"grpcurl -plaintext -unix -import-path {PROTO_ROOT} -proto {proto} "
                f"-d '{body}' {address.removeprefix('unix://').removeprefix('unix:')} "
                f"{self.service}/{self.method}")


def _watch_outcome(watch) -> str:
    received = [e.sequence for e in watch.received()]
    if not received:
        events = "no events"
    elif received == list(range(received[0], received[-1] + 1)):
        events = f"{len(received)} events ({received[0]}-{received[-1]})"
    else:
        events = f"{len(received)} events, first {received[:5]}, last {received[-3:]}"
    status = watch.status
    return f"{events}, {'ended ' + status_text(status) if status is not None else 'still open'}"


_entries: list[Entry] = []
# What the scenario talks to (fixtures.target), for the failure's story: its
# address, and the daemon process the suite started, if it did.
_target: list[Any] = []


def reset() -> None:
    _entries.clear()
    _target.clear()


def attach(target) -> None:
    _target[:] = [target]


def target() -> Any:
    return _target[0] if _target else None


def record(service: str, method: str, request, call) -> Entry:
    """A new call. The same question asked again and again (a wait that
    polls) is one line: the latest ask, and how many there were."""
    entry = Entry(service, method, request, call)
    last = _entries[-1] if _entries else None
    if (last is not None and method != "WatchJob" and (last.service, last.method) == (service, method)
            and last.answered is not None and last.request == request):
        entry.asks, entry.first_started = last.asks + 1, last.first_started or last.started
        _entries[-1] = entry
    else:
        _entries.append(entry)
    return entry


def story(limit: int = 6) -> list[str]:
    """The scenario's last calls, oldest first, a line each."""
    shown = _entries[-limit:]
    lines = [entry.describe() for entry in shown]
    if len(_entries) > limit:
        lines.insert(0, f"({len(_entries) - limit} earlier calls)")
    return lines


def last_failed_unary() -> Entry | None:
    """The latest unary call that did not answer OK, for a grpcurl line."""
    for entry in reversed(_entries):
        if entry.method == "WatchJob":
            continue
        entry.refresh()
        if entry.status is None or entry.status.code != grpc.StatusCode.OK:
            return entry
    return None


class RecordedCall:
    """A unary call whose answer the journal notes when a step reads it."""

    def __init__(self, call, entry: Entry) -> None:
        self._call, self._entry = call, entry

    def result(self, timeout: float):
        response, status = self._call.result(timeout)
        self._entry.note(status)
        return response, status
