"""The events every figure streams: the same types, unit ids and payload size
for the daemon and for the ceiling, with the append time at a fixed place in
the payload so a client can read it without parsing JSON."""

from __future__ import annotations

import time

from choo.conformance.v1 import control_pb2

# A task.backpressure event of choo's usual size: a command, an exit code and
# a short output tail (about 200 bytes of payload).
EVENT_TYPE = "task.backpressure"
UNIT_ID = "build"
_PREFIX = '{"sent_ns": '
_DIGITS = 19  # time.time_ns() has 19 digits until the year 2286
_TAIL = (', "task": 2, "command": "make test", "exit_code": 0, "duration_ms": 1234, '
         '"output": "' + "ok " * 30 + '"}')


def payload(at_ns: int) -> str:
    return f"{_PREFIX}{at_ns:0{_DIGITS}d}{_TAIL}"


def sent_ns(payload_json: str) -> int:
    return int(payload_json[len(_PREFIX):len(_PREFIX) + _DIGITS])


def specs(count: int, at_ns: int | None = None) -> list[control_pb2.EventSpec]:
    text = payload(time.time_ns() if at_ns is None else at_ns)
    return [control_pb2.EventSpec(event_type=EVENT_TYPE, unit_id=UNIT_ID, payload_json=text)
            for _ in range(count)]
