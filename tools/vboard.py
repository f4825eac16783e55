"""Virtual boards: the real firmware under the MicroPython Unix port.

A virtual board is a flash folder (its wallet, seq reservation, outbox and
config.json live there) and a `micropython -X heapsize=64k` process started in
it with the compiled firmware (tools/build.py) on sys.path. The folder is
private to its user (0700) and the board process runs with umask 077, so the
wallet it writes (wallet.key, wallet.new) is 0600: the Unix port has no
chmod (configure() also tightens a folder and wallet from an older run). A board given an
"offer" or a "need" (docs/MARKET.md) also runs firmware/market.py and starts
with MARKET_HEAP unless told otherwise: on the 64-bit Unix port the market
roles do not fit in 64 KiB (bench/README.md, "Market boards")."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tools.build import tool

BOARD_HEAP = "64k"
# 66 KiB is the smallest heap that passed every run of tests/test_firmware_market.py,
# but a `make run` market board once ran out at 68 KiB checking a DEMAND's receipt
# (larger than a reading's): the virtual boards keep a wide margin
MARKET_HEAP = "80k"
BOARD_UMASK = 0o077  # what a board process writes is its user's only
KEY_FILES = ("wallet.key", "wallet.new")  # firmware/wallet.py, firmware/provision.py


@dataclass
class VirtualBoard:
    name: str
    flash: Path

    def configure(self, *, domain: str, authority_hex: str, host: str, port: int,
                  interval_ms: int = 2000, offer: dict | None = None,
                  need: dict | None = None, **extra: object) -> None:
        """Write config.json. offer: {"service", "unit", "price", "interval_s",
        "location", "valid_s", "schema"} makes the board a supplier; need:
        {"service", "max_price", "quantity", "policy", "wait_s", "location"?}
        a buyer (docs/MARKET.md, firmware/market.py)."""
        self.flash.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.flash.chmod(0o700)
        for name in KEY_FILES:
            if (self.flash / name).exists():
                (self.flash / name).chmod(0o600)
        cfg = {"name": self.name, "board": "unix", "domain": domain, "authority": authority_hex,
               "broker_host": host, "broker_port": port, "interval_ms": interval_ms, **extra}
        if offer is not None:
            cfg["offer"] = offer
        if need is not None:
            cfg["need"] = need
        (self.flash / "config.json").write_text(json.dumps(cfg, indent=1))

    def default_heap(self) -> str:
        """MARKET_HEAP for a board configured with an offer or a need, else BOARD_HEAP."""
        try:
            cfg = json.loads((self.flash / "config.json").read_text())
        except (OSError, ValueError):
            return BOARD_HEAP
        return MARKET_HEAP if "offer" in cfg or "need" in cfg else BOARD_HEAP

    def command(self, build_dir: Path, steps: int | None = None,
                heap: str | None = None) -> list[str]:
        heap = heap or self.default_heap()
        # the board runs in its flash folder: the build must be an absolute path
        boot = (f"import sys\nsys.path[:0] = [{str(Path(build_dir).resolve())!r}]\n"
                f"from firmware.main import main\nmain({steps!r})\n")
        return [tool("micropython"), "-X", f"heapsize={heap}", "-c", boot]

    def start(self, build_dir: Path, steps: int | None = None, heap: str | None = None,
              **popen: object) -> subprocess.Popen:
        return subprocess.Popen(self.command(build_dir, steps, heap), cwd=self.flash,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, umask=BOARD_UMASK, **popen)
