"""Compile the firmware for a board with mpy-cross (ESPHome-style step 1 of
compile -> upload -> run): shared/, firmware/ and the board's adapter become
.mpy files in an output folder laid out as the board's flash expects."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAMILY_ADAPTER = {"unix": "unix", "esp32": "esp32", "esp32s3": "esp32", "rp2040": "rp2040",
                  "rp2350": "rp2040"}


class BuildError(RuntimeError):
    pass


def tool(name: str) -> str:
    """An executable installed in this virtualenv (or on PATH)."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise BuildError(f"{name} not found: run `make test` or `make run` to install it")
    return found


def sources(board: str) -> list[Path]:
    """Firmware source files for `board`, relative to the project root."""
    if board not in FAMILY_ADAPTER:
        raise BuildError(f"unknown board '{board}' (known: {', '.join(sorted(FAMILY_ADAPTER))})")
    files = sorted((ROOT / "shared").glob("*.py")) + sorted((ROOT / "firmware").glob("*.py"))
    files += [ROOT / "boards" / n for n in ("__init__.py", "profiles.py",
                                            FAMILY_ADAPTER[board] + ".py")]
    return [f.relative_to(ROOT) for f in files]


def build(out_dir: Path, board: str = "unix") -> list[Path]:
    """Compile every firmware source to `out_dir`; returns the .mpy paths.
    Stops at the first file mpy-cross refuses, naming it."""
    mpy_cross = tool("mpy-cross")
    out: list[Path] = []
    for rel in sources(board):
        target = out_dir / rel.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        src = ROOT / rel
        if target.exists() and target.stat().st_mtime >= src.stat().st_mtime:
            out.append(target)
            continue
        proc = subprocess.run([mpy_cross, "-o", str(target), "-s", str(rel), str(src)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"mpy-cross failed on {rel}:\n{proc.stderr.strip()}")
        out.append(target)
    return out
