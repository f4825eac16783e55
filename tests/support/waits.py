"""Bounded waits on what other processes say: lines of a subprocess's output,
and the retained message of an MQTT topic. No sleeping-and-hoping: every wait
ends on the awaited event or fails at its timeout with what was seen."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import paho.mqtt.client as mqtt

EXIT = "<exit>"
T = TypeVar("T")


def wait_on(cond: threading.Condition, predicate: Callable[[], T], timeout: float,
            failure: Callable[[], str], poll: float = 0.2) -> T:
    """Wait under `cond` (notified by whoever changes the state) until
    predicate() is truthy and return it; AssertionError(failure()) at the
    timeout. `poll` only bounds a missed notification."""
    deadline = time.monotonic() + timeout
    with cond:
        while True:
            v = predicate()
            if v:
                return v
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(failure())
            cond.wait(min(left, poll))


def lines(proc: subprocess.Popen) -> queue.Queue[str]:
    """A queue fed with proc's output lines (text mode), then EXIT."""
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line.rstrip())
        q.put(EXIT)

    threading.Thread(target=pump, daemon=True).start()
    return q


def wait_line(q: queue.Queue[str], pattern: str, timeout: float, seen: list[str]) -> str:
    """The next line matching `pattern` (all lines read are appended to `seen`);
    AssertionError on timeout, on the process's end or on a traceback."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = q.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no line matching {pattern!r} in {timeout} s:\n"
                                 + "\n".join(seen[-30:])) from None
        seen.append(line)
        if rx.search(line):
            return line
        if line == EXIT:
            raise AssertionError("process ended:\n" + "\n".join(seen[-30:]))
        if "Traceback" in line:  # the report shows the traceback itself, not only its head
            n = len(seen)
            drain(q, seen, 2.0)
            raise AssertionError("traceback:\n" + "\n".join(seen[max(0, n - 20):n + 30]))


def drain(q: queue.Queue[str], seen: list[str], timeout: float = 5.0) -> list[str]:
    """Append to `seen` the rest of an ended process's output, up to EXIT or
    `timeout` s without a line (for a failure's report); `seen` returned."""
    while True:
        try:
            line = q.get(timeout=timeout)
        except queue.Empty:
            return seen
        seen.append(line)
        if line == EXIT:
            return seen


def retained(broker, topic: str, timeout: float = 5.0) -> bytes | None:
    """The retained payload of `topic` on `broker` (None if none came in time)."""
    from tests.support.brokers import unique  # brokers imports this module

    got: queue.Queue[bytes] = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("peek"),
                    protocol=mqtt.MQTTv311)
    c.on_message = lambda _c, _u, m: got.put(bytes(m.payload)) if m.topic == topic else None
    c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
    c.connect(broker.host, broker.port, keepalive=30)
    c.loop_start()
    try:
        return got.get(timeout=timeout)
    except queue.Empty:
        return None
    finally:
        c.loop_stop()
        c.disconnect()
