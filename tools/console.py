"""Live terminal output for `thingledger run`: one line per event, with time,
a source column (gateway, broker, board name) and colour when it is a tty.

One event is always one line: control characters in the text (a newline in
an error message, a board's carriage return or escape sequence) are written
as escapes (\\n, \\r, \\x1b), so journald (docs/RASPBERRY_PI.md), which
stores one entry per line, keeps one entry per event. Colour is on only when
the stream is a terminal: a service's log carries no escape sequences."""

from __future__ import annotations

import re
import sys
import time
from typing import TextIO

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str) -> str:
    """`text` with every control character written as an escape."""
    return _CONTROL.sub(lambda m: _NAMED.get(m[0], "\\x%02x" % ord(m[0])), text)


COLOURS = {"gateway": "36", "broker": "35", "run": "1"}
BOARD_COLOURS = ["32", "33", "34", "92", "93", "94"]


class Console:
    def __init__(self, stream: TextIO = sys.stdout, colour: bool | None = None) -> None:
        self.stream = stream
        self.colour = stream.isatty() if colour is None else colour
        self._boards: dict[str, str] = {}

    def _code(self, source: str) -> str:
        if source in COLOURS:
            return COLOURS[source]
        if source not in self._boards:
            self._boards[source] = BOARD_COLOURS[len(self._boards) % len(BOARD_COLOURS)]
        return self._boards[source]

    def line(self, source: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        tag = f"{one_line(source):<9}"
        if self.colour:
            tag = f"\x1b[{self._code(source)}m{tag}\x1b[0m"
        self.stream.write(f"{stamp} {tag} {one_line(text)}\n")
        self.stream.flush()
