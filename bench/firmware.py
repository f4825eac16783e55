"""Firmware budget on the MicroPython Unix port (`python -m bench.firmware`).

Measures, in one run:
- size of a signed one-value reading (the bytes the firmware publishes);
- heap taken by importing every firmware module the loop keeps (mpy-cross
  build) and what is left of a 64 KiB heap; the start-up-only modules (board
  profile, firmware/startup.py) apart, since firmware/main.py drops them;
- the whole firmware loop (connect, register, sign, publish, receive a
  receipt, verify the header signature and the Merkle proof) running on a
  virtual board with `-X heapsize=64k` against the embedded broker and a
  gateway process: receipts verified, lowest free heap seen after a receipt;
- the size of a receipt (a reading's, in a block of 32: a 5-hash audit path)
  in format 1 (authority-signed header, chains without a consensus section)
  and format 2 (header + commit certificate of k votes: k = 1 authority,
  k = 2 and 3 a quorum), docs/CONSENSUS.md;
- one sign's time and peak heap come from `python -m bench.crypto`.
Targets (issue #2): reading <= 120 bytes; the loop fits in 64 KiB."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.broker.embedded import ThreadedBroker
from gateway.db.genesis_files import load as load_genesis
from shared import p256, tx
from tools.build import ROOT, build, tool
from tools.vboard import VirtualBoard

HEAP = os.environ.get("BENCH_HEAP", "64k")
RUN_SECONDS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reading_size() -> int:
    priv, pub = p256.keygen()
    return len(tx.make(priv, tx.device_id(pub), tx.TYPE_READING, "demo", 123456, 0,
                       {1: 2150, 2: -2, 3: 0}))


def receipt_sizes() -> list[tuple[str, int]]:
    """Receipt bytes of one reading in a 32-tx block, per format (what the
    gateway sends on the board's rx topic)."""
    from hashlib import sha256

    from shared import commit, commit_gateway, header, messages

    keys = [sha256(b"v%d" % i).digest() for i in range(3)]
    pubs = sorted(p256.public_key(k) for k in keys)
    tid = sha256(b"tx").digest()
    proof = [sha256(b"p%d" % i).digest() for i in range(5)]
    fields = {"version": 1, "domain": "demo", "height": 123456, "prev_hash": bytes(32),
              "time": 1_700_000_000, "tx_root": bytes(32), "receipts_root": bytes(32),
              "state_root": bytes(32), "proposer": tx.device_id(pubs[0])}
    out = [("format 1 (signed header)", len(messages.receipt(
        tid, 7, 0, "", [], 123456, header.sign(keys[0], fields["proposer"], fields), 3, 32,
        proof)))]
    for k in (1, 2, 3):
        f = dict(fields, version=2, validators=commit.valset_hash(k, pubs[:max(k, 1)]),
                 next_validators=commit.valset_hash(k, pubs[:max(k, 1)]))
        hb = header.encode(f)
        h = header.block_hash(hb)
        by_pub = {p256.public_key(x): x for x in keys}
        cert = commit_gateway.certificate({i: commit_gateway.vote(by_pub[pubs[i]], pubs[i], h)
                                   for i in range(k)})
        out.append((f"format 2, certificate of {k}",
                    len(messages.receipt(tid, 7, 0, "", [], 123456, hb, 3, 32, proof, cert))))
    return out


def import_heap(build_dir: Path) -> tuple[int, int, list[tuple[str, int]], int]:
    """(heap of the modules the loop keeps, 64 KiB minus that, per module,
    heap of the start-up-only modules)."""
    out = subprocess.run([tool("micropython"), "-X", "heapsize=256k",
                          str(ROOT / "bench" / "heap_imports.py"), str(build_dir)],
                         capture_output=True, text=True, check=True).stdout
    mods = [(m, int(n)) for m, n in re.findall(r"module (\S+) (\d+)", out)]
    total = int(re.search(r"total (\d+)", out).group(1))
    startup = sum(int(n) for n in re.findall(r"startup \S+ (\d+)", out))
    return total, 64 * 1024 - total, mods, startup


def loop_run(build_dir: Path, work: Path, port: int) -> tuple[int, int, str]:
    """(receipts verified, lowest free heap after a receipt, last lines)."""
    broker = ThreadedBroker("127.0.0.1", port)
    broker.start()
    gw = subprocess.Popen([tool("thingledger"), "run", "--no-boards", "--no-http",
                           "--broker", broker.url,
                           "--data-dir", str(work / "gateway"), "--block-interval", "0.5"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        genesis = work / "gateway" / "genesis.toml"
        for line in gw.stdout:  # the gateway reports its chain once subscribed
            if " chain demo at height" in line:
                break
        vb = VirtualBoard("bench", work / "board")
        vb.configure(domain="demo", authority_hex=load_genesis(genesis).authority.hex(),
                     host="127.0.0.1", port=port, interval_ms=500)
        board = vb.start(build_dir, heap=HEAP)
        lines: list[str] = []
        end = time.monotonic() + RUN_SECONDS
        while time.monotonic() < end and board.poll() is None:
            line = board.stdout.readline()
            if line:
                lines.append(line.rstrip())
        board.terminate()
        board.wait(5)
        frees = [int(f) for f in re.findall(r"receipt-verified .* free=(\d+)", "\n".join(lines))]
        return len(frees), min(frees) if frees else -1, "\n".join(lines[-25:])
    finally:
        gw.terminate()
        gw.wait(10)
        broker.stop()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_dir = work / "fw"
        build(build_dir, "unix")
        size = reading_size()
        total, left, mods, startup = import_heap(build_dir)
        receipts, low, tail = loop_run(build_dir, work, free_port())
    sizes = receipt_sizes()
    rows = [
        ("signed one-value reading", f"{size} B", "<= 120 B", size <= 120),
        ("firmware modules the loop keeps (mpy)", f"{total} B", "", True),
        ("start-up-only modules (freed)", f"{startup} B", "", True),
        ("heap left after imports", f"{left} B", "> 0", left > 0),
        (f"loop on a {HEAP} heap: receipts verified", str(receipts), ">= 3", receipts >= 3),
        ("lowest free heap after a receipt", f"{low} B", "> 0", low > 0),
        *((f"receipt, {name}", f"{n} B", "<= 4 KiB", n <= 4096) for name, n in sizes),
    ]
    print(f"{'measure':<42} {'value':>10}  {'target':<9} verdict")
    for name, value, target, ok in rows:
        print(f"{name:<42} {value:>10}  {target:<9} {'ok' if ok else 'MISSED'}")
    print()
    print("per module (bytes of heap after import, 64-bit Unix port):")
    for m, n in mods:
        print(f"  {m:<24} {n:>6}")
    if receipts < 3:
        print("last board lines:\n" + tail)
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
