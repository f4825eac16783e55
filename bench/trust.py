"""The cost of faking an id (`python -m bench.trust`, docs/TRUST.md).

A freshly faked id (a new key pair that registers itself) floods the
gateway's real ingress (Gateway.handle: schema, rate limit, signature,
mempool) with signed readings at FLOOD messages per second of a simulated
clock, for WINDOW seconds (a refused message is sent again, as a board
does, so its later seqs are not held behind it), with a block cut every simulated second; the
table counts the txs committed for it, on a domain without trust levels
(before) and with them (after: the id is on probation), in the same run.
Second table: what keeping trust costs the block builder: one block of
2,000 readings from 200 devices executed (build_block, no store) on a domain
without and with trust levels, best of 7, interleaved in the same run.

Per hour: the sustained rate measured over the window's second half times
3,600 plus what the first second got, since the limit is a token bucket (a probation id stays on
probation for its first day). Target: after <= before / 10.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from gateway.node.config import GatewayConfig
from gateway.node.service import Gateway
from shared import p256
from shared import tx as txm

FLOOD = 200  # messages per simulated second
WINDOW = 60  # simulated seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def flood(data: Path, trust: bool, window: int, rate: int
                ) -> tuple[int, int, float, float]:
    """(committed txs of the faked id, of which in the first second, the
    sustained rate over the second half of the window, wall seconds)."""
    cfg = GatewayConfig(domain="bench", data_dir=data, trust=trust)
    gw = Gateway(cfg, freeze_gc=False)
    clock = Clock()
    gw.limit.clock = clock
    gw.trust.probation.clock = clock
    gw._publish = lambda topic, payload, retain=False: None  # type: ignore[method-assign]
    priv, pub = p256.keygen()
    me = txm.device_id(pub)
    seq = 1
    t0 = time.perf_counter()
    try:
        gw.handle(txm.make(priv, me, txm.TYPE_REGISTER, "bench", seq, 0, {1: pub}))
        await gw._cut_block()
        first = half = 0
        msg = None
        for s in range(window):
            for i in range(rate):
                clock.now += 1.0 / rate
                if msg is None:  # the best a flooder can do: resend what was refused
                    seq += 1
                    msg = txm.make(priv, me, txm.TYPE_READING, "bench", seq, 0, {1: i, 2: 0})
                if gw.handle(msg) is not None:
                    msg = None
            await gw._cut_block()
            if s == 0:
                first = gw.reader.tx_count() - 1
            if s == window // 2 - 1:
                half = gw.reader.tx_count() - 1
        rec = gw.led.state.get(me)
        committed = gw.reader.tx_count() - 1  # minus its register
        assert rec is not None
        sustained = (committed - half) / (window - window // 2)
        return committed, first, sustained, time.perf_counter() - t0
    finally:
        gw._writer.shutdown()
        gw.market.close()
        gw.reader.close()
        gw.led.store.close()


def block_cost(tmp: Path, devices: int = 200, per_device: int = 10, runs: int = 7
               ) -> dict[bool, float]:
    """Best build_block time (s) of one block of devices x per_device readings."""
    from gateway.db.genesis_files import create_domain
    from gateway.db.store import open_ledger
    from gateway.ledger import blocks
    from gateway.ledger.validate import check_stateless

    keys = [p256.keygen() for _ in range(devices)]
    ids = [txm.device_id(pub) for _, pub in keys]
    regs = [txm.make(priv, i, txm.TYPE_REGISTER, "bench", 1, 0, {1: pub})
            for (priv, pub), i in zip(keys, ids, strict=True)]
    readings = [check_stateless(txm.make(priv, i, txm.TYPE_READING, "bench", 2 + k, 0,
                                         {1: k, 2: 0}), "bench")
                for (priv, _), i in zip(keys, ids, strict=True) for k in range(per_device)]
    leds = {}
    for trust in (False, True):
        data = tmp / ("blocks-trust" if trust else "blocks")
        create_domain(data, "bench", trust=trust)
        led = open_ledger(GatewayConfig(domain="bench", data_dir=data), create=False)
        b = blocks.build_block(led.head, [check_stateless(m, "bench") for m in regs], led.state,
                               led.head.time + 1, led.authority_priv, led.genesis.authority_id,
                               domain="bench", rules=led.rules)
        led.store.commit_block(b)
        led.state.apply_diff(b.diff, b.kv_diff)
        led.head = b
        leds[trust] = led
    best = {False: float("inf"), True: float("inf")}
    for _ in range(runs):
        for trust, led in leds.items():
            t0 = time.perf_counter()
            blocks.build_block(led.head, readings, led.state, led.head.time + 1,
                               led.authority_priv, led.genesis.authority_id, domain="bench",
                               rules=led.rules)
            best[trust] = min(best[trust], time.perf_counter() - t0)
    for led in leds.values():
        led.store.close()
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--window", type=int, default=WINDOW, help="simulated seconds")
    ap.add_argument("--rate", type=int, default=FLOOD, help="messages per simulated second")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, trust in (("before (no trust levels)", False), ("after (probation)", True)):
            n, first, sustained, wall = asyncio.run(flood(Path(tmp) / label[:5], trust,
                                                          args.window, args.rate))
            rows.append((label, n, first, sustained, int(sustained * 3600 + first), wall))
    print(f"a faked id floods {args.rate} signed readings/s for {args.window} s "
          "(simulated clock, the gateway's real ingress)")
    print(f"{'domain':26} {'committed':>10} {'1st second':>11} {'per s after':>12} "
          f"{'per hour':>10} {'wall s':>7}")  # per s after: the second half
    for label, n, first, sustained, hour, wall in rows:
        print(f"{label:26} {n:>10} {first:>11} {sustained:>12.1f} {hour:>10} {wall:>7.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        best = block_cost(Path(tmp))
    print()
    print("one block of 2,000 readings (200 devices), build_block, best of 7")
    print(f"{'domain':26} {'ms':>8} {'us per tx':>10}")
    for label, trust in (("without trust levels", False), ("with trust levels", True)):
        print(f"{label:26} {best[trust] * 1000:>8.1f} {best[trust] / 2000 * 1e6:>10.1f}")
    before, after = rows[0][4], rows[1][4]
    ok = after * 10 <= before
    print(f"per hour after / before: {after / max(1, before):.3f}  target <= 0.100  "
          f"{'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
