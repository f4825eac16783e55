"""State commitment, start-up and chain verify at scale: `python -m bench.state_tree`.

1. Root update per block vs number of accounts: a state of N principals,
   a block changing C of them (last_seq and balance; C = 100 and 1,000,
   or all if fewer); the time of the
   block's root (StateOverlay.root) plus folding it in (State.apply_diff),
   with the sparse Merkle tree and with the sorted-leaves root older chains
   use (state.SORTED, leaf hashes cached: the old per-block cost), median
   of 5 blocks. Also the tree built from scratch (what start-up no longer
   does).
2. Proof: size and check time of a board's balance proof among 100,000
   accounts, CPython and the MicroPython Unix port at 64 KiB.
3. A chain of D registered devices (bench/chainbuild.py: D registrations +
   one reading each): `open_ledger` time and the RSS of a fresh process
   that opens it (a gateway's start-up: load the state and its stored tree,
   check root and leaves), and `thingledger chain verify` tx/s with one
   process and with the signatures in worker processes, beside the raw
   `cryptography` verify rate on one core measured in the same run.
`--readme` writes the tables into bench/README.md ("State tree and scale").
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.ledger import state as st

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "bench" / "README.md"
SECTION = "## State tree and scale (`python -m bench.state_tree`)"


def _records(n: int) -> dict[bytes, st.DeviceRecord]:
    from hashlib import sha256
    return {sha256(b"id %d" % i).digest()[:16]: st.DeviceRecord(
        b"\x02" + sha256(b"pub %d" % i).digest(), i % 7, 1000 + i) for i in range(n)}


def block_cost(n: int, changed: int, commitment: str) -> tuple[float, float]:
    """(ms per block: root + apply_diff, median of 5; ms of the first root)."""
    devs = _records(n)
    s = st.State(devs, commitment=commitment)
    t0 = time.perf_counter()
    s.root()
    first = (time.perf_counter() - t0) * 1000
    ids = list(devs)
    times = []
    for b in range(5):
        v = st.StateOverlay(s)
        for k in range(changed):
            i = ids[(b * changed + k * 7919) % n]
            r = s.devices[i]
            v.put(i, r.with_seq_balance(r.last_seq + 1, r.balance - 1))
        t0 = time.perf_counter()
        v.root()
        s.apply_diff(v.changed, v.kv_changed)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), first


def proof_figures() -> dict[str, float]:
    sys.path.insert(0, str(ROOT / "tests" / "shared"))
    from stateproof_vectors import BOARD, LEAF, PROOF
    from stateproof_vectors import ROOT as SROOT

    from shared import cbor, stateproof
    root, board, leaf, raw = (bytes.fromhex(x) for x in (SROOT, BOARD, LEAF, PROOF))
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        assert stateproof.account_balance(root, board, leaf, cbor.loads(raw)) == (1234, 41)
    out = {"bytes": len(raw), "siblings": len(cbor.loads(raw)[0]),
           "cpython_us": (time.perf_counter() - t0) / n * 1e6}
    mp = subprocess.run([str(Path(sys.executable).with_name("micropython")), "-X",
                         "heapsize=64k", "bench/mp_stateproof.py", "50"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
    if mp.returncode:
        raise SystemExit("micropython: " + mp.stdout + mp.stderr)
    vals = dict(line.split() for line in mp.stdout.splitlines())
    out["mp_us"] = float(vals["check_us"])
    out["mp_free"] = float(vals["free_after"])
    return out


OPEN_SCRIPT = """
import sys, time
from pathlib import Path
t0 = time.perf_counter()
from gateway.db import store
from gateway.node import config
cfg = config.GatewayConfig(domain="demo", data_dir=Path(sys.argv[1]))
led = store.open_ledger(cfg, create=False)
dt = time.perf_counter() - t0
print("open_s", dt)
print("devices", len(led.state))
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print("rss_mb", int(status["VmHWM"].split()[0]) / 1024)  # peak of this process's own memory
"""


def chain_figures(devices: int, tmp: Path) -> dict[str, float]:
    from bench.chainbuild import make_chain
    from bench.gateway import verify_rate

    data = tmp / ("chain%d" % devices)
    make_chain(data, devices, readings_per_device=1)
    out: dict[str, float] = {"devices": devices, "txs": 2 * devices}
    p = subprocess.run([sys.executable, "-c", OPEN_SCRIPT, str(data)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    if p.returncode:
        raise SystemExit(p.stdout + p.stderr)
    vals = dict(line.split() for line in p.stdout.splitlines())
    out["open_s"], out["rss_mb"] = float(vals["open_s"]), float(vals["rss_mb"])
    out["verify_rate"] = verify_rate()
    from gateway.db import genesis_files
    from gateway.db import store as dbstore
    from gateway.db import verify as replay

    g = genesis_files.load(data / "genesis.toml")
    for jobs in (1, 2):  # in this process: its own CPU apart from the workers'
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0, t0 = time.process_time(), time.perf_counter()
        with dbstore.Store(data / "chain.db", readonly=True) as s:
            rep = replay.verify_chain(s, g, workers=jobs)
        dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if not rep.ok:
            raise SystemExit("chain verify failed: %s" % rep.error)
        out["verify_s_%d" % jobs] = dt
        out["verify_tps_%d" % jobs] = out["txs"] / dt
        out["verify_main_us_%d" % jobs] = cpu / out["txs"] * 1e6
        out["verify_workers_us_%d" % jobs] = ((children1.ru_utime + children1.ru_stime)
                                              - (children0.ru_utime + children0.ru_stime)
                                              ) / out["txs"] * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, nargs="*", default=[200, 2_000, 20_000, 100_000],
                    help="accounts in the root-update table")
    ap.add_argument("--changed", type=int, nargs="*", default=[100, 1000],
                    help="accounts changed per block")
    ap.add_argument("--chain", type=int, default=100_000,
                    help="registered devices of the start-up / verify chain (0: skip)")
    ap.add_argument("--readme", action="store_true")
    a = ap.parse_args(argv)
    load = os.getloadavg()[0]
    lines = ["| accounts | changed per block | tree: ms per block | sorted leaves (old): ms "
             "per block | tree from scratch ms | sorted leaves from scratch ms |",
             "|---:|---:|---:|---:|---:|---:|"]
    for n in a.n:
        for c in a.changed:
            if c > n:
                continue
            tree, tree_first = block_cost(n, c, st.SMT)
            old, old_first = block_cost(n, c, st.SORTED)
            lines.append("| %s | %s | %.1f | %.1f | %.0f | %.0f |" % (
                f"{n:,}", f"{c:,}", tree, old, tree_first, old_first))
            print(lines[-1], flush=True)
    pf = proof_figures()
    proof = [
        "| proof of a balance among 100,000 accounts | |", "|---|---:|",
        "| proof size (CBOR) | %d bytes, %d sibling hashes |" % (pf["bytes"], pf["siblings"]),
        "| check, CPython | %.0f us |" % pf["cpython_us"],
        "| check, MicroPython Unix port, 64 KiB heap | %.0f us (%d bytes free after) |"
        % (pf["mp_us"], pf["mp_free"]),
    ]
    print("\n".join(proof), flush=True)
    chain = []
    if a.chain:
        with tempfile.TemporaryDirectory() as tmp:
            c = chain_figures(a.chain, Path(tmp))
        chain = [
            "| chain of %s registered devices (%s txs) | |" % (f"{a.chain:,}", f"{c['txs']:,}"),
            "|---|---:|",
            "| start-up: open_ledger (load state + stored tree, check root and leaves) "
            "| %.2f s |" % c["open_s"],
            "| peak RSS of that process (VmHWM) | %.0f MB |" % c["rss_mb"],
            "| chain verify, 1 process | %s tx/s (%.1f s; CPU %.0f us per tx) |" % (
                f"{c['verify_tps_1']:,.0f}", c["verify_s_1"], c["verify_main_us_1"]),
            "| chain verify, signatures in 2 worker processes | %s tx/s (%.1f s; CPU per tx: "
            "%.0f us replay process + %.0f us workers) |"
            % (f"{c['verify_tps_2']:,.0f}", c["verify_s_2"], c["verify_main_us_2"],
               c["verify_workers_us_2"]),
            "| raw `cryptography` P-256 verify/s, 1 core, same run | %s |"
            % f"{c['verify_rate']:,.0f}",
        ]
        print("\n".join(chain), flush=True)
    ctx = ("date: %s; %s, %d cores; load average before the run %.2f; CPython %s" % (
               datetime.date.today().isoformat(), platform.machine(), os.cpu_count() or 0,
               load, platform.python_version()))
    print(ctx)
    if a.readme:
        body = ("```\n" + "\n".join(lines) + "\n```\n\n```\n" + "\n".join(proof)
                + "\n```\n\n" + ("```\n" + "\n".join(chain) + "\n```\n\n" if chain else "")
                + ctx + "\n")
        text = README.read_text()
        marker = "<!-- state_tree table -->"
        if marker not in text:
            raise SystemExit("bench/README.md has no %s" % marker)
        text = re.sub(r"(?s)<!-- state_tree table -->.*?<!-- /state_tree table -->",
                      lambda _: marker + "\n" + body + "<!-- /state_tree table -->", text)
        README.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
