"""The relayer's chain queries per packet when the other side is a quorum
domain read over its brokers (tools/relay.py): each submission to it checks
its receipt against the set that finalises the domain's head, read with
ONE query (the schedule and the head it is read at, `prove_kv`), where it
took two (the head, then the schedule). Counted, not timed: A's gateway is
an in-process Answerer (gateway/node/queries.py) behind a RemoteStore, and
each round trip is one `ask`. The receipts the relayer gets back are
checked with the set it read, so a wrong set fails the relay."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.node.queries import Answerer
from gateway.xdomain import relayer
from shared import chainquery as cq
from shared import errors, messages, txdecode
from shared import tx as txm
from shared import xpacket as xp
from tests.support.gwtest import Device, key
from tests.support.xdtest import Domain, create_client
from tools import relay
from tools.remote_store import RemoteError, RemoteStore
from tools.submit import Reply

A, B = "dom-q", "dom-b"
VOTERS = ["v1", "v2", "v3"]


class CountedQueries:
    """A QueryClient answered in-process by a gateway's Answerer over a
    store: one `ask` is one round trip, counted by op."""

    def __init__(self, d: Domain) -> None:
        genesis = (d.cfg.data_dir / "genesis.toml").read_bytes()
        self.answerer = Answerer(d.store, genesis, rate=1e9, burst=10**9)
        self.ops: list[str] = []
        self._ids = itertools.count(1)

    def ask(self, op: str, arg: Any = None, limit: int | None = None,
            after: Any = None) -> tuple[Any, bool]:
        self.ops.append(op)
        rid = next(self._ids).to_bytes(4, "big")
        _, reason, detail, result, more = cq.parse_answer(
            self.answerer.answer("relayer", cq.request(op, rid, arg, limit, after)))
        if reason:
            raise RemoteError(reason, detail)
        return result, more

    def close(self) -> None:
        pass


def test_one_query_per_submission_checks_a_quorum_domains_receipt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pubs = sorted(key(n)[1] for n in VOTERS)
    a = Domain(tmp_path / "a", A, {Device("alice", A).pub: 1000}, voters=VOTERS,
               consensus="quorum", validators=pubs, threshold=2)
    b = Domain(tmp_path / "b", B, {Device("bob", B).pub: 0})
    doms = {A: a, B: b}
    try:
        a.produce()  # block 0 of a quorum chain has no certificate
        hb, cert = a.head_entry()
        assert b.run(b.authority.make(txdecode.TYPE_CLIENT_CREATE, {
            1: A, 2: 2, 3: pubs, 4: 3600, 5: hb, 6: cert}))[0] == 0
        assert create_client(a, b)[0] == 0
        dev = Device("relayer")
        for d in (a, b):
            assert d.run(txm.make(dev.priv, dev.id, txm.TYPE_REGISTER, d.domain, 1, 0,
                                  {1: dev.pub}))[0] == 0
        alice, bob = a.device("alice"), b.device("bob")
        assert a.run(alice.make(txdecode.TYPE_SEND, {1: B, 2: bob.id, 3: 40, 4: 0,
                                                     5: a.time + 3600}))[0] == 0

        q = CountedQueries(a)
        sa = relay.Side(A, None, "mqtt://127.0.0.1:1", a.authority_pub,
                        RemoteStore(q), quorum=True)  # type: ignore[arg-type]
        sb = relay.Side(B, None, "mqtt://127.0.0.1:2", b.authority_pub, b.store)
        checked: list[int] = []

        def submit(brokers: Any, domain: str, message: bytes, authority: bytes,
                   timeout: float = 15.0, login: Any = None, validators: Any = None) -> Reply:
            """The gateway in-process; its receipt checked as tools/submit checks one."""
            d = doms[domain]
            try:
                d.run(message)
            except errors.TLError as e:
                return Reply(False, e.reason, e.detail, None, None)
            m = messages.parse(d.store.get_receipt(txm.tx_id(message)) or b"")
            fields = messages.check_receipt(m, authority, validators)  # the set read
            if validators is not None:
                checked.append(fields["height"])
            return Reply(True, m[messages.M_REASON], "", fields["height"],
                         m[messages.M_STATUS])

        per_call: list[Counter[str]] = []
        real = relay.receipt_set

        def counted(side: relay.Side) -> tuple | None:
            n = len(q.ops)
            got = real(side)
            if side is sa:
                per_call.append(Counter(q.ops[n:]))
            return got

        monkeypatch.setattr(relay, "submit", submit)
        monkeypatch.setattr(relay, "receipt_set", counted)
        seq = relay.Seq()
        rel = relayer.Relayer(relayer.Chain(A, sa.store), relayer.Chain(B, sb.store),  # type: ignore[arg-type]
                              relayer.RelayKey(dev.priv, dev.id, seq),
                              relay.submitter({A: sa, B: sb}, 5.0))
        first = rel.run_once()  # recv in B
        second = rel.run_once()  # ack in A (after an update of A's client of B)
        assert [x.what for x in first.actions if x.ok] == ["update", "recv"]
        assert [x.what for x in second.actions if x.ok] == ["update", "ack"]
        assert b.balance(bob.id) == 40 and a.state.kv_get(xp.packet_key(B, 1)) is None
        # two submissions to the quorum domain, each receipt checked with the set
        # read in one query
        assert len(checked) == 2 and per_call == [Counter(prove_kv=1)] * 2
        print("\nchain queries to %s for one packet: %d (%s), of which %d for its "
              "receipts' validator set" % (A, len(q.ops), dict(Counter(q.ops)),
                                           sum(sum(c.values()) for c in per_call)))
    finally:
        a.close()
        b.close()
