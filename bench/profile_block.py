"""Where a transaction's microseconds go in the node's ledger pipeline, under
cProfile: `python -m bench.profile_block [--devices N] [--code DIR]`.

A domain of N registered devices (registered by blocks of 5,000, not
profiled), then B blocks of T readings each from 200 of them, profiled:
ingress (check_stateless, mempool admission with the signature), block
build (apply, receipts, roots), commit (SQLite) and folding the diff into
the state: what the gateway's asyncio thread does per transaction apart
from MQTT. Prints the functions with the most own time, in microseconds per
transaction, and the total. `--code DIR` runs another checkout's gateway/
and shared/ (e.g. `git worktree add /tmp/base <commit>`): the same script
measures before and after a change. Only APIs both sides have are used.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

DOMAIN = "demo"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--txs", type=int, default=2000, help="readings per block")
    ap.add_argument("--code", metavar="DIR", help="checkout whose gateway/ and shared/ run")
    ap.add_argument("--top", type=int, default=18)
    a = ap.parse_args(argv)
    if a.code:
        sys.path.insert(0, str(Path(a.code).resolve()))
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from gateway.db import genesis_files as genesis
    from gateway.db import store
    from gateway.ledger import blocks
    from gateway.ledger.validate import check_stateless
    from gateway.node import config, mempool
    from shared import cbor, cose, es256_cryptography
    from shared import tx as txm

    alg = ec.ECDSA(hashes.SHA256())

    class Dev:
        def __init__(self) -> None:
            self.key = ec.generate_private_key(ec.SECP256R1())
            self.pub = self.key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
            self.id = txm.device_id(self.pub)
            self.seq = 0

        def tx(self, type_: int, body: dict) -> bytes:
            self.seq += 1
            payload = txm.payload(type_, DOMAIN, self.seq, 0, body)
            prot = cose.protected_header(self.id)
            sig = es256_cryptography.sign_with_key(self.key, cose.sig_structure(prot, payload),
                                                   alg)
            return cbor.dumps(cbor.Tag(cose.TAG_SIGN1, [prot, {}, payload, sig]))

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "gw"
        genesis.create_domain(data, DOMAIN, time=1_700_000_000)
        cfg = config.GatewayConfig(domain=DOMAIN, data_dir=data)
        led = store.open_ledger(cfg)
        pool = mempool.Mempool()
        now = [1_700_000_001]

        def block(msgs: list[bytes]) -> None:
            for m in msgs:
                pool.admit(check_stateless(m, DOMAIN), led.state, led.rules)
            txs = pool.take(len(msgs))
            b = blocks.build_block(led.head, txs, led.state, now[0], led.authority_priv,
                                   led.genesis.authority_id, domain=DOMAIN, rules=led.rules)
            assert len(b.txs) == len(msgs), b.dropped[:1]
            led.store.commit_block(b)
            led.state.apply_diff(b.diff, b.kv_diff)
            led.head = b
            pool.done(txs)
            now[0] += 1

        t0 = time.perf_counter()
        devs = [Dev() for _ in range(a.devices)]
        regs = [d.tx(txm.TYPE_REGISTER, {1: d.pub}) for d in devs]
        for i in range(0, len(regs), 5000):
            block(regs[i:i + 5000])
        print(f"{a.devices:,} devices registered in {time.perf_counter() - t0:.1f} s "
              f"(code: {a.code or 'this checkout'})", flush=True)
        senders = devs[:200]
        per = a.txs // len(senders)
        loads = [[d.tx(txm.TYPE_READING, {1: 2000 + k, 2: -2}) for k in range(per)
                  for d in senders] for _ in range(a.blocks)]
        prof = cProfile.Profile(time.process_time)  # CPU time: other load on the machine aside
        t0 = time.perf_counter()
        prof.enable()
        for msgs in loads:
            block(msgs)
        prof.disable()
        wall = time.perf_counter() - t0
        led.store.close()
    n = a.blocks * per * len(senders)
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    total = st.total_tt  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:a.top]  # type: ignore[attr-defined]
    print(f"{n:,} readings in {a.blocks} blocks; CPU {total / n * 1e6:.0f} us per tx under "
          f"the profiler (wall {wall / n * 1e6:.0f} us per tx)")
    stages = (("ingress: check_stateless (decode, schema)", "validate.py", "check_stateless"),
              ("mempool admission (signature, precheck)", "mempool.py", "admit"),
              ("  of it: ECDSA verify (cryptography)", "es256_cryptography.py", "verify"),
              ("block build (apply, receipts, roots)", "blocks.py", "build_block"),
              ("  of it: state root (StateOverlay.root)", "state.py", "root"),
              ("commit (SQLite, one transaction)", "store.py", "commit_block"),
              ("fold the diff into the state (apply_diff)", "state.py", "apply_diff"))
    print("| stage (cumulative) | us per tx |")
    print("|---|---:|")
    for label, file, fn in stages:
        ct = sum(v[3] for (f, _l, name), v in st.stats.items()  # type: ignore[attr-defined]
                 if name == fn and f.endswith("/" + file))
        print(f"| {label} | {ct / n * 1e6:.1f} |")
    print()
    print("| function (own time) | us per tx | calls per tx |")
    print("|---|---:|---:|")
    for (file, line, fn), (_cc, nc, tt, _ct, _callers) in rows:
        where = f"{Path(file).parent.name}/{Path(file).name}:{fn}" if line else fn
        print(f"| {where} | {tt / n * 1e6:.1f} | {nc / n:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
