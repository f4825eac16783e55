"""The proposal log's follower and reads when a JetStream API request is lost
(gateway/cluster/log.py, API_TIMEOUT): while the cluster elects a new stream
or meta leader after a node's SIGKILL, a request that reaches a node is
dropped, never answered. The follower must send it again after its own
API_TIMEOUT, not wait for the client library's request timeout (nats-py's
5 s), which stacked after the election stalled finality 11-12 s
(bench/README.md, "The stream leader's SIGKILL").

No server here: a stand-in for the JetStream context whose first request of
each kind is lost (awaited for ever, as an unanswered request would be were
it not for the client's timeout), then answered. The waits below are upper
bounds on waiting, not timings: without the follower's own bound on a
request it never follows again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import nats.errors

from gateway.cluster.log import Entry, ProposalLog, retry

ENTRIES = [b"entry 1", b"entry 2", b"entry 3"]


class _Sub:
    """An ephemeral pull consumer from a sequence; `dies_after`: deliveries
    before its node dies (then every fetch times out, as with a dead node)."""

    def __init__(self, start: int, dies_after: int | None) -> None:
        self.next = start
        self.dies_after = dies_after

    async def fetch(self, batch: int, timeout: float) -> list:
        if self.dies_after is not None and self.dies_after <= 0 or self.next > len(ENTRIES):
            await asyncio.sleep(min(timeout, 0.05))  # nothing comes (the fetch's wait, shortened)
            raise nats.errors.TimeoutError
        seq = self.next
        self.next += 1
        if self.dies_after is not None:
            self.dies_after -= 1
        meta = SimpleNamespace(sequence=SimpleNamespace(stream=seq))
        return [SimpleNamespace(metadata=meta, data=ENTRIES[seq - 1], headers={})]

    async def unsubscribe(self) -> None:
        pass


class _ElectingJetStream:
    """The first stream info request and the first consumer creation after
    the first consumer died are never answered; the others are. The first
    consumer dies after one entry."""

    def __init__(self) -> None:
        self.lost = {"info": {1}, "subscribe": {2}}  # the calls (1st, 2nd, ...) lost
        self.calls = {"info": 0, "subscribe": 0}

    async def _call(self, kind: str) -> int:
        self.calls[kind] += 1
        n = self.calls[kind]
        if n in self.lost[kind]:
            await asyncio.Event().wait()  # dropped in the election: no answer
        return n

    async def stream_info(self, stream: str):
        await self._call("info")
        return SimpleNamespace(state=SimpleNamespace(last_seq=len(ENTRIES)))

    async def pull_subscribe(self, subject: str, durable, stream: str, config) -> _Sub:
        n = await self._call("subscribe")
        return _Sub(config.opt_start_seq, 1 if n == 1 else None)


def test_follower_sends_a_lost_request_again():
    """The first consumer dies after entry 1; the stream info asking whether
    entries are left, and the new consumer's creation, are each lost once:
    the follower asks again and hands over entries 2 and 3, once each, in
    order."""
    async def body():
        js = _ElectingJetStream()
        got: list[Entry] = []

        async def handler(e: Entry) -> None:
            got.append(e)

        f = ProposalLog(js, "lost-test").follow(1, handler)  # type: ignore[arg-type]
        try:
            await f.wait_applied(len(ENTRIES), 20.0)
        finally:
            await f.stop()
        assert [e.seq for e in got] == [1, 2, 3]
        assert [e.data for e in got] == ENTRIES
        assert js.calls["info"] >= 1 and js.calls["subscribe"] >= 3  # the lost ones again
        assert f.resubscribes >= 1

    asyncio.run(body())


def test_last_seq_sends_a_lost_request_again():
    """ProposalLog.last_seq (a proposer's "did the log move?") asks again
    when its stream info is lost, within its own timeout."""
    async def body():
        js = _ElectingJetStream()
        plog = ProposalLog(js, "lost-test")  # type: ignore[arg-type]
        assert await asyncio.wait_for(plog.last_seq(timeout=20.0), 20.0) == len(ENTRIES)
        assert js.calls["info"] == 2

    asyncio.run(body())


def test_retry_bounds_each_attempt():
    """retry(attempt=): an op that never answers is abandoned and tried again."""
    async def body():
        calls = 0

        async def op() -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                await asyncio.Event().wait()
            return "answered"

        assert await asyncio.wait_for(retry(op, 20.0, "read", attempt=0.2), 20.0) == "answered"
        assert calls == 2

    asyncio.run(body())
