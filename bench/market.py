"""Market execution benchmark: `python -m bench.market [-n N]`.

How fast the state transition runs the market's transactions, measured in
one run next to plain transfers (the baseline every block already carries):
offers, demands matched against a book of live offers under each policy,
contract calls (the agreement's commit and verdict, with fuel counted on
the syntax tree, as on a chain with a consensus section, and, on the same
state, by the line tracer older chains replay with), all through gateway.ledger.blocks.execute on an in-memory state (the
signature is checked at ingress, not here, so the txs carry a dummy one).
Targets, from the gateway's end-to-end target of 2,000 tx/s: plain and offer
txs at that rate; a supplier commits a batch of 4 readings with one call and
the operator judges it with one more, so streams carrying 2,000 readings/s
need 500 commits + 500 verdicts/s: contract calls >= 1,000/s; a demand buys
at least a batch, so demands >= 500/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.contracts import binding as chain
from gateway.ledger import blocks, consensus, keys
from gateway.ledger.state import BlockInfo, DeviceRecord, Rules, State, StateOverlay
from gateway.market.ledger import rules as ledger
from shared import cbor, cose
from shared import tx as txm

TARGET_TPS = 2000
CALL_TPS = 1000
DEMAND_TPS = 500
DOMAIN = "bench"
BOOK = 50  # live offers for the service


class Sender:
    """An account whose id is its key's (execution re-verifies otherwise)."""

    def __init__(self, name: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        self.pub = key.public_key().public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.CompressedPoint)
        self.id = txm.device_id(self.pub)
        self.seq = 0

    def tx(self, type_: int, body: dict[int, Any]) -> txm.Tx:
        self.seq += 1
        payload = txm.payload(type_, DOMAIN, self.seq, 0, body)
        msg = cbor.dumps(cbor.Tag(cose.TAG_SIGN1, [cose.protected_header(self.id), {},
                                                   payload, bytes(64)]))
        return txm.decode(msg)


def _commit(state: State, txs: list[txm.Tx], rules: Rules, height: int
            ) -> tuple[float, list[blocks.Receipt]]:
    t0 = time.perf_counter()
    included, receipts, view, dropped = blocks.execute(txs, state, rules,
                                                       BlockInfo(height, 1000 + height))
    dt = time.perf_counter() - t0
    if dropped:
        raise SystemExit("bench: %d txs dropped: %r" % (len(dropped), dropped[0][1]))
    state.apply_diff(view.changed, view.kv_changed)
    return dt, receipts


def run(n: int, meter: str = "syntax") -> list[tuple[str, float, int, str]]:
    """meter "syntax": the state has a validator set (a chain with a
    consensus section: fuel on the syntax tree); "lines": none (line events)."""
    op, buyers = Sender("operator"), [Sender("buyer%d" % i) for i in range(n)]
    sups = [Sender("sup%d" % i) for i in range(max(n, BOOK))]
    rules = Rules(authority_id=op.id)
    devs = {s.id: DeviceRecord(s.pub, 0, 10**9) for s in (op, *buyers, *sups)}
    kv = {}
    if meter == "syntax":
        kv[keys.VALSETS] = consensus.encode_schedule([(0, consensus.ValidatorSet(1, (op.pub,)))])
    state = State(devs, kv)
    deploy = op.tx(txm.TYPE_CONTRACT_ADMIN, {1: "deploy", 2: "agreement", 3: "agreement",
                                             4: 1, 5: {"operator": op.id, "fee_bps": 100}})
    _commit(state, [deploy], rules, 1)
    rows = []
    dt, _ = _commit(state, [b.tx(txm.TYPE_TRANSFER, {1: op.id, 2: 1}) for b in buyers],
                    rules, 2)
    rows.append(("transfer (baseline)", n / dt, TARGET_TPS, ""))
    offers = [s.tx(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: 1 + i % 9, 4: 1,
                                    5: "u4pr%02d" % (i % 32), 6: 3600, 7: 1})
              for i, s in enumerate(sups[:BOOK])]
    dt, _ = _commit(state, offers, rules, 3)
    rows.append(("offer", BOOK / dt, TARGET_TPS, ""))
    aids = []
    for h, policy in enumerate(("latest", "cheapest", "trusted", "nearest"), start=4):
        dem = [b.tx(txm.TYPE_DEMAND, {1: "temperature", 2: 10, 3: 4, 4: 60, 5: policy,
                                      6: "u4pr07"}) for b in buyers]
        dt, rec = _commit(state, dem, rules, h)
        aids += [next(e for e in r.events if e[0] == "match")[1:4] for r in rec]
        rows.append(("demand matched, %s, book of %d" % (policy, BOOK), n / dt, DEMAND_TPS,
                     ""))
    by_id = {s.id: s for s in sups}
    picked = aids[:n]
    commits = [by_id[sup].tx(txm.TYPE_CONTRACT_CALL, {
        1: ledger.AGREEMENT, 2: "commit", 3: [aid, 0, 0, 4, bytes(32)], 4: 0, 5: 50_000})
        for aid, _, sup in picked]
    seen: set[bytes] = set()
    commits = [c for c, (_, _, sup) in zip(commits, picked, strict=True)
               if not (sup in seen or seen.add(sup))]  # one per supplier per block
    dt, rec = _commit(state, commits, rules, 10)
    fuel = rec[0].events[0][4]
    rows.append(("contract call: agreement.commit", len(commits) / dt, CALL_TPS,
                 "fuel %d" % fuel))
    verdicts = [op.tx(txm.TYPE_CONTRACT_CALL, {1: ledger.AGREEMENT, 2: "verdict",
                                               3: [c.body[3][0], 0, True, 2150, 0], 4: 0,
                                               5: 50_000}) for c in commits]
    dt, rec = _commit(state, verdicts, rules, 11)
    rows.append(("contract call: agreement.verdict (pays, closes)", len(verdicts) / dt,
                 CALL_TPS, "fuel %d" % rec[0].events[0][4]))
    view = StateOverlay(state)
    t0 = time.perf_counter()
    for _ in range(n):
        chain.storage(view, ledger.AGREEMENT, b"r" + sups[0].id)
    rows.append(("host read of contract storage (matching's trust)",
                 n / (time.perf_counter() - t0), TARGET_TPS, ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=400, help="txs per measured block")
    a = ap.parse_args(argv)
    rows = run(a.n)
    # the same calls metered as older chains replay them: a comparison, no target
    rows += [(name + " (line meter, older chains)", tps, 0, note)
             for name, tps, _target, note in run(a.n, "lines") if "contract call" in name]
    print("| market tx kind (%d per block) | executed tx/s | target | note |" % a.n)
    print("|---|---|---|---|")
    failed = 0
    for name, tps, target, note in rows:
        ok = tps >= target
        failed += not ok
        print("| %s | %s | >= %s %s | %s |" % (name, f"{tps:,.0f}", f"{target:,}",
                                              "ok" if ok else "MISSED", note))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
