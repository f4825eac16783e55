"""Registry network benchmark: `python -m bench.registry_net [--blocks N] [--devices D]`.

Measures, in one run, on a chain of N blocks (default 10,000; difficulty 8
bits, retarget every 8 blocks, one manufacturer, D device records spread over
the blocks):

- catch-up validation in one process: a fresh node's BlockTree takes the
  blocks in batches of 500, as a node's `blocks` reply brings them (full
  validation: target rule, work, roots, signatures, state root, one SQLite
  transaction per batch): blocks/s;
- the comparison figure, same chain, same run: `registry verify`'s replay
  (gateway/registry/replay.py) of the stored chain: blocks/s;
- catch-up over MQTT: a `thingledger registry serve` process holding the
  chain and a fresh one joining with only the genesis file, on a mosquitto
  started here: seconds until the fresh node has the head;
- a light lookup: bytes of the record's proof (leaf + audit path) and of the
  headers (all since genesis, and 100 since a checkpoint), and the time to
  check them: CPython, and the MicroPython Unix port at 64 KiB (100 headers
  since a checkpoint + the record: what a board checking its own record does).

Targets: catch-up over MQTT at most 3x the local replay's time (the network
and the second process may cost, not more); the MicroPython check within
one block time of the chain (a board keeps up with the chain it checks).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import tempfile
import time
from hashlib import sha256
from pathlib import Path

from gateway.registry import chain, open_registry
from gateway.registry import pow as pw
from gateway.registry.client import check_answer, genesis_tip
from gateway.registry.forks import BlockTree, make_block
from gateway.registry.params import GENESIS_FILE
from gateway.registry.replay import verify_registry
from shared import cbor, p256, regproof
from shared import tx as txm
from tools.build import tool

ROOT = Path(__file__).resolve().parent.parent
MP_SCRIPT = ROOT / "bench" / "mp_regproof.py"
BITS, RETARGET, BLOCK_S = 8, 8, 2.0
BATCH = 500
CHECKPOINT_BACK = 100
MQTT_FACTOR = 3.0


def key(name: str) -> tuple[bytes, bytes]:
    priv = sha256(b"bench-registry-" + name.encode()).digest()
    return priv, p256.public_key(priv)


def build(d: Path, n: int, devices: int) -> tuple[list[chain.RegistryBlock], float]:
    """Blocks 1..n of a registry created in `d` (stored), and the seconds it took."""
    t_start = time.perf_counter()
    t0 = int(time.time()) - int(BLOCK_S * n) - 3600
    reg = open_registry(d, create=True, difficulty_bits=BITS, retarget_blocks=RETARGET,
                        block_time_s=BLOCK_S, time=t0)
    g = reg.genesis
    tree = BlockTree(reg)
    priv, pub = key("maker")
    mid = txm.device_id(pub)
    state = chain.RegistryState()
    times, target, prev = [t0], g.target, tree.head_hash
    every = max(1, n // max(1, devices))
    made = 0
    pending: list = []
    for h in range(1, n + 1):
        if h == 1:
            txs = [txm.make(priv, mid, txm.TYPE_MFR_REGISTER, chain.DOMAIN, 1, 0,
                            {1: pub, 2: "Bench Maker"})]
        elif made < devices and h % every == 0:
            made += 1
            dpub = key("dev-%d" % made)[1]
            txs = [txm.make(priv, mid, txm.TYPE_DEVICE_RECORD, chain.DOMAIN, 1 + made, 0,
                            {1: dpub, 2: "TH-1", 3: "B%06d" % made, 4: t0, 5: t0 + 86400})]
        else:
            txs = []
        ex = chain.execute(txs, state, h)
        target = pw.next_target(h, target, times.__getitem__, RETARGET, g.block_time_ms,
                                g.target)
        f = chain.header_fields(height=h, prev_hash=prev, time=t0 + int(BLOCK_S * h),
                                tx_root=ex.tx_root, receipts_root=ex.receipts_root,
                                state_root=ex.overlay.root(), proposer=chain.ANONYMOUS_MINER,
                                target=target)
        found = pw.solve(f, target)
        assert found is not None
        state.apply(ex.overlay)
        times.append(f["time"])
        prev = found[2]
        pending.append(make_block(found[1], [t.message for t in ex.txs]))
        if len(pending) == BATCH or h == n:
            out = tree.receive(pending)
            assert out.switched and not out.refused, out.refused
            pending = []
    reg.close()
    return [], time.perf_counter() - t_start


def encoded_blocks(d: Path) -> list[bytes]:
    reg = open_registry(d)
    tree = BlockTree(reg)
    out, more, loc = [], True, [tree.main[0]]
    while more:
        got, more = tree.blocks_after(loc, BATCH, 1 << 30)
        out += got
        loc = [make_block(*cbor.loads(got[-1], max_size=1 << 24)).hash]
    reg.close()
    return out


def catch_up_in_process(src: Path, dst: Path) -> tuple[float, int]:
    blocks = encoded_blocks(src)
    dst.mkdir()
    shutil.copy(src / GENESIS_FILE, dst / GENESIS_FILE)
    from gateway.registry.forks import decode_block

    t0 = time.perf_counter()
    reg = open_registry(dst)
    tree = BlockTree(reg)
    for i in range(0, len(blocks), BATCH):
        out = tree.receive([decode_block(b) for b in blocks[i:i + BATCH]])
        assert out.switched and not out.refused
    dt = time.perf_counter() - t0
    h = tree.height
    reg.close()
    return dt, h


def replay(src: Path) -> float:
    from gateway.registry.params import load_genesis
    from gateway.registry.store import RegistryStore

    t0 = time.perf_counter()
    with RegistryStore(src / "registry.db", readonly=True) as store:
        rep = verify_registry(store, load_genesis(src), int(time.time()))
    assert rep.ok, rep.text()
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def catch_up_mqtt(src: Path, dst: Path, height: int, timeout: float = 600) -> float:
    mosq = shutil.which("mosquitto")
    if not mosq:
        raise SystemExit("mosquitto not installed (make sysdeps)")
    port = free_port()
    conf = src.parent / "mosquitto.conf"
    conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\n" % port)
    procs = [subprocess.Popen([mosq, "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    url = "mqtt://127.0.0.1:%d" % port
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("mosquitto did not start") from None
                time.sleep(0.05)
        serve = [tool("thingledger"), "registry", "serve", "--broker", url, "--registry-dir"]
        procs.append(subprocess.Popen(serve + [str(src), "--node-id", "source"],
                                      stdout=subprocess.PIPE, text=True))
        assert procs[-1].stdout is not None
        for line in procs[-1].stdout:
            if line.strip() == "connected":
                break
        dst.mkdir()
        shutil.copy(src / GENESIS_FILE, dst / GENESIS_FILE)
        t0 = time.perf_counter()
        p = subprocess.Popen(serve + [str(dst), "--node-id", "joiner"], stdout=subprocess.PIPE,
                             text=True)
        procs.append(p)
        assert p.stdout is not None
        want = re.compile(r"^head %d " % height)
        for line in p.stdout:
            if want.match(line):
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                break
        raise SystemExit("the joining node did not reach height %d" % height)
    finally:
        for q in reversed(procs):
            q.terminate()
            try:
                q.wait(10)
            except subprocess.TimeoutExpired:
                q.kill()


def lookup_figures(src: Path, devices: int, mp_rounds: int) -> dict[str, float]:
    reg = open_registry(src)
    tree = BlockTree(reg)
    g = reg.genesis
    did = txm.device_id(key("dev-%d" % max(1, devices // 2))[1])
    p = reg.prove(did)
    assert p is not None
    headers = tree.headers_after(0)
    answer = {"headers": headers, "record": [p.leaf, p.index, p.size, p.path]}
    out: dict[str, float] = {"proof_bytes": len(p.leaf) + 32 * len(p.path),
                             "path_len": len(p.path),
                             "headers_bytes": sum(map(len, headers)), "headers": len(headers)}
    t0 = time.perf_counter()
    tip, rec, _ = check_answer(g, genesis_tip(g), answer, did)
    out["cpython_all_ms"] = (time.perf_counter() - t0) * 1000
    assert rec is not None and tip.hash == tree.head_hash
    # a checkpoint CHECKPOINT_BACK headers below the head
    cut = tree.height - CHECKPOINT_BACK
    cp = regproof.check_headers(genesis_tip(g), headers[:cut], g.retarget_blocks,
                                g.block_time_ms, g.target)
    recent = headers[cut:]
    out["recent_bytes"] = sum(map(len, recent))
    t0 = time.perf_counter()
    for _ in range(10):
        new = regproof.check_headers(cp, recent, g.retarget_blocks, g.block_time_ms, g.target)
        regproof.check_record(new, p.leaf, p.index, p.size, p.path)
    out["cpython_recent_ms"] = (time.perf_counter() - t0) * 100
    first = cbor.dumps([[cp.height, cp.hash, cp.target, cp.state_root, cp.work, cp.times],
                        [p.leaf, p.index, p.size, p.path],
                        [g.retarget_blocks, g.block_time_ms, g.target]])
    data = b"".join(len(x).to_bytes(2, "big") + x for x in [first, *recent])
    reg.close()
    f = src.parent / "lookup.cbor"
    f.write_bytes(data)
    r = subprocess.run([tool("micropython"), "-X", "heapsize=64k", str(MP_SCRIPT), str(ROOT),
                        str(f), str(mp_rounds)], capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise SystemExit("micropython failed:\n" + r.stdout + r.stderr)
    mp = {k: float(v) for k, v in (line.split() for line in r.stdout.splitlines())}
    out["mp_recent_ms"] = (mp["headers_us"] + mp["record_us"]) / 1000
    out["mp_record_ms"] = mp["record_us"] / 1000
    out["mp_heap_free"] = mp["heap_free"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=10_000)
    ap.add_argument("--devices", type=int, default=1_000)
    ap.add_argument("--mp-rounds", type=int, default=3)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        src = Path(tmp) / "source"
        _, t_build = build(src, a.blocks, a.devices)
        t_local, h = catch_up_in_process(src, Path(tmp) / "local")
        t_replay = replay(src)
        t_mqtt = catch_up_mqtt(src, Path(tmp) / "joiner", a.blocks)
        lk = lookup_figures(src, a.devices, a.mp_rounds)
    assert h == a.blocks
    ok_mqtt = t_mqtt <= MQTT_FACTOR * t_replay
    ok_mp = lk["mp_recent_ms"] <= BLOCK_S * 1000
    rows = [
        ("chain built (mined, stored)", "%d blocks, %d devices" % (a.blocks, a.devices),
         "%.1f s" % t_build, ""),
        ("catch-up validation, one process", "%.0f blocks/s" % (a.blocks / t_local),
         "%.1f s" % t_local, ""),
        ("replay (registry verify), same chain", "%.0f blocks/s" % (a.blocks / t_replay),
         "%.1f s" % t_replay, "comparison"),
        ("catch-up over MQTT, 2 processes", "%.0f blocks/s" % (a.blocks / t_mqtt),
         "%.1f s" % t_mqtt, "<= %.0fx replay: %s" % (MQTT_FACTOR, "ok" if ok_mqtt
                                                      else "MISSED")),
        ("record proof (leaf + audit path)", "%d B" % lk["proof_bytes"],
         "path %d" % lk["path_len"], ""),
        ("headers since genesis", "%d B" % lk["headers_bytes"], "%d" % lk["headers"], ""),
        ("headers since a checkpoint", "%d B" % lk["recent_bytes"], "%d" % CHECKPOINT_BACK,
         ""),
        ("check all headers + record, CPython", "%.1f ms" % lk["cpython_all_ms"], "", ""),
        ("check %d headers + record, CPython" % CHECKPOINT_BACK,
         "%.2f ms" % lk["cpython_recent_ms"], "", ""),
        ("check %d headers + record, MicroPython 64k" % CHECKPOINT_BACK,
         "%.1f ms" % lk["mp_recent_ms"], "record %.2f ms" % lk["mp_record_ms"],
         "<= block time %.0f ms: %s" % (BLOCK_S * 1000, "ok" if ok_mp else "MISSED")),
        ("MicroPython heap free after the check", "%d B" % lk["mp_heap_free"], "", ""),
    ]
    print("%-44s %-28s %-16s %s" % ("measure", "value", "", "target"))
    for r in rows:
        print("%-44s %-28s %-16s %s" % r)
    return 0 if ok_mqtt and ok_mp else 1


if __name__ == "__main__":
    raise SystemExit(main())
