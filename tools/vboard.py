"""Virtual boards: the real firmware under the MicroPython Unix port.

A virtual board is a flash folder (its wallet, seq reservation, outbox and
config.json live there) and a `micropython -X heapsize=64k` process started in
it with the compiled firmware (tools/build.py) on sys.path."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tools.build import tool

BOARD_HEAP = "64k"


@dataclass
class VirtualBoard:
    name: str
    flash: Path

    def configure(self, *, domain: str, authority_hex: str, host: str, port: int,
                  interval_ms: int = 2000, **extra: object) -> None:
        self.flash.mkdir(parents=True, exist_ok=True)
        cfg = {"name": self.name, "board": "unix", "domain": domain, "authority": authority_hex,
               "broker_host": host, "broker_port": port, "interval_ms": interval_ms, **extra}
        (self.flash / "config.json").write_text(json.dumps(cfg, indent=1))

    def command(self, build_dir: Path, steps: int | None = None, heap: str = BOARD_HEAP) -> list[str]:
        # the board runs in its flash folder: the build must be an absolute path
        boot = (f"import sys\nsys.path[:0] = [{str(Path(build_dir).resolve())!r}]\n"
                f"from firmware.main import main\nmain({steps!r})\n")
        return [tool("micropython"), "-X", f"heapsize={heap}", "-c", boot]

    def start(self, build_dir: Path, steps: int | None = None, heap: str = BOARD_HEAP,
              **popen: object) -> subprocess.Popen:
        return subprocess.Popen(self.command(build_dir, steps, heap), cwd=self.flash,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, **popen)
