"""How a replicated gateway (gateway/cluster/replica.py) acknowledges the
intake's deliveries of transactions it has committed, without a cluster: a
Replica on an in-process ledger (tests.support.gwtest.Node) with an intake
whose acknowledgements the test answers.

- a delivery whose transaction is committed counts in `unsettled` until the
  server has confirmed its acknowledgement (it used to leave the count as
  soon as its acknowledgement was scheduled, so a caller that saw 0 could
  still find it pending at the server);
- acknowledgements the server did not confirm are tried again after the
  next final block, not left to JetStream's redelivery."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gateway.cluster.intake import Delivery
from gateway.cluster.replica import Replica
from gateway.db.genesis_files import write_key
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device, Node, key

PRIV, PUB = key("settle-validator")


class Intake:
    """Acknowledges what it is given once `confirm` is set; the first
    `fail` deliveries of a call are not confirmed (as after a time-out)."""

    def __init__(self) -> None:
        self.confirm = asyncio.Event()
        self.acked: list[Any] = []
        self.fail = 0

    async def settle(self, ds: list[Any]) -> list[Any]:
        await self.confirm.wait()
        if self.fail:
            self.fail -= 1
            return ds
        self.acked += ds
        return []


def replica(n: Node, tmp_path: Path) -> Replica:
    kf = tmp_path / "validator.key"
    write_key(kf, PRIV)
    gw = SimpleNamespace(led=n.ledger, reader=n.store, on_event=lambda line: None)
    rep = Replica(gw, SimpleNamespace(validator_key_file=kf, domain=DOMAIN, derived=()))
    rep.intake = Intake()  # type: ignore[assignment]
    return rep


def quorum_node(tmp_path: Path) -> Node:
    owner = Device("settle-owner")
    return Node(tmp_path / "gw", {owner.pub: 10}, owner=owner.pub, consensus="quorum",
                validators=[PUB], threshold=1)


def test_a_committed_delivery_counts_until_its_ack_is_confirmed(tmp_path: Path) -> None:
    asyncio.run(counts_until_confirmed(tmp_path))


async def counts_until_confirmed(tmp_path: Path) -> None:
    n = quorum_node(tmp_path)
    try:
        rep = replica(n, tmp_path)
        rep.waiting[b"tx-1"] = ["delivery-1", "delivery-2"]  # type: ignore[list-item]
        rep._settle_ids([b"tx-1"])
        assert rep.unsettled == 2  # scheduled, not confirmed
        await asyncio.sleep(0)  # the acknowledging task runs, and waits for the server
        assert rep.unsettled == 2
        rep.intake.confirm.set()  # type: ignore[union-attr]
        for _ in range(100):
            if rep.unsettled == 0:
                break
            await asyncio.sleep(0.01)
        assert rep.unsettled == 0 and rep.intake.acked == ["delivery-1", "delivery-2"]  # type: ignore[union-attr]
    finally:
        n.close()


def test_an_ack_not_confirmed_is_tried_again(tmp_path: Path) -> None:
    asyncio.run(tried_again(tmp_path))


async def tried_again(tmp_path: Path) -> None:
    n = quorum_node(tmp_path)
    try:
        rep = replica(n, tmp_path)
        intake = rep.intake
        intake.confirm.set()  # type: ignore[union-attr]
        intake.fail = 1  # type: ignore[union-attr]
        await rep._settle(["delivery-1"])  # type: ignore[list-item]
        assert rep.unsettled == 1 and rep.settle_later == ["delivery-1"]
        await rep._settle_later()  # what a final block does
        assert rep.unsettled == 0 and intake.acked == ["delivery-1"]  # type: ignore[union-attr]
    finally:
        n.close()


def test_a_committed_resend_is_answered_with_its_receipt_never_refused(tmp_path: Path) -> None:
    """A delivery of a transaction the chain holds, from a device this gateway
    serves, is answered only by the stored receipt (Gateway.resend_receipt:
    nothing while its block is not final here), never through the ingress,
    whose replay refusal would reach the device as a sealed rejection."""
    asyncio.run(committed_resend(tmp_path))


async def committed_resend(tmp_path: Path) -> None:
    owner = Device("settle-owner")
    alice = Device("settle-alice")
    n = Node(tmp_path / "gw", {owner.pub: 10, alice.pub: 0}, owner=owner.pub,
             consensus="quorum", validators=[PUB], threshold=1)
    try:
        m = alice.reading(1)
        n.submit(m)
        n.produce()
        resent: list[tuple[bytes, bytes]] = []

        def ingress(data: bytes, checked: object = None) -> None:
            raise AssertionError("a committed resend went to the ingress")

        rep = replica(n, tmp_path)
        rep.gw = SimpleNamespace(led=n.ledger, reader=n.store, pool=[], on_event=print,
                                 handle=ingress,
                                 resend_receipt=lambda tid, who: resent.append((tid, who)))
        rep.serves = lambda device: True  # type: ignore[method-assign]
        t = txm.decode(m)
        rep.intake.confirm.set()  # type: ignore[union-attr]
        await rep._take([Delivery(m, t.sender, t.seq, 1, None)])  # type: ignore[arg-type]
        assert resent == [(t.id, t.sender)]
        assert rep.unsettled == 1  # acknowledged once the head is final here
    finally:
        n.close()
