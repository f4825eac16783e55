"""Lowest free heap of a board checking a receipt (`python -m bench.receipt_heap`).

Each board kind the network runs (plain; updated: a plain board at the first
boot of an installed update, unconfirmed; liar: firmware/liar.py loaded;
market: a supplier, firmware/market.py loaded) is started as firmware/startup.py wires
it (mpy-cross build, the real Node and MQTT client object, not connected) under
`micropython -X heapsize=64k` (BENCH_HEAP) and checks, in its own MQTT callback,
the receipt of its first transaction with a commit certificate of 1 vote (the
authority, `make run`), 2 of 3 and 3 of 3 (a quorum, docs/CONSENSUS.md). The
receipt is a reading's in a 32-transaction block (5-hash audit path), as
bench/firmware.py sizes them. bench/mp_receipt_heap.py holds a ballast while
the node checks and bisects its size: the largest ballast with which the check
still succeeds is a lower bound of the free heap at the check's lowest point.
Target (issue 11 item 4, issue 14 item 6): >= 8 KiB (TARGET) for every row."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from hashlib import sha256
from pathlib import Path

from shared import commit, commit_gateway, header, merkle, messages, p256, tx
from tests.support.mpyrun import ROOT, run_micropython
from tools.build import build, compile_stale
from tools.vboard import ROM_LINK

HEAP = os.environ.get("BENCH_HEAP", "64k")
TARGET = 8192
KINDS = ("plain", "updated", "liar", "market")
VOTERS = [sha256(b"validator-%d" % i).digest() for i in range(3)]
AUTH = sha256(b"authority").digest()
BOARD = sha256(b"board").digest()
SCRIPT = ROOT / "bench" / "mp_receipt_heap.py"
ROM = ROM_LINK  # the firmware build, linked into the flash folder as tools/vboard.py does


def receipt(tid: bytes, keys: list[bytes], k: int) -> bytes:
    """Format 2 receipt of `tid` (seq 1) in a 32-tx block, with votes of the
    first k of the sorted set of `keys`."""
    pubs = sorted(p256.public_key(x) for x in keys)
    by_pub = {p256.public_key(x): x for x in keys}
    leaf = messages.receipt_leaf(tid, 0, "", [])
    proof = [sha256(b"p%d" % i).digest() for i in range(5)]
    root = merkle.leaf_hash(leaf)
    for p in proof:  # index 0: the leaf is the left child at every level
        root = merkle.node_hash(root, p)
    vh = commit.valset_hash(len(pubs) // 2 + 1 if len(pubs) > 1 else 1, pubs)
    hb = header.encode({
        "version": 2, "domain": "demo", "height": 3, "prev_hash": bytes(32),
        "time": 1_700_000_000, "tx_root": bytes(32), "receipts_root": root,
        "state_root": bytes(32), "proposer": tx.device_id(pubs[0]),
        "validators": vh, "next_validators": vh})
    h = header.block_hash(hb)
    cert = commit_gateway.certificate(
        {i: commit_gateway.vote(by_pub[pubs[i]], pubs[i], h) for i in range(k)})
    return messages.receipt(tid, 1, 0, "", [], 3, hb, 0, 32, proof, cert)


def run(build_dir: Path, work: Path, kind: str, cert: str) -> tuple[int, int]:
    """(free heap before the check, lowest free heap during it) of one board."""
    flash = work / f"{kind}-{cert}"
    flash.mkdir()
    (flash / "wallet.key").write_bytes(tx.device_id(p256.public_key(BOARD)) + BOARD)
    me = tx.device_id(p256.public_key(BOARD))
    tid = tx.tx_id(tx.make(BOARD, me, tx.TYPE_READING, "demo", 1, 0, {1: 1, 2: -2}))
    cfg = {"domain": "demo", "authority": p256.public_key(AUTH).hex(),
           "broker_host": "127.0.0.1", "broker_port": 1883}
    if cert == "1 (authority)":
        m = receipt(tid, [AUTH], 1)
    else:
        k = int(cert[0])
        cfg.update(validators=[p256.public_key(x).hex() for x in VOTERS], threshold=2)
        m = receipt(tid, VOTERS, k)
    (flash / "config.json").write_text(json.dumps(cfg))
    (flash / "receipts").write_bytes(len(m).to_bytes(2, "big") + m)
    # run as a board runs: the firmware (and this script) compiled, on a short
    # path, found through the boot file (firmware/otaboot.py) as tools/vboard.py
    # boots it; an updated board runs version 2 from fw/2 (here the same
    # build), unconfirmed: its first boot after the update (docs/OTA.md)
    (flash / ROM).symlink_to(build_dir.resolve())
    if kind == "updated":
        (flash / "fw").mkdir()
        (flash / "fw" / "2").symlink_to(build_dir.resolve())
        (flash / "ota").mkdir()
        (flash / "ota" / "state").write_text("2 0 u 0")
    boot = (f"import sys\nsys.path.append({ROM!r})\n"
            "import otaboot\notaboot.boot()\ndel otaboot\n"
            f"sys.argv[:] = ['', {kind!r}, 'config.json', 'receipts']\n"
            "import mp_receipt_heap\n")
    out = run_micropython(["-c", boot], heap=HEAP, cwd=flash, timeout=300)
    if os.environ.get("BENCH_VERBOSE"):
        print(out.stdout + out.stderr)
    if "MemoryError" in out.stdout + out.stderr and "TX seq=" not in out.stdout:
        return -1, -1  # out of heap before its first transaction
    if ("TX seq=1 id=%s" % tid.hex()) not in out.stdout:
        raise RuntimeError(f"{kind} board: {out.stdout}{out.stderr}")
    found = re.search(r"FREE before=(\d+) low=(-?\d+)", out.stdout)
    if not found:
        raise RuntimeError(f"{kind} board: {out.stdout}{out.stderr}")
    return int(found.group(1)), int(found.group(2))


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_dir = work / "fw"
        build(build_dir, "unix")
        compile_stale(SCRIPT, build_dir / "mp_receipt_heap.mpy", SCRIPT.name, ("-O3",))
        for kind in KINDS:
            for cert in ("1 (authority)", "2 of 3", "3 of 3"):
                rows.append((kind, cert, *run(build_dir, work, kind, cert)))
    print(f"receipt check on a {HEAP} heap (64-bit Unix port, mpy-cross build)")
    print(f"{'board':<8} {'certificate':<14} {'free before':>12} {'lowest free':>12}  "
          f"{'target':<9} verdict")
    failed = 0
    for kind, cert, before, low in rows:
        ok = low >= TARGET
        failed += not ok
        print(f"{kind:<8} {cert:<14} {f'{before} B' if before >= 0 else 'fails':>12} "
              f"{f'{low} B' if low >= 0 else 'fails':>12}  "
              f">= {TARGET} B {'ok' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
