"""Authority gateway vs quorum domain, in one run: `python -m bench.quorum`.

(a) one authority gateway on mosquitto: bench.gateway's end-to-end run
    (publisher processes -> broker -> `thingledger run` -> receipts), scaled
    to this run's sizes;
(b) a quorum domain of 3 gateways (k = 2), each `thingledger run --config`
    (gateway/cluster/replica.py), on a 3-node NATS cluster with JetStream
    (tools/nats_cluster.py, `sync_interval: always`); the same publishers
    and receipt subscriber on one node's MQTT listener, every receipt
    matched to its tx (one that comes again for a tx answered is counted:
    "receipts again") and a sample checked against the validator set.

For each: committed tx/s in a burst (readings / (last receipt - first
publish)) and receipt latency p50 / p99 with readings paced at --target
tx/s. Then, for (b), under a paced load of --recovery-rate tx/s: the time
from the SIGKILL of one gateway, then of the NATS node leading the proposal
stream, to the next block final on the gateways left (from their console
lines' arrival here).

The CPU budget (second table): the CPU time each process used during the
burst and the paced phase (/proc/<pid>/stat deltas), per committed tx and
in cores busy: each gateway, each nats-server, the load generator
(publisher processes and this process, the receipt subscriber) and the rest
of the machine's busy time (other work); (a)'s gateway and mosquitto beside
them. Then the blocks of each phase: how many, their size, who proposed
them and how many appends lost the compare-and-set race (from the console
lines). `--profile FILE` runs gateway gw2 under cProfile; `--no-recovery`
stops after the paced phase.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from hashlib import sha256
from pathlib import Path

from bench import gateway as gwbench
from bench.gateway import ROOT, Receipts, Signer, pct, publish_all, split

DOMAIN = gwbench.DOMAIN
FINAL = re.compile(r"final height=(\d+)")
FINAL_TXS = re.compile(r"final height=\d+ .*txs=(\d+)")
RACES = re.compile(r"races lost so far (\d+)")


class GatewayProcess:
    """A gateway process whose console lines are read here, each with its arrival time."""

    def __init__(self, toml: Path, name: str, profile: str | None = None) -> None:
        self.name = name
        self.toml = toml
        self.profile = profile  # cProfile's output file (written when it stops)
        self.finals: list[tuple[float, int]] = []  # (arrival, height)
        self.lines: list[str] = []
        self.stamped: list[str] = []  # the lines with their arrival's wall-clock time
        self.proc: subprocess.Popen | None = None
        self.cond = threading.Condition()

    def start(self) -> GatewayProcess:
        prof = ["-m", "cProfile", "-o", self.profile] if self.profile else []
        self.proc = subprocess.Popen(
            [sys.executable, *prof, "-m", "tools.cli", "run", "--config", str(self.toml),
             "--no-boards", "--no-http", "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda: any("following the log" in x for x in self.lines), 120,
                  "following the log")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            t = time.monotonic()
            with self.cond:
                self.lines.append(line.rstrip())
                self.stamped.append(f"{datetime.datetime.now():%H:%M:%S.%f} {line.rstrip()}")
                m = FINAL.search(line)
                if m:
                    self.finals.append((t, int(m.group(1))))
                self.cond.notify_all()

    def wait(self, pred, timeout: float, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(pred, timeout):
                raise SystemExit(f"{self.name}: no {what} in {timeout} s:\n"
                                 + "\n".join(self.lines[-20:]))

    def stats(self) -> dict:
        """Blocks final here so far, how many it proposed, their txs, the
        proposals it lost to another gateway's (compare-and-set races)."""
        with self.cond:
            finals = [x for x in self.lines if FINAL.search(x)]
        txs = [int(m.group(1)) for x in finals if (m := FINAL_TXS.search(x))]
        mine = [x for x in finals if "proposed here" in x]
        races = [int(m.group(1)) for x in mine if (m := RACES.search(x))]
        return {"final": len(finals), "proposed": len(mine), "txs": sum(txs),
                "lost_races": max(races, default=0)}

    def final_height(self) -> int:
        with self.cond:
            return self.finals[-1][1] if self.finals else 0

    def first_final_after(self, t: float, height: int, timeout: float) -> float:
        """Arrival time of the first block final here after `t` above `height`."""
        def found():
            return next((a for a, h in self.finals if a > t and h > height), None)
        self.wait(lambda: found() is not None, timeout, f"final block above {height}")
        a = found()
        assert a is not None
        return a

    def stall_after(self, t: float, window: float) -> tuple[float, float]:
        """After a fault at `t`: (the longest time without a final block here
        within `window` s, counting from `t`; the time from `t` to the end of
        that gap, when finalising resumed). A block voted before the fault
        may be final just after it: the stall is the gap, wherever it falls."""
        self.wait(lambda: bool(self.finals) and self.finals[-1][0] > t + window, window + 120,
                  f"final blocks {window} s after the fault")
        with self.cond:
            times = [a for a, _ in self.finals if t < a <= t + window]
        gaps = [(b - a, b) for a, b in zip([t, *times], times, strict=False)]
        gap, end = max(gaps)
        return gap, end - t

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process, of the load generator (the
    publisher processes that finished, and this process: the receipt
    subscriber and the console readers) and of the whole machine (busy, idle)."""
    snap = {name: gwbench.cpu_seconds(pid) for name, pid in pids.items()}
    snap["load generator"] = gwbench.PUBLISHER_CPU[0] + time.process_time()
    snap["machine busy"], snap["machine idle"] = gwbench.machine_cpu()
    return snap


def budget(before: dict[str, float], after: dict[str, float], n: int, span: float) -> dict:
    """CPU per committed tx (us) and cores busy over the phase, per process."""
    out = {k: {"us": (after[k] - before[k]) / n * 1e6, "cores": (after[k] - before[k]) / span}
           for k in before}
    named = [k for k in before if k not in ("load generator", "machine busy", "machine idle")]
    ours = sum(after[k] - before[k] for k in [*named, "load generator"])
    rest = after["machine busy"] - before["machine busy"] - ours
    out["other work on the machine"] = {"us": rest / n * 1e6, "cores": rest / span}
    return out


def measure(name: str, port: int, rx: Receipts, groups: list[list[bytes]], rate: float,
            validators: tuple, pids: dict[str, int] | None = None,
            gws: list[GatewayProcess] | None = None,
            answered: set[bytes] | None = None) -> dict:
    """One phase: publish, then wait until every tx has its receipt (a tx
    answered twice does not count for another: the duplicates are counted,
    `dups`, with those of txs of earlier phases, `answered`, that arrive in
    this one)."""
    from shared import messages

    flat = [m for g in groups for m in g]
    print(f"  {name}: {len(flat):,} readings"
          + (f" at {rate:,.0f} tx/s" if rate else " as fast as possible"), flush=True)
    cpu0 = cpu_snapshot(pids or {})
    st0 = [g.stats() for g in gws or ()]
    times, _ = publish_all(port, groups, rate)
    sent = {sha256(m).digest(): t for m, t in zip(flat, times, strict=True)}
    answered = set() if answered is None else answered
    lat, last, other, dups = [], 0.0, collections.Counter(), 0
    got: list[tuple[bytes, float]] = []
    deadline = time.monotonic() + 600
    while sent:
        rx.wait(len(sent), max(1.0, deadline - time.monotonic()))
        new = rx.take()
        got += new
        for payload, t in new:
            m = messages.parse(payload)
            tx = m[messages.M_TX]
            if m[messages.M_KIND] != messages.KIND_RECEIPT:
                other[(m[messages.M_KIND], m.get(messages.M_REASON))] += 1
            elif tx in sent:
                lat.append(t - sent.pop(tx))
                answered.add(tx)
                last = max(last, t)
            elif tx in answered:
                dups += 1
            else:
                other[(m[messages.M_KIND], "receipt of a tx not sent")] += 1
        if other:
            raise SystemExit(f"{name}: {len(sent)} txs without a receipt, other replies"
                             f" (kind, reason): {dict(other)}")
    cpu1 = cpu_snapshot(pids or {})
    st1 = [g.stats() for g in gws or ()]
    for payload, _ in got[:: max(1, len(got) // 100)]:
        messages.check_receipt(messages.parse(payload), b"", validators)
    first = min(times)
    r = {"tps": len(flat) / (last - first), "p50": statistics.median(lat),
         "p99": pct(lat, 0.99), "dups": dups,
         "cpu": budget(cpu0, cpu1, len(flat), last - first),
         "blocks": {g.name: {k: b[k] - a[k] for k in b}
                    for g, a, b in zip(gws or (), st0, st1, strict=True)}}
    print(f"    {r['tps']:,.0f} committed tx/s; p50 {r['p50'] * 1000:.0f} ms, "
          f"p99 {r['p99'] * 1000:.0f} ms; {dups} receipts again for a tx answered", flush=True)
    return r


def run_quorum(args: argparse.Namespace, tmp: Path) -> dict:
    from gateway.cluster import link
    from gateway.db.genesis_files import create_replicated_domain
    from gateway.ledger import consensus
    from shared import p256
    from shared import tx as txm
    from tools.nats_cluster import NatsCluster
    from tools.run_cluster import write_gateway_config

    res: dict = {}
    devices = [Signer() for _ in range(args.senders)]
    keys = [p256.keygen() for _ in range(3)]
    vs = consensus.ValidatorSet.of([p for _, p in keys], 2)
    dirs = [tmp / f"q{i + 1}" for i in range(3)]
    create_replicated_domain(dirs, DOMAIN, [k for k, _ in keys],
                             {d.pub: 1000 for d in devices}, time=1_700_000_000,
                             validators=list(vs.pubkeys), threshold=2)
    nats = NatsCluster(tmp / "nats", 3).start()
    gws: list[GatewayProcess] = []
    rx = None
    try:
        for i, d in enumerate(dirs):
            gws.append(GatewayProcess(
                write_gateway_config(d, i, DOMAIN, nats, args.block_interval), f"gw{i + 1}",
                args.profile if i == 1 else None))  # gw2: gw1 is SIGKILLed below
        for g in gws:
            g.start()
        pids = {g.name: g.proc.pid for g in gws if g.proc is not None}
        pids |= {n.name: n.proc.pid for n in nats.nodes if n.proc is not None}
        port = nats.nodes[0].mqtt_port
        rx = Receipts(port)
        validators = (vs.threshold, list(vs.pubkeys), vs.hash)
        per_burst = max(1, args.txs // len(devices))
        per_paced = max(1, int(args.target * args.paced_seconds) // len(devices))
        burst = split(devices, per_burst, args.publishers, txm.TYPE_READING)
        paced = split(devices, per_paced, args.publishers, txm.TYPE_READING)
        answered: set[bytes] = set()
        if not args.only_recovery:
            res["burst"] = measure("burst", port, rx, burst, 0.0, validators, pids, gws,
                                   answered)
            res["paced"] = measure("paced", port, rx, paced, args.target, validators, pids,
                                   gws, answered)
        if args.no_recovery:
            return res

        # recovery: a paced load through a node that stays up, then the kills
        leader = asyncio.run(_leader(nats.urls, link.log_stream(DOMAIN)))
        keep = next(n for n in nats.nodes if n.name != leader)
        rx.close()
        rx = Receipts(keep.mqtt_port)
        per = max(1, int(args.recovery_rate * args.recovery_seconds) // len(devices))
        load = split(devices, per, 1, txm.TYPE_READING)
        done = threading.Event()
        th = threading.Thread(target=lambda: (publish_all(keep.mqtt_port, load,
                                                          args.recovery_rate), done.set()),
                              daemon=True)
        th.start()
        victim = gws[0]
        rest = gws[1:]
        h0 = max(g.final_height() for g in rest)
        rest[0].first_final_after(time.monotonic(), h0, 60)  # the load is flowing
        # a window of the steady pace before the first kill (the comparison)
        res["normal_gap_s"] = rest[0].stall_after(time.monotonic(), args.window)[0]
        t_kill = time.monotonic()
        victim.stop(signal.SIGKILL)
        print(f"  SIGKILL gw1 at {datetime.datetime.now():%H:%M:%S.%f}", flush=True)
        res["gw_gap_s"], res["gw_kill_s"] = rest[0].stall_after(t_kill, args.window)
        print(f"  SIGKILL gw1: longest gap {res['gw_gap_s'] * 1000:.0f} ms, finalising again "
              f"{res['gw_kill_s'] * 1000:.0f} ms after the kill", flush=True)
        res["leader"] = leader
        res["leader_held"] = [g.name for g in rest if g.name[2:] == leader[4:]]
        node = nats.node(leader)
        t_kill = time.monotonic()
        node.kill()
        print(f"  SIGKILL {leader} at {datetime.datetime.now():%H:%M:%S.%f}", flush=True)
        try:
            res["leader_gap_s"], res["leader_kill_s"] = rest[0].stall_after(t_kill,
                                                                            args.window)
        except SystemExit as e:  # no block: finality stalled, or no tx arrived
            print(f"  SIGKILL NATS stream leader {leader}: {str(e).splitlines()[0]}",
                  flush=True)
            res["leader_gap_s"] = None
            return res
        print(f"  SIGKILL NATS stream leader {leader}: longest gap "
              f"{res['leader_gap_s'] * 1000:.0f} ms, finalising again "
              f"{res['leader_kill_s'] * 1000:.0f} ms after the kill", flush=True)
        th.join(args.recovery_seconds + 120)
    finally:
        if rx is not None:
            rx.close()
        for g in gws:
            g.stop()
            with g.cond:  # --keep: each gateway's console beside its data
                (tmp / f"{g.name}.console").write_text("\n".join(g.stamped) + "\n")
        nats.stop()
    return res


async def _leader(urls: list[str], stream: str) -> str:
    from gateway.cluster import link

    nc = await link.connect(urls)
    try:
        for _ in range(300):
            info = await nc.jetstream().stream_info(stream)
            if info.cluster and info.cluster.leader:
                return info.cluster.leader
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
    raise SystemExit("no stream leader")


def run(args: argparse.Namespace) -> dict:
    res: dict = {"load_before": os.getloadavg()[0], "args": vars(args)}
    if args.only_recovery:
        res["b"] = quorum_in_temp_dir(args)
        return res
    print("(a) authority gateway on mosquitto", flush=True)
    a = gwbench.run(argparse.Namespace(
        n_devices=args.senders, senders=args.senders, txs=args.txs, target=args.target,
        paced_seconds=args.paced_seconds, block_interval=args.block_interval,
        publishers=args.publishers, scenario="throughput", profile=None, keep=False))
    res["a"] = {"burst": a["phases"]["burst"], "paced": a["phases"]["paced"],
                "verify_ok": a["verify_ok"]}
    print("(b) quorum domain: 3 gateways on a 3-node NATS cluster", flush=True)
    res["b"] = quorum_in_temp_dir(args)
    return res


def quorum_in_temp_dir(args: argparse.Namespace) -> dict:
    """(b) in a temporary folder, removed after unless --keep."""
    tmp = Path(tempfile.mkdtemp(prefix="tl-bench-quorum-"))
    try:
        return run_quorum(args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"(b) kept in {tmp}", flush=True)


def table(res: dict) -> str:
    a, b = res["a"], res["b"]
    interval = res["args"]["block_interval"]
    target = res["args"]["target"]
    ratio = b["burst"]["tps"] / a["burst"]["tps"]
    lim = interval + 0.2

    def ok(c: bool) -> str:
        return "PASS" if c else "FAIL"
    rows = [
        ("committed tx/s, burst: (a) authority / mosquitto",
         f"{a['burst']['tps']:,.0f}", "", ""),
        ("committed tx/s, burst: (b) quorum 3 gw / 3 NATS",
         f"{b['burst']['tps']:,.0f}", ">= 50% of (a)", ok(ratio >= 0.5)),
        ("(b) / (a)", f"{ratio * 100:.0f} %", "", ""),
        (f"receipt p50 / p99, paced {target:,.0f} tx/s: (a)",
         f"{a['paced']['p50'] * 1000:,.0f} / {a['paced']['p99'] * 1000:,.0f} ms", "", ""),
        (f"receipt p50 / p99, paced {target:,.0f} tx/s: (b)",
         f"{b['paced']['p50'] * 1000:,.0f} / {b['paced']['p99'] * 1000:,.0f} ms",
         f"p99 < {lim * 1000:.0f} ms", ok(b["paced"]["p99"] < lim)),
        ("(b) receipts again for a tx answered, burst / paced",
         f"{b['burst']['dups']:,} / {b['paced']['dups']:,}", "0", ok(
             b["burst"]["dups"] == 0 and b["paced"]["dups"] == 0)),
    ]
    if "gw_gap_s" in b:  # the kills (not with --no-recovery)
        rows += [
            (f"(b) longest time without a final block, {res['args']['window']:g} s, no fault",
             f"{b['normal_gap_s'] * 1000:,.0f} ms", "", ""),
            ("SIGKILL of a gateway: longest time without a final block",
             f"{b['gw_gap_s'] * 1000:,.0f} ms", "< 10 s", ok(b["gw_gap_s"] < 10)),
            ("SIGKILL of the stream leader: longest time without one",
             "none in window" if b["leader_gap_s"] is None
             else f"{b['leader_gap_s'] * 1000:,.0f} ms", "< 10 s",
             ok(b["leader_gap_s"] is not None and b["leader_gap_s"] < 10)),
        ]
    w = max(len(r[0]) for r in rows)
    out = [f"{'metric':<{w}}  {'measured':>16}  {'target':<14}  verdict",
           f"{'-' * w}  {'-' * 16}  {'-' * 14}  -------"]
    out += [f"{r[0]:<{w}}  {r[1]:>16}  {r[2]:<14}  {r[3]}".rstrip() for r in rows]
    return "\n".join(out)


def recovery_line(res: dict) -> str:
    """--only-recovery: one line of figures (a row of bench/README.md's table)."""
    b = res["b"]
    leader = "none in window" if b.get("leader_gap_s") is None \
        else f"{b['leader_gap_s'] * 1000:,.0f} ms"
    return (f"load {res['load_before']:.2f}: no fault {b['normal_gap_s'] * 1000:,.0f} ms, "
            f"gw1 kill {b['gw_gap_s'] * 1000:,.0f} ms, leader {b.get('leader', '?')} kill "
            f"{leader} (its node held {', '.join(b.get('leader_held') or ['no gateway'])})")


def budget_table(res: dict) -> str:
    """Where the CPU goes: us of CPU per committed tx and cores busy, per
    process, in (a)'s burst and (b)'s burst and paced phases; then the blocks."""
    a, b = res["a"], res["b"]
    ab = a["burst"]
    rows: list[tuple[str, ...]] = []
    order = [k for k in b["burst"]["cpu"] if k not in ("machine busy", "machine idle")]
    order += ["machine busy", "machine idle"]
    a_map = {"gateway": ab.get("gw_cpu_us"), "broker": ab.get("broker_cpu_us"),
             "load generator": ab.get("loadgen_cpu_us"),
             "machine busy": ab.get("machine_busy_us"),
             "machine idle": ab.get("machine_idle_us")}
    a_of = {"gw1": "gateway", "nats1": "broker", "load generator": "load generator",
            "machine busy": "machine busy", "machine idle": "machine idle"}
    for k in order:
        bb, bp = b["burst"]["cpu"][k], b["paced"]["cpu"][k]
        av = a_map.get(a_of.get(k, ""))
        rows.append((k, "" if av is None else f"{av:,.0f}", f"{bb['us']:,.0f}",
                     f"{bb['cores']:.2f}", f"{bp['us']:,.0f}", f"{bp['cores']:.2f}"))
    head = ("process", "(a) burst us/tx", "(b) burst us/tx", "cores",
            "(b) paced us/tx", "cores")
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    out = ["  ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(head)),
           "  ".join("-" * x for x in w)]
    out += ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))
            for r in rows]
    out.append("((a): gw1 is the authority gateway, nats1 is mosquitto)")
    for phase in ("burst", "paced"):
        bl = b[phase].get("blocks", {})
        if bl:
            g = next(iter(bl.values()))
            props = ", ".join(f"{n} {x['proposed']}" for n, x in bl.items())
            races = ", ".join(f"{n} {x['lost_races']}" for n, x in bl.items())
            out.append(f"(b) {phase}: {g['final']} blocks final, {g['txs'] / max(1, g['final']):.0f} "
                       f"txs per block; proposed by {props}; races lost {races}")
    return "\n".join(out)


def context(res: dict) -> str:
    a = res["args"]
    return (f"date: {datetime.date.today()}; {platform.machine()}, {os.cpu_count()} cores; "
            f"load average before the run {res['load_before']:.2f}; CPython "
            f"{platform.python_version()}  \n"
            f"{a['senders']} devices, burst {a['txs']:,} readings from {a['publishers']} "
            f"publisher processes, paced {a['target']:,.0f} tx/s for {a['paced_seconds']:g} s, "
            f"block interval {a['block_interval']:g} s; recovery under "
            f"{a['recovery_rate']:g} tx/s; (a) chain verify "
            f"{'ok' if res['a']['verify_ok'] else 'FAILED'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quorum", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--senders", type=int, default=100)
    p.add_argument("--txs", type=int, default=6000, help="readings in the burst")
    p.add_argument("--target", type=float, default=1000.0, help="paced rate, tx/s")
    p.add_argument("--paced-seconds", type=float, default=5.0)
    p.add_argument("--publishers", type=int, default=2)
    p.add_argument("--block-interval", type=float, default=0.25)
    p.add_argument("--recovery-rate", type=float, default=100.0)
    p.add_argument("--recovery-seconds", type=float, default=55.0,
                   help="length of the paced load under which the kills happen")
    p.add_argument("--window", type=float, default=15.0,
                   help="s watched after each kill (and before, for the comparison)")
    p.add_argument("--no-recovery", action="store_true",
                   help="burst and paced only: no kills (a quicker run)")
    p.add_argument("--only-recovery", action="store_true",
                   help="(b)'s kills only: no (a), no burst, no paced phase (a quick "
                        "reproduction of the recovery figures)")
    p.add_argument("--profile", metavar="FILE",
                   help="run gateway gw2 under cProfile, its output to FILE")
    p.add_argument("--keep", action="store_true",
                   help="keep (b)'s folder: data dirs, NATS stores, gw<i>.console")
    args = p.parse_args(argv)
    res = run(args)
    if args.only_recovery:
        print(recovery_line(res))
        return 0
    text = table(res) + "\n\n" + budget_table(res)
    print(text)
    print(context(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
