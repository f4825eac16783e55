"""No test or benchmark binds a fixed port through `thingledger run`: since
the dashboard is served on 127.0.0.1:8080 by default, every `run` command a
test or benchmark spells out says `--no-http`, or `--http` with a port of
its choosing (tests/web/test_run_dashboard.py: port 0, or one it holds).
A static check over the sources, so a new test cannot forget it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLAGS = {"--no-http", "--http"}


def run_commands(tree: ast.AST) -> list[ast.List]:
    """List literals spelling a `thingledger run` command line: "run" after
    the program (tool("thingledger"), *base, ...), not an argv for cli.main."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.List):
            continue
        for i, e in enumerate(node.elts):
            if (i > 0 and isinstance(e, ast.Constant) and e.value == "run"
                    and not isinstance(node.elts[i - 1], ast.Constant)):
                out.append(node)
                break
    return out


def says_http(command: ast.List) -> bool:
    return any(isinstance(n, ast.Constant) and n.value in FLAGS for n in ast.walk(command))


def offenders(paths: list[Path]) -> list[str]:
    bad = []
    for p in paths:
        for cmd in run_commands(ast.parse(p.read_text(), str(p))):
            if not says_http(cmd):
                bad.append(f"{p.relative_to(ROOT)}:{cmd.lineno}")
    return bad


def sources() -> list[Path]:
    return sorted(p for d in ("tests", "bench") for p in (ROOT / d).rglob("*.py"))


def test_every_run_command_in_tests_and_bench_chooses_its_http() -> None:
    found = [p for p in sources() if run_commands(ast.parse(p.read_text()))]
    assert len(found) >= 10  # the check sees the commands it is about
    assert offenders(sources()) == []


def test_the_check_catches_a_run_without_http(tmp_path: Path) -> None:
    bad = tmp_path / "t.py"
    bad.write_text('cmd = [tool("thingledger"), "run", "--no-boards", "--listen", url]\n'
                   'ok = [*base, "run", *(["--http", "127.0.0.1:0"] if h else ["--no-http"])]\n'
                   'argv = ["run", "--boards", "-1"]\n')
    tree = ast.parse(bad.read_text())
    assert [c.lineno for c in run_commands(tree)] == [1, 2]
    assert [says_http(c) for c in run_commands(tree)] == [False, True]
