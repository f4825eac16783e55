"""tools/console.py: one line per event, colour only on a terminal (journald
keeps one entry per line: a service's log must not split or carry escapes)."""

from __future__ import annotations

import io
import re

from tools.console import Console, one_line

LINE = re.compile(r"^\d\d:\d\d:\d\d \S+ +\S.*$")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_tty_one_plain_line_per_event() -> None:
    out = io.StringIO()
    c = Console(out)
    c.line("gateway", "error: disk I/O error\nat height 7")
    c.line("board-1", "\x1b[31mred\x1b[0m reading\r")
    c.line("run", "tab\there")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert all(LINE.match(s) for s in lines), lines
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert lines[0].endswith("error: disk I/O error\\nat height 7")
    assert lines[1].endswith("\\x1b[31mred\\x1b[0m reading\\r")
    assert lines[2].endswith("tab\\there")


def test_colour_only_on_a_terminal() -> None:
    tty = Tty()
    Console(tty).line("gateway", "block 1")
    assert "\x1b[36m" in tty.getvalue() and tty.getvalue().count("\n") == 1


def test_one_line_leaves_printable_text_alone() -> None:
    assert one_line("accepted transfer from=ab12 ä €") == "accepted transfer from=ab12 ä €"
    assert one_line("a\x00b\x7f") == "a\\x00b\\x7f"
