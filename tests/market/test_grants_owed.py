"""The grants the market operator owes, derived from the chain
(gateway/market/node/grants.py), and made exactly once whoever makes them:

- the owed set along blocks (REGISTER ok: owed; the operator's TRANSFER ok to
  it: paid; failures and other senders change nothing), kept with its cursor
  in the book's file, caught up from the chain store above the cursor only;
- a lone gateway that dies after a REGISTER's block and before its grant is
  committed (the grant in the lost mempool, or the block not even folded)
  grants it once after the restart, and not again after another restart;
- a gateway that followed the REGISTER without issuing (a replicated
  domain's non-issuer) and then takes the operator over grants it once; a
  grant the former issuer left in the mempool, or in the intake not read
  yet, is kept as the grant and never signed a second time.

The gateway runs in-process without a broker (as test_operator_take_over.py):
transactions enter through `Gateway.handle`, blocks are cut by hand, the
market's clock is ticked by hand."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.db import genesis_files as genesis
from gateway.db import verify as replay
from gateway.db.chain_tables import TxRecord
from gateway.market.node.grants import GRANTS_FILE, GrantBook, fold
from gateway.market.node.service import VERDICT_RETRY_MAX_S
from gateway.node.config import GatewayConfig
from gateway.node.service import Gateway
from shared import messages
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device

GRANT, SUPPLY = 50, 1_000
OK, FAILED = messages.STATUS_OK, messages.STATUS_FAILED
OP = b"\x0f" * 16
A, B, C = b"\x0a" * 16, b"\x0b" * 16, b"\x0c" * 16


# -- the owed set ---------------------------------------------------------------------
def test_owed_grants_follow_the_chain() -> None:
    owed: dict[bytes, int] = {}
    assert fold(owed, 1, [(A, txm.TYPE_REGISTER, OK, []),
                          (B, txm.TYPE_REGISTER, FAILED, []),  # not registered
                          (OP, txm.TYPE_REGISTER, OK, [])], OP) == {A}
    assert owed == {A: 1}
    assert fold(owed, 2, [(B, txm.TYPE_REGISTER, OK, []),
                          (C, txm.TYPE_TRANSFER, OK, [["transfer", A, GRANT]]),  # not the operator's
                          (OP, txm.TYPE_TRANSFER, FAILED, []),  # failed: nothing moved
                          (OP, txm.TYPE_TRANSFER, OK, [["transfer", C, GRANT]])], OP) == {B}
    assert owed == {A: 1, B: 2}
    # registered and granted in one block; the operator's grant to A
    assert fold(owed, 3, [(C, txm.TYPE_REGISTER, OK, []),
                          (OP, txm.TYPE_TRANSFER, OK, [["transfer", C, GRANT]]),
                          (OP, txm.TYPE_TRANSFER, OK, [["transfer", A, GRANT]])], OP) == {A, C}
    assert owed == {B: 2}


class FakeChain:
    """The chain store's txs_of_type over a list of TxRecords."""

    def __init__(self) -> None:
        self.txs: list[TxRecord] = []
        self.rows_read = 0

    def add(self, height: int, sender: bytes, type_: int, status: int,
            events: list[Any]) -> None:
        idx = sum(1 for r in self.txs if r.height == height)
        self.txs.append(TxRecord(bytes(32), height, idx, sender, 1, type_, status, "", events,
                                 b""))

    def txs_of_type(self, type_: int, since_height: int = 0) -> Any:
        for r in self.txs:
            if r.type == type_ and r.height >= since_height:
                self.rows_read += 1
                yield r


def test_the_book_keeps_its_cursor_and_catches_up_above_it(tmp_path: Path) -> None:
    chain = FakeChain()
    for h in range(1, 201):  # 200 registrations, each granted in the next block
        chain.add(h, bytes([h % 256, h // 256]) * 8, txm.TYPE_REGISTER, OK, [])
        if h > 1:
            prev = bytes([(h - 1) % 256, (h - 1) // 256]) * 8
            chain.add(h, OP, txm.TYPE_TRANSFER, OK, [["transfer", prev, GRANT]])
    book = GrantBook(tmp_path / GRANTS_FILE, OP)
    assert book.height is None
    assert book.catch_up(chain, 150) == 150 + 149  # a new book folds the chain once
    assert book.owed == {bytes([150, 0]) * 8: 150} and book.height == 150
    book.close()
    book = GrantBook(tmp_path / GRANTS_FILE, OP)  # kept on disk
    assert book.owed == {bytes([150, 0]) * 8: 150} and book.height == 150
    chain.rows_read = 0
    assert book.catch_up(chain, 200) == 50 + 50  # only what lies above the cursor
    assert chain.rows_read <= 2 * 50
    assert book.owed == {bytes([200, 0]) * 8: 200}
    # a block folded twice (a catch-up after a live fold) changes nothing
    book.fold_block(200, [(A, txm.TYPE_REGISTER, OK, [])])
    assert A not in book.owed
    book.fold_block(201, [(A, txm.TYPE_REGISTER, OK, [])])
    book.close()
    book = GrantBook(tmp_path / GRANTS_FILE, OP)
    assert book.owed == {bytes([200, 0]) * 8: 200, A: 201} and book.height == 201
    book.close()


# -- a gateway in-process -------------------------------------------------------------
class Node:
    def __init__(self, data: Path) -> None:
        self.gw = Gateway(GatewayConfig(domain=DOMAIN, data_dir=data, market_grant=GRANT),
                          freeze_gc=False)
        self.lines: list[str] = []
        self.gw.market.log = self.lines.append
        self.market, self.op = self.gw.market, self.gw.market.op
        self.now = time.time()

    def start(self, issuing: bool = True) -> None:
        self.market.issuing = issuing
        self.market.start(self.gw.led.state, self.gw.reader, self.gw.led.head.height)

    def tick(self, rounds: int = 3) -> None:
        for _ in range(rounds):  # past every retry's backoff
            self.now += VERDICT_RETRY_MAX_S
            self.market.tick(self.gw.led.state, self.now)

    def authority_txs(self) -> list[txm.Tx]:
        return [t for t in self.gw.pool.queued() if t.sender == self.op.id]

    async def settle(self) -> None:
        while len(self.gw.pool):
            await self.gw._cut_block()

    def balance(self, dev: Device) -> int:
        return self.gw.led.state.get(dev.id).balance

    def grants_on_chain(self, dev: Device) -> int:
        return sum(1 for r in self.gw.reader.txs_of_type(txm.TYPE_TRANSFER)
                   if r.sender == self.op.id and r.status == OK
                   and ["transfer", dev.id, GRANT] in r.events)

    def close(self) -> None:
        """Also a death: the mempool goes with the process."""
        self.gw._writer.shutdown(wait=True)
        self.market.close()
        self.gw.reader.close()
        self.gw.led.store.close()


def new_domain(data: Path) -> None:
    genesis.create_domain(data, DOMAIN, authority_balance=SUPPLY)


def check_chain(data: Path) -> None:
    n = Node(data)
    try:
        with n.gw.reader as st:
            assert replay.verify_chain(st, genesis.load(n.gw.cfg.genesis_file)).ok
    finally:
        n.close()


def test_a_book_it_cannot_write_says_so_and_keeps_what_it_folded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    book = GrantBook(tmp_path / GRANTS_FILE, OP)
    book._db.execute("PRAGMA busy_timeout = 0")  # fail at once on the lock below
    other = sqlite3.connect(tmp_path / GRANTS_FILE)
    other.execute("BEGIN EXCLUSIVE")  # another writer holds the file
    with caplog.at_level(logging.WARNING, logger="thingledger.market"):
        book.fold_block(1, [(A, txm.TYPE_REGISTER, OK, [])])
    assert book.owed == {A: 1} and book.height == 1  # kept in memory
    assert [r.getMessage() for r in caplog.records if "not saved" in r.getMessage()], \
        caplog.text
    other.rollback()
    other.close()
    book.fold_block(2, [])  # the next write takes the owed device along
    book.close()
    again = GrantBook(tmp_path / GRANTS_FILE, OP)
    assert again.owed == {A: 1} and again.height == 2
    again.close()


def test_a_lone_gateway_dead_before_the_grant_landed_grants_once_after_restart(
        tmp_path: Path) -> None:
    dev = Device("newcomer")
    new_domain(tmp_path)

    async def before() -> None:
        n = Node(tmp_path)
        try:
            n.start()
            assert n.gw.handle(dev.register()) is not None
            await n.gw._cut_block()  # the REGISTER's block: its grant signed, pending
            assert [t.body for t in n.authority_txs()] == [{1: dev.id, 2: GRANT}]
            assert n.market.grants is not None and dev.id in n.market.grants.owed
        finally:
            n.close()  # dies: the grant in its mempool is lost

    async def after() -> None:
        n = Node(tmp_path)
        try:
            assert n.market.grants is not None and dev.id in n.market.grants.owed
            n.start()
            n.tick()
            assert [t.body for t in n.authority_txs()] == [{1: dev.id, 2: GRANT}]
            await n.settle()
            n.tick()
            await n.settle()
            assert n.balance(dev) == GRANT and n.grants_on_chain(dev) == 1
            assert dev.id not in n.market.grants.owed
        finally:
            n.close()

    async def again() -> None:
        n = Node(tmp_path)
        try:
            n.start()
            n.tick()
            assert n.authority_txs() == []  # the chain shows it: not made again
            assert n.balance(dev) == GRANT
        finally:
            n.close()

    asyncio.run(before())
    asyncio.run(after())
    asyncio.run(again())
    check_chain(tmp_path)


def test_a_block_stored_and_not_folded_before_a_death_is_folded_at_restart(
        tmp_path: Path) -> None:
    dev = Device("newcomer")
    new_domain(tmp_path)

    async def before() -> None:
        n = Node(tmp_path)
        try:
            n.start()
            assert n.gw.handle(dev.register()) is not None
            # the block is written, and the node dies before the block becomes its head
            b = n.gw._build_block(n.gw.pool.take(16))
            await n.gw._store_block(b)
            assert n.market.grants is not None and n.market.grants.owed == {}
        finally:
            n.close()

    async def after() -> None:
        n = Node(tmp_path)
        try:
            assert n.market.grants is not None and n.market.grants.owed == {}
            n.start()  # folds the chain above its cursor
            assert dev.id in n.market.grants.owed
            n.tick()
            await n.settle()
            n.tick()
            await n.settle()
            assert n.balance(dev) == GRANT and n.grants_on_chain(dev) == 1
        finally:
            n.close()

    asyncio.run(before())
    asyncio.run(after())
    check_chain(tmp_path)


@contextmanager
def follower(data: Path) -> Iterator[Node]:
    """A new domain's gateway started not issuing; closed, then its chain replayed."""
    new_domain(data)
    n = Node(data)
    try:
        n.start(issuing=False)
        yield n
    finally:
        n.close()
    check_chain(data)


def follow_a_register(n: Node, dev: Device) -> None:
    """A gateway that does not issue applies the REGISTER's block: owed, nothing signed."""
    async def go() -> None:
        assert n.gw.handle(dev.register()) is not None
        await n.settle()
    asyncio.run(go())
    n.tick()
    assert n.authority_txs() == []
    assert n.market.grants is not None and dev.id in n.market.grants.owed


def former_issuers_grant(n: Node, dev: Device) -> bytes:
    seq = n.gw.led.state.get(n.op.id).last_seq + 1
    n.op.seq = seq  # what the new issuer read of the operator subject
    return txm.make(n.op.priv, n.op.id, txm.TYPE_TRANSFER, DOMAIN, seq, 0,
                    {1: dev.id, 2: GRANT})


def granted_once(n: Node, dev: Device) -> None:
    """The grant pending lands: nothing more to send, the device paid once."""
    asyncio.run(n.settle())
    n.tick()
    assert n.authority_txs() == []
    assert n.balance(dev) == GRANT and n.grants_on_chain(dev) == 1


def test_the_gateway_taking_the_operator_over_grants_what_the_former_issuer_did_not(
        tmp_path: Path) -> None:
    dev = Device("newcomer")
    with follower(tmp_path) as n:
        follow_a_register(n, dev)  # the issuer saw it too and died before appending
        n.market.issuing = True
        n.market.take_over(n.gw.led.state, n.authority_txs(), n.now)
        n.tick()
        assert [t.body for t in n.authority_txs()] == [{1: dev.id, 2: GRANT}]
        granted_once(n, dev)


def test_a_grant_the_former_issuer_left_in_the_mempool_is_not_signed_again(
        tmp_path: Path) -> None:
    dev = Device("newcomer")
    with follower(tmp_path) as n:
        follow_a_register(n, dev)
        theirs = former_issuers_grant(n, dev)
        assert n.gw.handle(theirs) is not None  # came through the intake
        n.market.issuing = True
        n.market.take_over(n.gw.led.state, n.authority_txs(), n.now)
        n.tick()
        assert [t.message for t in n.authority_txs()] == [theirs]
        granted_once(n, dev)


def test_a_grant_in_the_intake_not_read_yet_is_not_signed_again(tmp_path: Path) -> None:
    """The former issuer appended its grant; this gateway's mempool has not
    read it yet when it takes over (the issuer hands it over from the
    operator subject, gateway/cluster/issuer.py `in_flight`)."""
    dev = Device("newcomer")
    with follower(tmp_path) as n:
        follow_a_register(n, dev)
        theirs = former_issuers_grant(n, dev)
        n.market.issuing = True
        n.market.take_over(n.gw.led.state, [txm.decode(theirs)], n.now)
        n.tick()
        # only that same tx is ever sent again (the intake keeps one copy: its msg id)
        assert [t.message for t in n.authority_txs()] in ([], [theirs])
        n.gw.handle(theirs)  # the intake delivers it
        n.tick()
        assert [t.message for t in n.authority_txs()] == [theirs]
        granted_once(n, dev)


def test_a_grant_that_cannot_land_any_more_is_made_afresh(tmp_path: Path) -> None:
    """The grant tx known in flight never lands: once the chain has passed
    its seq (another operator tx committed), a fresh grant is signed."""
    dev = Device("newcomer")
    with follower(tmp_path) as n:
        follow_a_register(n, dev)
        lost = former_issuers_grant(n, dev)
        n.market.issuing = True
        n.market.take_over(n.gw.led.state, [txm.decode(lost)], n.now)
        # another operator tx takes a higher seq and is committed first
        n.op.send(n.gw.led.state, txm.TYPE_TRANSFER, {1: n.op.id, 2: 1})
        asyncio.run(n.settle())  # (each block ticks the market: the fresh grant goes too)
        assert n.gw.led.state.get(n.op.id).last_seq > txm.decode(lost).seq
        n.tick()
        asyncio.run(n.settle())
        assert n.gw.handle(lost) is None  # a replay now
        n.tick()
        assert n.authority_txs() == []
        assert n.balance(dev) == GRANT and n.grants_on_chain(dev) == 1
        assert all(r.message != lost for r in n.gw.reader.txs_of_type(txm.TYPE_TRANSFER))


def test_a_grant_in_flight_before_the_register_is_applied_here_is_kept(
        tmp_path: Path) -> None:
    """This gateway takes over behind the former issuer: the grant it reads
    from the operator subject pays a device whose REGISTER it has not
    applied yet. Once it applies it, the device is owed, and that grant is
    still the one: no second is signed."""
    dev = Device("newcomer")
    with follower(tmp_path) as n:
        theirs = former_issuers_grant(n, dev)
        n.market.issuing = True
        n.market.take_over(n.gw.led.state, [txm.decode(theirs)], n.now)
        assert n.gw.handle(dev.register()) is not None
        asyncio.run(n.gw._cut_block())  # the REGISTER applied here (the market ticks)
        assert n.market.grants is not None and dev.id in n.market.grants.owed
        assert n.authority_txs() == []  # no grant of its own
        n.tick()  # only that same tx again
        assert [t.message for t in n.authority_txs()] == [theirs]
        granted_once(n, dev)
