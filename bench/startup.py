"""Gateway start-up with its state check: `python -m bench.startup`.

At start-up `open_ledger` loads the stored state (devices, rights, kv) and
compares its root with the head block's state_root (store.check_state), so
a state changed outside the node is refused. With the state tree the
check compares the stored tree's root and each principal's leaf hash with
the stored tree's leaf (one leaf hash per principal, no inner node
recomputed); a block's root then touches only the paths it changes, with or
without the check before it (on a chain still under the sorted-leaves root,
the check's leaf hashes are kept for the first block instead). The table shows, for a
domain of N principals (genesis accounts, a real database on disk):
open_ledger in all, the part of it that is the state check, and the first
block (one reading) built after an open with the check and after a plain
load without it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gateway.db import genesis_files as genesis
from gateway.db import store
from gateway.ledger import blocks
from gateway.ledger.validate import check_stateless
from gateway.node import config
from shared import p256
from shared import tx as txm

DOMAIN = "bench"


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def measure(n: int, root: Path) -> dict[str, float]:
    keys = [p256.keygen() for _ in range(n)]
    data = root / f"d{n}"
    genesis.create_domain(data, DOMAIN, {pub: 100 for _, pub in keys}, time=1_700_000_000)
    cfg = config.GatewayConfig(domain=DOMAIN, data_dir=data)
    store.open_ledger(cfg).store.close()  # block 0 on disk (not timed)
    priv, pub = keys[0]
    t = check_stateless(txm.make(priv, txm.device_id(pub), txm.TYPE_READING, DOMAIN, 1, 0,
                                 {1: 2150, 2: -2}), DOMAIN)
    out: dict[str, float] = {}

    t0 = time.perf_counter()
    led = store.open_ledger(cfg, create=False)
    out["open"] = ms(t0)
    t0 = time.perf_counter()
    st = led.store.load_state()
    out["load"] = ms(t0)
    t0 = time.perf_counter()
    store.check_state(st, led.head)
    out["check"] = ms(t0)

    def first_block(state) -> float:
        t0 = time.perf_counter()
        blocks.build_block(led.head, [t], state, 1_700_000_001, led.authority_priv,
                           led.genesis.authority_id, domain=DOMAIN, rules=led.rules)
        return ms(t0)

    out["block_checked"] = first_block(led.state)  # leaf hashes cached by the check
    out["block_plain"] = first_block(led.store.load_state())  # no check before it
    led.store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, nargs="*", default=[200, 20_000], help="principals")
    a = ap.parse_args(argv)
    print("| principals | open_ledger ms | of it: state check ms | state load ms "
          "| first block ms (after check) | first block ms (no check) |")
    print("|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.n:
            r = measure(n, Path(tmp))
            print("| %d | %.1f | %.1f | %.1f | %.1f | %.1f |" % (
                n, r["open"], r["check"], r["load"], r["block_checked"], r["block_plain"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
