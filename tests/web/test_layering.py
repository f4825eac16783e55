"""The web package reads the node and the store; nothing of the node imports
it (tools/run.py is the one place that starts it), so a gateway without a
dashboard never loads aiohttp."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_only_tools_run_imports_the_web_package() -> None:
    users = sorted(str(p.relative_to(ROOT)) for top in ("gateway", "tools", "shared")
                   for p in (ROOT / top).rglob("*.py")
                   if "gateway/web/" not in str(p.relative_to(ROOT))
                   and any(m == "gateway.web" or m.startswith("gateway.web.")
                           for m in imported(p)))
    assert users == ["tools/run.py"]


def test_the_gateway_and_the_cli_load_no_aiohttp() -> None:
    code = ("import sys, gateway.node.service, tools.run, tools.cli.app; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"
