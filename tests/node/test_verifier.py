"""Parallel validation (gateway/node/verifier.py): the workers' verdicts equal
the inline path's, a key rotated since the hand-off is checked again, small
batches stay inline, and a worker killed with a batch in flight loses
nothing (its payloads come back for the inline check; new workers follow)."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ledger.validate import check_stateless
from gateway.node import verifier
from gateway.node.mempool import Mempool
from shared import errors
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device, Node
from tests.support.mutations import mutate
from tests.support.workerhold import HeldBatch, hold_first_batch

A, B, NEW, X = Device("va"), Device("vb"), Device("vnew"), Device("vx")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A chain where A and B are registered (committed)."""
    n = Node(tmp_path_factory.mktemp("verifier"))
    n.submit_all([A.register(seq=1), B.register(seq=1)])
    n.produce()
    yield n
    n.close()


def samples() -> list[bytes]:
    """Valid and invalid messages of every kind the inline path refuses."""
    forged = bytearray(A.reading(7, seq=5))
    forged[-1] ^= 1
    return [A.reading(1, seq=2), B.transfer(A, 1, seq=2), NEW.register(seq=1),
            NEW.reading(3, seq=2),  # its sender registered by a pending tx
            X.reading(4, seq=1),  # unknown sender
            A.reading(5, seq=1),  # replay of the committed register's seq
            bytes(forged), A.reading(6, seq=3, domain="other"),
            b"not cbor", A.reading(8, seq=4)[:-5], B.make(99, {}, seq=3),
            bytes(5000)]


def outcome(node: Node, pool: Mempool, message: bytes, checked: verifier.Checked | None):
    """What the gateway's handle() makes of a message: admitted, or the refusal."""
    try:
        t = check_stateless(message, DOMAIN) if checked is None else checked.stateless()
        return pool.admit(t, node.state, node.ledger.rules,
                          None if checked is None else checked.signature)
    except errors.TLError as e:
        return type(e), e.reason, e.detail, str(e)


def worker_verdicts(messages: list[bytes], key_of) -> list[verifier.Checked]:
    """check_batch's results as the pool delivers them (pickled both ways)."""
    jobs = [(m, None if verifier.kid_of(m) is None else key_of(verifier.kid_of(m)))
            for m in messages]
    _, results = pickle.loads(pickle.dumps(verifier.check_batch(DOMAIN, jobs)))
    return verifier.verdicts(results)


def compare(node: Node, messages: list[bytes]) -> list:
    """Each message through the inline path and through a worker's verdict,
    each with its own mempool over the same state: the outcomes must be equal."""
    inline, parallel = Mempool(), Mempool()

    def key_of(kid: bytes) -> bytes | None:
        rec = parallel.view(node.state).get(kid)
        return None if rec is None else rec.pubkey

    got = []
    for m in messages:  # one at a time: a pending register counts for the next
        want = outcome(node, inline, m, None)
        have = outcome(node, parallel, m, worker_verdicts([m], key_of)[0])
        assert have == want, (m.hex(), have, want)
        got.append(want)
    return got


def test_worker_verdicts_equal_the_inline_path(node):
    got = compare(node, samples())
    reasons = [g if g is True else g[1] for g in got]
    assert reasons == [True, True, True, True, "unknown-device", "replay", "bad-signature",
                       "wrong-domain", "bad-cbor", "bad-cbor", "bad-tx", "too-large"]


def test_every_types_schema_refusals_alike(node):
    """Each tx type code (and unknown ones) with an empty and with a junk
    body: the plugins' schemas (identity, market, contracts, trust,
    firmware) refuse alike in a worker and inline."""
    msgs = [B.make(code, body, seq=100 + code) for code in range(0, 31)
            for body in ({}, {1: b"x", 9: -1})]
    got = compare(node, msgs)
    assert all(g is not True for g in got)
    assert {g[1] for g in got} == {"bad-tx"}
    assert len({g[2] for g in got}) > 3  # several details: the schemas ran


@st.composite
def mutated(draw) -> list[bytes]:
    base = draw(st.sampled_from(samples()[:4]))
    return [mutate(draw, base) for _ in range(draw(st.integers(1, 3)))]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(mutated())
def test_fuzzed_messages_refused_alike(node, messages):
    compare(node, messages)


def test_key_rotated_since_the_hand_off_is_checked_again(node):
    """A tx verified in a worker under the key handed over (X's: the key A
    held then) while the state now holds A's key: admission verifies again."""
    signed_by_old_key = txm.make(X.priv, A.id, txm.TYPE_READING, DOMAIN, 9, 0, {1: 1, 2: 0})
    (c,) = worker_verdicts([signed_by_old_key], lambda kid: X.pub)
    assert c.error is None and c.key == X.pub  # it did verify under the old key
    with pytest.raises(errors.SignatureError):
        Mempool().admit(c.stateless(), node.state, node.ledger.rules, c.signature)
    # under the key the state holds now, the worker's verdict is taken as is
    # (here: a "verified" claim the admission does not check again)
    assert Mempool().admit(c.stateless(), node.state, node.ledger.rules, (A.pub, None))


def test_pool_small_batches_inline_big_ones_in_workers(node):
    msgs = samples()

    def key_of(kid: bytes) -> bytes | None:
        rec = node.state.get(kid)
        return None if rec is None else rec.pubkey

    async def main():
        v = verifier.Verifier(2, DOMAIN, min_batch=len(msgs))
        await v.start()
        try:
            small = await v.check(msgs[:-1], key_of)
            big = await v.check(msgs, key_of)
        finally:
            v.close()
        return v, small, big

    v, small, big = asyncio.run(main())
    assert small == [None] * (len(msgs) - 1)
    assert v.batches == 2 and v.pids and os.getpid() not in v.pids  # two chunks, other processes
    want = worker_verdicts(msgs, key_of)
    assert [(c.tx and c.tx.id, c.error and (type(c.error), c.error.reason, c.error.detail), c.key)
            for c in big] == [(c.tx and c.tx.id, c.error and (type(c.error), c.error.reason,
                                                            c.error.detail), c.key)
                              for c in want]


def test_killed_worker_batch_comes_back_for_the_inline_check(node, tmp_path, monkeypatch):
    held = HeldBatch(tmp_path, monkeypatch)
    msgs = [A.reading(i, seq=10 + i) for i in range(8)]
    key_of = {A.id: A.pub}.get
    events: list[str] = []

    async def main():
        v = verifier.Verifier(1, DOMAIN, min_batch=1, task=hold_first_batch,
                              on_event=events.append)
        await v.start()
        try:
            first = asyncio.create_task(v.check(msgs, key_of))
            pid = await asyncio.to_thread(held.pid)
            assert pid in v.pids
            os.kill(pid, signal.SIGKILL)
            lost = await first
            after = await v.check(msgs, key_of)  # a new worker
        finally:
            v.close()
            held.close()
        return v, pid, lost, after

    v, pid, lost, after = asyncio.run(main())
    assert lost == [None] * len(msgs) and v.redone == len(msgs)
    assert [c.tx.id for c in after] == [txm.tx_id(m) for m in msgs]
    assert all(c.error is None and c.key == A.pub for c in after)
    assert v.pids and pid not in v.pids
    assert any("worker process died" in e for e in events)


def test_default_workers():
    """All but two cores (the gateway's, the broker's), at most 4."""
    assert [verifier.default_workers(n) for n in (1, 2, 3, 4, 8, 64)] == [0, 0, 1, 2, 4, 4]
