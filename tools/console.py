"""Live terminal output for `thingledger run`: one line per event, with time,
a source column (gateway, broker, board name) and colour when it is a tty."""

from __future__ import annotations

import sys
import time
from typing import TextIO

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
        tag = f"{source:<9}"
        if self.colour:
            tag = f"\x1b[{self._code(source)}m{tag}\x1b[0m"
        self.stream.write(f"{stamp} {tag} {text}\n")
        self.stream.flush()
