"""A stand-in for the gateway wiring that comes later, for the tests of
gateway/cluster/: its mempool is fed by the intake (TxIntake), its blocks are
lists of transactions appended to the proposal log, and its "chain" is what it
applies from the log in order (each sender's last seq, the transactions in
order). A block holding a transaction the chain already has is refused, as
the consensus core refuses an invalid proposal: every gateway skips it alike."""

from __future__ import annotations

from gateway.cluster.intake import Delivery, TxIntake, split_committed
from gateway.cluster.log import Entry, ProposalLog
from gateway.errors import ClusterError
from shared import cbor, txdecode
from shared.errors import TLError

DOMAIN = "intake-test"


class MiniGateway:
    def __init__(self, nc, name: str, ack_wait: float) -> None:
        js = nc.jetstream()
        self.name = name
        self.intake = TxIntake(js, DOMAIN, name, ack_wait=ack_wait)
        self.plog = ProposalLog(js, DOMAIN)
        self.last: dict[bytes, int] = {}
        self.committed: list[bytes] = []
        self.mempool: list[Delivery] = []
        self.proposed = 0
        self.lost_races = 0
        self.redelivered = 0
        self.dropped = 0
        self.follower = None

    async def start(self) -> None:
        await self.plog.ensure()
        await self.intake.ensure()
        self.follower = self.plog.follow(1, self.apply)

    async def stop(self) -> None:
        if self.follower is not None:
            await self.follower.stop()
        await self.intake.close()

    async def apply(self, entry: Entry) -> None:
        txs = cbor.loads(entry.data)
        keys = [(bytes(x.sender), int(x.seq)) for x in map(txdecode.decode, txs)]
        if any(seq <= self.last.get(s, 0) for s, seq in keys):
            raise TLError("a transaction already in the chain", "replay")
        for (s, seq), t in zip(keys, txs, strict=True):
            self.last[s] = seq
            self.committed.append(t)

    def last_seq(self, sender: bytes) -> int:
        return self.last.get(sender, 0)

    async def step(self, batch: int = 8) -> None:
        """Take what the intake has, settle what the chain holds, propose the rest."""
        got = await self.intake.fetch(batch, timeout=0.5)
        self.redelivered += sum(d.deliveries > 1 for d in got)
        fresh, already = split_committed(self.mempool + got, self.last_seq)
        self.dropped += len(already)  # from this batch or from the mempool
        await self.intake.settle(already)
        self.mempool = fresh
        if not fresh:
            return
        after = self.follower.applied
        block = cbor.dumps([d.data for d in sorted(fresh, key=lambda d: d.key)])
        try:
            a = await self.plog.append(block, after)
        except ClusterError as e:
            if e.reason != ClusterError.WRONG_LAST_SEQ:
                raise
            self.lost_races += 1
            return
        self.proposed += 1
        await self.follower.wait_applied(a.seq, 30)
