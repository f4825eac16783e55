"""The proposal log on a 3-node NATS JetStream cluster (`python -m bench.nats_log`):
gateway/cluster/log.py's compare-and-set appends of 1 KB entries to a
3-replica stream (`sync_interval: always`), one appender building on the last
entry each time, as a domain's proposer does.

Measured in one run, on loopback (tools/nats_cluster.py, free ports, a temp dir):
1. appends/s of CAS appends (Nats-Expected-Last-Sequence + Nats-Msg-Id), and,
   as the comparison, plain sequential JetStream publishes of the same entries
   to a second 3-replica stream with no headers (what the CAS costs);
2. the write stall after a SIGKILL of the stream leader: the time from the kill
   to the first acknowledged append, over --kills kills (the killed node is
   started again after each, and the log checked: every acknowledged entry
   present exactly once); target (issue 11): under 10 s;
3. memory of each nats-server: VmRSS now and VmHWM (its peak).

Targets: CAS appends at least half the plain publish rate; every stall under
10 s; no acknowledged entry lost or doubled."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gateway.cluster import link
from gateway.cluster.log import ProposalLog
from tools.nats_cluster import NatsCluster

ENTRY = 1024
STALL_TARGET = 10.0


def _entry(i: int) -> bytes:
    head = b"entry %d " % i
    return head + os.urandom(ENTRY - len(head))


def _mem(node) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB of a running node."""
    rss = hwm = 0
    if node.proc is None:
        return 0, 0
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


async def _leader(js, stream: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = await js.stream_info(stream)
            if info.cluster and info.cluster.leader:
                return info.cluster.leader
        except Exception:  # noqa: BLE001 - an election in progress
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no leader for {stream}")


async def run(cluster: NatsCluster, n: int, kills: int) -> dict:
    nc = await link.connect(cluster.urls)
    js = nc.jetstream()
    plog = ProposalLog(js, "bench")
    await plog.ensure()
    plain = ProposalLog(js, "bench-plain")
    await plain.ensure()
    entries = [_entry(i) for i in range(n)]

    # 1. throughput: CAS appends, then plain publishes
    t = time.perf_counter()
    last = 0
    acked: list[bytes] = []
    for e in entries:
        a = await plog.append(e, last)
        last = a.seq
        acked.append(e)
    cas_rate = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for e in entries:
        await js.publish(plain.subject, e, stream=plain.stream)
    plain_rate = n / (time.perf_counter() - t)

    # 2. stalls after a leader SIGKILL, the appender running throughout
    stalls: list[float] = []
    for k in range(kills):
        leader = await _leader(js, plog.stream)
        node = cluster.node(leader)
        stop = asyncio.Event()
        first_after: list[float] = []
        killed_at: list[float] = []

        async def appender(k: int, stop: asyncio.Event, first_after: list[float],
                           killed_at: list[float]) -> None:
            nonlocal last
            i = 0
            while not (stop.is_set() and first_after):
                e = _entry(10_000 * (k + 1) + i)
                i += 1
                started = time.monotonic()
                a = await plog.append(e, last, timeout=60.0)
                last = a.seq
                acked.append(e)
                if killed_at and not first_after and started > killed_at[0]:
                    first_after.append(time.monotonic())  # the first append begun after it

        task = asyncio.create_task(appender(k, stop, first_after, killed_at))
        await asyncio.sleep(0.3)  # the appender is mid-stream when the leader dies
        killed_at.append(time.monotonic())
        node.kill()
        stop.set()
        await asyncio.wait_for(task, 90)
        stalls.append(first_after[0] - killed_at[0])
        await asyncio.get_running_loop().run_in_executor(None, node.start)

    # every acknowledged entry exactly once, in order
    got = [(await plog.get(s)).data for s in range(1, await plog.last_seq() + 1)]
    intact = got == acked
    await nc.close()
    return {"cas": cas_rate, "plain": plain_rate, "stalls": stalls, "intact": intact,
            "entries": len(acked), "mem": [(nd.name, *_mem(nd)) for nd in cluster.nodes]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.nats_log")
    ap.add_argument("-n", type=int, default=2000, help="appends of 1 KB to time")
    ap.add_argument("--kills", type=int, default=3, help="stream leader SIGKILLs")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-nats-") as d:
        cluster = NatsCluster(d, 3, mqtt=False).start()
        try:
            r = asyncio.run(run(cluster, args.n, args.kills))
        finally:
            cluster.stop()
    ok_rate = r["cas"] >= 0.5 * r["plain"]
    ok_stall = all(s < STALL_TARGET for s in r["stalls"])
    rows = [
        ("CAS appends/s (1 KB, R3, sync always)", f"{r['cas']:.0f}",
         f">= {0.5 * r['plain']:.0f}", "ok" if ok_rate else "MISSED"),
        ("plain publishes/s (same stream config)", f"{r['plain']:.0f}", "", ""),
    ]
    for i, s in enumerate(r["stalls"]):
        rows.append((f"stall after leader SIGKILL #{i + 1}", f"{s:.2f} s", f"< {STALL_TARGET} s",
                     "ok" if s < STALL_TARGET else "MISSED"))
    if r["stalls"]:
        rows.append(("median stall", f"{statistics.median(r['stalls']):.2f} s", "", ""))
    rows.append((f"acknowledged entries intact ({r['entries']})", "yes" if r["intact"] else "NO",
                 "yes", "ok" if r["intact"] else "MISSED"))
    for name, rss, hwm in r["mem"]:
        rows.append((f"{name}: RSS now / peak", f"{rss / 1024:.0f} / {hwm / 1024:.0f} MB", "", ""))
    print(f"{'measure':<44}{'value':>16}  {'target':<10}verdict")
    for m, v, t, ok in rows:
        print(f"{m:<44}{v:>16}  {t:<10}{ok}")
    return 0 if ok_rate and ok_stall and r["intact"] else 1


if __name__ == "__main__":
    sys.exit(main())
