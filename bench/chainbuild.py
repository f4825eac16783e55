"""A domain with N registered devices, made in-process for the benchmarks
(not timed by them): `make_chain(data_dir, n)` creates the domain and
commits blocks of pre-signed TYPE_REGISTER txs with the node's own code
(mempool admission with signature checks, blocks.build_block, Store
.commit_block), so the database is what a gateway that registered them over
MQTT would have written. Returns the devices' signers (seq 1 used)."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.db import genesis_files as genesis
from gateway.db import store
from gateway.ledger import blocks
from gateway.ledger.validate import check_stateless
from gateway.node import config, mempool

DOMAIN = "demo"
BLOCK = 5000  # registrations per block


def make_chain(data: Path, n: int, *, readings_per_device: int = 0, quiet: bool = False):
    from bench.gateway import Signer
    from shared import tx as txm

    t0 = time.perf_counter()
    genesis.create_domain(data, DOMAIN, time=1_700_000_000)
    cfg = config.GatewayConfig(domain=DOMAIN, data_dir=data)
    led = store.open_ledger(cfg)
    pool = mempool.Mempool()
    signers = [Signer() for _ in range(n)]
    msgs = [s.tx(txm.TYPE_REGISTER, {1: s.pub}) for s in signers]
    for k in range(readings_per_device):
        msgs += [s.tx(txm.TYPE_READING, {1: 2000 + k, 2: -2}) for s in signers]
    now = 1_700_000_001
    for i in range(0, len(msgs), BLOCK):
        for m in msgs[i:i + BLOCK]:
            pool.admit(check_stateless(m, DOMAIN), led.state, led.rules)
        txs = pool.take(BLOCK)
        b = blocks.build_block(led.head, txs, led.state, now, led.authority_priv,
                               led.genesis.authority_id, domain=DOMAIN, rules=led.rules)
        if b.dropped or len(b.txs) != len(txs):
            raise SystemExit("bench chain: %d txs dropped" % len(b.dropped))
        led.store.commit_block(b)
        led.state.apply_diff(b.diff, b.kv_diff)
        led.head = b  # type: ignore[assignment]
        pool.done(txs)
        now += 1
    led.store.close()
    if not quiet:
        print(f"  chain of {n:,} registered devices ({len(msgs):,} txs) made in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    return signers
