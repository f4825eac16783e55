"""Memory cost of the web dashboard: `python -m bench.web_rss`.

Starts `thingledger run --no-boards` (embedded broker, a fresh chain) twice,
once with `--no-http` and once with the dashboard (`--http 127.0.0.1:0`),
and reads the process's resident set (VmRSS) and its peak (VmHWM) from
/proc once it is up and, for the dashboard, after every page and API
document has been loaded `--rounds` times. Compared with the budget of a
small Raspberry Pi (a Pi Zero 2 W or Pi 3 A+ has 512 MiB): the dashboard
may add at most EXTRA_BUDGET_MIB, and the gateway with it stays under
TOTAL_BUDGET_MIB (a quarter of such a Pi).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

EXTRA_BUDGET_MIB = 25.0
TOTAL_BUDGET_MIB = 128.0
PATHS = ("/", "/blocks", "/block/0", "/devices", "/market", "/plots", "/search?q=0",
         "/api/v1/overview", "/api/v1/blocks", "/api/v1/devices", "/api/v1/market", "/metrics")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_mib(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024
    return out


def run(http: bool, rounds: int, tmp: Path) -> dict[str, float]:
    exe = Path(sys.executable).with_name("thingledger")
    cmd = [str(exe), "run", "--no-boards", "--listen", f"mqtt://127.0.0.1:{free_port()}",
           "--data-dir", str(tmp / ("http" if http else "nohttp") / "gateway"),
           *(["--http", "127.0.0.1:0"] if http else ["--no-http"])]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert p.stdout is not None
    try:
        want = "dashboard" if http else "chain "
        url = ""
        deadline = time.monotonic() + 60
        for line in p.stdout:
            if want in line:
                m = re.search(r"(http://\S+/)", line)
                url = m[1] if m else ""
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
        out = {"up_" + k: v for k, v in status_mib(p.pid).items()}
        if http:
            with httpx.Client(base_url=url, timeout=10, follow_redirects=True) as c:
                for _ in range(rounds):
                    for path in PATHS:
                        c.get(path).raise_for_status()
        out.update({"after_" + k: v for k, v in status_mib(p.pid).items()})
        return out
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="loads of every page")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        off = run(False, a.rounds, Path(tmp))
        on = run(True, a.rounds, Path(tmp))
    extra = on["after_VmHWM"] - off["after_VmHWM"]
    print(f"gateway process (thingledger run --no-boards), MiB; {a.rounds} loads of "
          f"{len(PATHS)} pages/documents with the dashboard")
    print("| dashboard | RSS at start | RSS after the loads | peak RSS |")
    print("|---|---:|---:|---:|")
    print("| off (--no-http) | %.1f | %.1f | %.1f |" % (off["up_VmRSS"], off["after_VmRSS"],
                                                       off["after_VmHWM"]))
    print("| on | %.1f | %.1f | %.1f |" % (on["up_VmRSS"], on["after_VmRSS"],
                                          on["after_VmHWM"]))
    ok_extra = extra <= EXTRA_BUDGET_MIB
    ok_total = on["after_VmHWM"] <= TOTAL_BUDGET_MIB
    print(f"dashboard's extra peak RSS {extra:.1f} MiB (budget {EXTRA_BUDGET_MIB:.0f}): "
          f"{'ok' if ok_extra else 'OVER'}; peak with it {on['after_VmHWM']:.1f} MiB "
          f"(budget {TOTAL_BUDGET_MIB:.0f}): {'ok' if ok_total else 'OVER'}")
    return 0 if ok_extra and ok_total else 1


if __name__ == "__main__":
    sys.exit(main())
