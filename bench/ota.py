"""Over-the-air update on the MicroPython Unix port (`python -m bench.ota`),
docs/OTA.md.

One virtual board (`-X heapsize=64k`, the real firmware) against the
embedded broker, no gateway: a release of the current firmware (v2) is
published, the board's node sees it and the updater runs its three phases,
each after a reset (the process is started again, as a board's reset would).
Measured in one run:
- the free heap the updater logs at each phase's start (after a collection)
  and the lowest free heap after each file it fetched;
- the time from the node seeing the announcement to the new version's first
  "online", and, in the same run, the time of one plain boot to "online"
  (the comparison: an update costs this many boots' worth of time).
Bounded: at most RUN_SECONDS."""

from __future__ import annotations

import re
import socket
import sys
import tempfile
import time
from pathlib import Path

from gateway.broker.embedded import ThreadedBroker
from tools import ota
from tools.build import build
from tools.keys import new_key
from tools.vboard import RESET_EXIT, VirtualBoard

HEAP = "64k"
RUN_SECONDS = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def boots(vb: VirtualBoard, build_dir: Path, until: str) -> tuple[list[tuple[float, str]], int]:
    """Run the board, starting it again after each reset, until a line
    matches `until`: (time-stamped lines, number of processes)."""
    lines: list[tuple[float, str]] = []
    n = 0
    end = time.monotonic() + RUN_SECONDS
    rx = re.compile(until)
    while time.monotonic() < end:
        proc = vb.start(build_dir, heap=HEAP)
        n += 1
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic(), line.rstrip()))
            if rx.search(line):
                proc.terminate()
                proc.wait(5)
                return lines, n
        if proc.wait() != RESET_EXIT:
            break
    return lines, n


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_dir = work / "fw"
        build(build_dir, "unix")
        key = new_key(work / "mfr.key")
        rel = ota.write_release(work / "rel", build_dir, key, "unix", 2)
        port = free_port()
        broker = ThreadedBroker("127.0.0.1", port)
        broker.start()
        try:
            vb = VirtualBoard("bench", work / "board")
            vb.configure(domain="demo", authority_hex="02" + "11" * 32, host="127.0.0.1",
                         port=port, interval_ms=60000)
            vb.pin_keys([key.public])
            t0 = time.monotonic()
            plain, _ = boots(vb, build_dir, r"^online")
            boot_s = plain[-1][0] - t0
            ota.publish(broker.url, "demo", rel)
            lines, procs = boots(vb, build_dir, r"^boot version=2")
            lines2, _ = boots(vb, build_dir, r"^online")
        finally:
            broker.stop()
    text = "\n".join(ln for _, ln in lines)
    start = next((t for t, ln in lines if ln.startswith("ota-offer")), None)
    done = lines2[-1][0] if lines2 and lines2[-1][1].startswith("online") else None
    phase = {int(m[0]): int(m[1]) for m in re.findall(r"ota-phase (\d) .*?free=(\d+)", text)}
    files = [int(f) for f in re.findall(r"ota-file .* free=(\d+)", text)]
    ok = start is not None and done is not None and len(phase) == 3 and bool(files)
    apply_s = (done - start) if ok else -1.0
    rows = [
        ("phase 1 (fetch the manifest): free heap", f"{phase.get(1, -1)} B", "> 0",
         phase.get(1, -1) > 0),
        ("phase 2 (check it): free heap", f"{phase.get(2, -1)} B", "> 0", phase.get(2, -1) > 0),
        ("phase 3 (fetch the files): free heap", f"{phase.get(3, -1)} B", "> 0",
         phase.get(3, -1) > 0),
        ("lowest free heap after a file", f"{min(files) if files else -1} B", "> 0",
         bool(files) and min(files) > 0),
        (f"release: {len(rel.files)} files", f"{sum(len(f) for f in rel.files)} B", "", True),
        ("time to apply (announcement -> new version online)", f"{apply_s:.2f} s", "", ok),
        ("one plain boot to online (same run)", f"{boot_s:.2f} s", "", True),
        # node -> phase 1 -> phase 2 -> phase 3 -> new version
        ("resets for the update", str(procs - 1), "4", procs - 1 == 4),
    ]
    print(f"heap {HEAP}, MicroPython Unix port (64-bit), embedded broker on loopback")
    print(f"{'measure':<52} {'value':>10}  {'target':<6} verdict")
    for name, value, target, good in rows:
        print(f"{name:<52} {value:>10}  {target:<6} {'ok' if good else 'MISSED'}")
    if not ok:
        print("board lines:\n" + "\n".join(text.splitlines()[-30:]))
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
