"""The replica's hot path, without NATS (the proposal is handed to the
replica's check directly, as its log follower does):
- re-executing another gateway's proposal, it verifies each transaction's
  signature once: a transaction its own mempool admitted (and so verified)
  at intake is not verified again when the proposal holds the very same
  bytes, under the key it must be signed by there; any other bytes (a
  forged copy of a pending transaction) are verified and refused;
- the validators take turns to propose, so the others do not build blocks
  that lose the log's compare-and-set race; out of turn, a validator first
  asks the log whether it moved;
- the intake's decoded tx is admitted without decoding the message again."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from gateway.cluster.intake import Delivery
from gateway.cluster.log import Entry
from gateway.cluster.replica import Proposal
from gateway.errors import ClusterError
from gateway.ledger import blocks
from gateway.ledger.validate import signing_key
from gateway.node.service import Gateway
from shared import commit_gateway, cose, errors, txdecode
from shared import tx as txm
from tests.cluster.quorum import DOMAIN, VALIDATORS, config, make_dirs
from tests.support.gwtest import Device

# config() reads node addresses only: no server is started or reached here
NO_CLUSTER = SimpleNamespace(nodes=[SimpleNamespace(mqtt_port=1)], urls=["nats://127.0.0.1:1"])


@pytest.fixture
def verifications(monkeypatch) -> list[bytes]:
    """The message of every transaction signature verified, in order."""
    seen: list[bytes] = []
    real = txdecode.Tx.verify

    def counting(self: txdecode.Tx, public_key: bytes) -> None:
        seen.append(self.message)
        real(self, public_key)
    monkeypatch.setattr(txdecode.Tx, "verify", counting)
    return seen


def follower(tmp_path, devices: list[Device]) -> Gateway:
    """gw1 of a 3-validator domain, not connected: its ledger, mempool and replica."""
    dirs = make_dirs(tmp_path, devices)
    return Gateway(config(dirs[1], 1, NO_CLUSTER), log_txs=False, freeze_gc=False)


def proposal_of(gw: Gateway, messages: list[bytes]) -> Entry:
    """Validator 0's proposal of block 1 holding `messages` (built on gw's head)."""
    led = gw.led
    b = blocks.build_block(led.head, [txm.decode(m) for m in messages], led.state,
                           1_800_000_000, led.authority_priv, led.genesis.authority_id,
                           domain=DOMAIN, rules=led.rules)
    assert [t.message for t in b.txs] == messages
    priv0, pub0 = VALIDATORS[0]
    p = Proposal(b.signed_header, messages, pub0, commit_gateway.vote(priv0, pub0, b.hash), None)
    return Entry(1, p.encode(), None)


def test_a_tx_verified_at_intake_is_not_verified_again_in_the_proposal(tmp_path,
                                                                       verifications):
    alice, bob = Device("reuse-a", DOMAIN), Device("reuse-b", DOMAIN)
    gw = follower(tmp_path, [alice, bob])
    try:
        a1, b1 = alice.reading(1), bob.reading(2)
        assert gw.handle(a1) is not None  # admitted: verified once, at intake
        assert verifications == [a1]
        entry = proposal_of(gw, [a1, b1])  # b1 never reached this gateway's intake
        verifications.clear()
        block, mine = gw.replica._check(entry)
        assert not mine and [t.message for t in block.txs] == [a1, b1]
        assert verifications == [b1]  # a1's bytes were checked at intake
    finally:
        asyncio.run(gw.stop())


def test_other_bytes_than_the_mempools_are_verified_and_a_bad_signature_refused(
        tmp_path, verifications):
    alice = Device("reuse-c", DOMAIN)
    gw = follower(tmp_path, [alice])
    try:
        a1 = alice.reading(1)
        assert gw.handle(a1) is not None
        forged = bytearray(a1)
        forged[-1] ^= 1  # the same transaction, another signature
        entry = proposal_of(gw, [bytes(forged)])
        verifications.clear()
        with pytest.raises(errors.TLError) as e:
            gw.replica._check(entry)
        assert "tx-signature" in e.value.detail
        assert verifications == [bytes(forged)]
    finally:
        asyncio.run(gw.stop())


def test_execute_verifies_again_under_another_key_than_the_one_checked(tmp_path,
                                                                       verifications):
    """blocks.execute skips a signature only when the key it was verified
    under is the key the tx must be signed by at its point of the block."""
    alice, bob = Device("reuse-d", DOMAIN), Device("reuse-e", DOMAIN)
    gw = follower(tmp_path, [alice, bob])
    try:
        led = gw.led
        forged = bytearray(alice.reading(1))
        forged[-1] ^= 1
        t = txm.decode(bytes(forged))
        key = signing_key(t, led.state)
        # said to be checked under another key (e.g. before a rotation): verified here
        with pytest.raises(errors.SignatureError):
            blocks.execute([t], led.state, led.rules, verify=True, verified={t.id: bob.pub})
        assert verifications == [bytes(forged)]
        good = txm.decode(bob.reading(1))
        verifications.clear()
        blocks.execute([good], led.state, led.rules, verify=True,
                       verified={good.id: signing_key(good, led.state)})
        assert verifications == []  # the same key: not verified again
        assert key == alice.pub
    finally:
        asyncio.run(gw.stop())


def test_proposer_turns_rotate_over_the_live_members(tmp_path):
    """The validators take turns to propose, one height each: the others
    wait one block interval per validator before them after their head
    became final (fewer lost races); a member known offline (its last will)
    has no turn."""
    gw = follower(tmp_path, [])
    try:
        rep = gw.replica
        ids = sorted(txm.device_id(p) for _, p in VALIDATORS)
        for h in range(1, 7):
            assert rep.proposers_at(h) == [ids[(h + j) % 3] for j in range(3)]
        interval = gw.cfg.block_interval_s
        rep.final_at = time.monotonic()
        rank = {rep.proposers_at(h).index(rep.validator_id): h for h in range(1, 4)}
        assert rep.turn_wait(rank[0]) == 0.0
        assert 0 < rep.turn_wait(rank[1]) <= interval < rep.turn_wait(rank[2]) <= 2 * interval
        rep.final_at = time.monotonic() - 2 * interval
        assert rep.turn_wait(rank[2]) <= 0  # the turns before it passed unused
        away = rep.proposers_at(rank[1])[0]
        rep.liveness.status(away, False)  # its last will
        live = [i for i in ids if i != away]
        assert all(rep.proposers_at(h)[0] == live[h % 2] for h in range(1, 7))
    finally:
        asyncio.run(gw.stop())


def test_out_of_turn_a_validator_first_asks_whether_the_log_moved(tmp_path):
    """Before building a block out of turn, a validator asks the log for its
    last sequence: an entry it has not followed yet (the proposal of the one
    whose turn it was) means no block to build; when the log cannot answer,
    the compare-and-set of the append decides."""
    gw = follower(tmp_path, [])

    class Log:
        def __init__(self, last: int | None) -> None:
            self.last = last

        async def last_seq(self, timeout: float) -> int:
            if self.last is None:
                raise ClusterError(ClusterError.UNAVAILABLE, "no answer")
            return self.last
    try:
        rep = gw.replica
        rep.follower = SimpleNamespace(applied=4)
        for last, moved in ((5, True), (4, False), (None, False)):
            rep.plog = Log(last)
            assert asyncio.run(rep._log_moved()) is moved
        rep.plog = rep.follower = None
    finally:
        asyncio.run(gw.stop())


def test_the_intake_decodes_each_transaction_once(tmp_path, monkeypatch):
    """A delivery from the intake carries the tx it decoded for its (sender,
    seq); the replica admits that tx (domain and body checked, signature
    verified by the mempool) without decoding the message again. A tx of
    another domain is still refused."""
    alice = Device("reuse-f", DOMAIN)
    gw = follower(tmp_path, [alice])
    settled: list[Delivery] = []

    class Intake:
        async def settle(self, ds: list[Delivery]) -> None:
            settled.extend(ds)
    parsed: list[bytes] = []
    real = cose.parse1

    def counting(message):
        parsed.append(bytes(message))
        return real(message)
    try:
        rep = gw.replica
        rep.intake = Intake()
        a1 = alice.reading(1)
        other = alice.make(txm.TYPE_READING, {1: 1, 2: 0}, domain="elsewhere")
        ds = [Delivery(m, alice.id, t.seq, 1, None, t)
              for m, t in ((a1, txdecode.decode(a1)), (other, txdecode.decode(other)))]
        monkeypatch.setattr(cose, "parse1", counting)
        asyncio.run(rep._take(ds))
        assert a1 not in parsed  # admitted without decoding it again
        assert txm.tx_id(a1) in gw.pool and txm.tx_id(other) not in gw.pool
        assert settled == [ds[1]]  # refused (wrong-domain): settled at once
    finally:
        gw.replica.intake = None
        asyncio.run(gw.stop())
