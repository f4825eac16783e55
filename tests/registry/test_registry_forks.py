"""Fork choice of a registry node in one process (gateway/registry/forks.py):
heaviest chain, reorganisation of the stored state, txs of the abandoned
branch back in the mempool, deterministic ties, invalid branches, bounds."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gateway.registry import open_registry
from gateway.registry import pow as pw
from gateway.registry.forks import BlockTree, decode_block, make_block
from shared import cbor, merkle
from shared import tx as txm
from tests.support.registry_net import Forge, init_genesis
from tests.support.registry_support import Mfr


@pytest.fixture
def genesis(tmp_path: Path) -> Path:
    return init_genesis(tmp_path / "origin", bits=4)


def node(tmp_path: Path, genesis: Path, name: str, **kw) -> BlockTree:
    d = tmp_path / name
    d.mkdir()
    (d / genesis.name).write_bytes(genesis.read_bytes())
    return BlockTree(open_registry(d), **kw)


@pytest.fixture
def acme() -> Mfr:
    return Mfr("acme")


def test_heavier_branch_wins_and_the_lighter_ones_txs_go_back_to_the_mempool(
        tmp_path, genesis, acme):
    a, b = Forge(tmp_path / "a", genesis), Forge(tmp_path / "b", genesis)
    x = node(tmp_path, genesis, "x")
    common = a.good([acme.register()])
    b.tree.receive([common])
    tx_a = acme.record("dev-a", "SA")
    a1 = a.good([tx_a])
    b1 = b.good([acme.record("dev-b", "SB", seq=3)])
    b2 = b.good([acme.record("dev-c", "SC", seq=4)])
    out = x.receive([common, a1])
    assert out.switched and x.head_hash == a1.hash
    dev_a = txm.device_id(txm.decode(tx_a).body[1])
    assert x.reg.lookup_id(dev_a) is not None

    out = x.receive([b1, b2])
    assert out.switched and out.reorg_depth == 1 and out.returned == 1
    assert x.head_hash == b2.hash and x.height == 3 and x.work == b.tree.work
    assert x.reg.lookup_id(dev_a) is None  # its block was abandoned
    assert x.reg.store.is_pending(txm.tx_id(tx_a))  # ... its tx is pending again
    assert x.reg.verify().ok  # the stored state equals a replay of the new chain
    assert a1.hash in x.side  # the old block is kept as a side block

    # acme used seqs 3 and 4 on branch b: seq 2 is a replay there, so the
    # returned tx is dropped when a block is built instead of being mined
    made = x.template(acme.id)
    assert made is None and not x.reg.store.is_pending(txm.tx_id(tx_a))


def test_a_returned_tx_that_is_still_valid_is_mined_again(tmp_path, genesis, acme):
    a, b = Forge(tmp_path / "a", genesis), Forge(tmp_path / "b", genesis)
    globex = Mfr("globex")
    x = node(tmp_path, genesis, "x")
    common = a.good([acme.register(), globex.register()])
    b.tree.receive([common])
    tx_a = acme.record("dev-a", "SA")
    a1 = a.good([tx_a])
    b1 = b.good([globex.record("dev-b", "SB")])
    b2 = b.good([globex.record("dev-c", "SC")])
    x.receive([common, a1])
    out = x.receive([b1, b2])
    assert out.reorg_depth == 1 and out.returned == 1
    made = x.template(globex.id)
    assert made is not None
    fields, ex = made
    assert [t.id for t in ex.txs] == [txm.tx_id(tx_a)]
    found = pw.solve(fields, fields["target"])
    assert found is not None
    blk = make_block(found[1], [t.message for t in ex.txs])
    assert x.receive([blk]).switched
    assert x.reg.tx(txm.tx_id(tx_a)).height == 4
    assert not x.reg.store.is_pending(txm.tx_id(tx_a))
    assert x.reg.verify().ok


def test_equal_work_is_decided_by_the_lower_hash_in_any_order(tmp_path, genesis, acme):
    a, b = Forge(tmp_path / "a", genesis), Forge(tmp_path / "b", genesis)
    a1 = a.good([acme.register()])
    b1 = b.good([Mfr("globex").register()])
    x, y = node(tmp_path, genesis, "x"), node(tmp_path, genesis, "y")
    x.receive([a1])
    x.receive([b1])
    y.receive([b1])
    y.receive([a1])
    assert x.head_hash == y.head_hash == min(a1.hash, b1.hash)
    assert x.reg.verify().ok and y.reg.verify().ok


def test_a_heavier_branch_with_an_invalid_block_is_refused_and_the_chain_kept(
        tmp_path, genesis, acme):
    a, b = Forge(tmp_path / "a", genesis), Forge(tmp_path / "b", genesis)
    x = node(tmp_path, genesis, "x")
    a1 = a.good([acme.register()])
    x.receive([a1])
    txs = [Mfr("globex").register()]
    bad = b.seal(b.fields(txs, state_root=bytes(32)), txs)
    # a valid-looking child on top makes the branch heavier
    f = dict(b.fields([]), height=2, prev_hash=bad.hash, tx_root=merkle.root([]))
    child = b.seal(f, [])
    out = x.receive([bad, child])
    assert [e.reason for _, e in out.refused][:1] == ["state-root-mismatch"]
    assert x.head_hash == a1.hash and x.reg.verify().ok
    assert bad.hash in x.bad and child.hash in x.bad
    again = x.receive([bad])
    assert [e.reason for _, e in again.refused] == ["invalid-block"]


def test_forged_record_in_a_block_is_refused(tmp_path, genesis, acme):
    a = Forge(tmp_path / "a", genesis)
    x = node(tmp_path, genesis, "x")
    common = a.good([acme.register()])
    x.receive([common])
    forger = Mfr("forger")  # not a registered manufacturer, signs as acme
    forged = forger.make(txm.TYPE_DEVICE_RECORD, {1: Mfr("d").pub, 2: "M", 3: "S", 4: 1, 5: 2},
                         sender=acme.id, seq=9)
    f = dict(a.fields([]), tx_root=merkle.root([forged]))
    blk = a.seal(f, [forged])
    out = x.receive([blk])
    assert [e.reason for _, e in out.refused] == ["bad-tx"]
    assert "bad-signature" in out.refused[0][1].detail
    assert x.head_hash == common.hash


def test_header_refusals(tmp_path, genesis, acme):
    a = Forge(tmp_path / "a", genesis)
    x = node(tmp_path, genesis, "x", max_drift_s=60)
    txs = [acme.register()]
    cases = {
        "bad-target": a.seal(a.fields(txs, target=a.tree.targets[-1] * 4), txs),
        "bad-pow": a.seal(a.fields(txs), txs, good_pow=False),
        "time-in-future": a.seal(a.fields(txs, time=int(time.time()) + 3600), txs),
        "tx-root-mismatch": a.seal(a.fields(txs, tx_root=bytes(32)), txs),
        "bad-block": a.seal(a.fields(txs, height=5), txs),
    }
    for reason, blk in cases.items():
        out = x.receive([blk])
        assert [e.reason for _, e in out.refused] == [reason], reason
        assert x.height == 0
    good = a.good(txs)
    assert x.receive([good]).switched
    assert [e.reason for _, e in x.receive([good]).refused] == ["known-block"]


def test_block_decoding_refusals():
    with pytest.raises(Exception) as e:
        decode_block(b"\x00" * 600_000)
    assert e.value.reason == "too-large"
    for raw in (b"\xff\xff", cbor.dumps([b"x", []]), cbor.dumps({"a": 1}),
                cbor.dumps([b"x", [1]])):
        with pytest.raises(Exception) as e:
            decode_block(raw)
        assert e.value.reason == "bad-block"


def test_low_work_side_blocks_are_not_kept_and_orphans_are_bounded(tmp_path, genesis, acme):
    a, b = Forge(tmp_path / "a", genesis), Forge(tmp_path / "b", genesis)
    x = node(tmp_path, genesis, "x", reorg_window=2, max_orphans=16)
    x.receive([a.good([acme.register()])])
    for i in range(5):
        x.receive([a.good([acme.record("d%d" % i, "S%d" % i)])])
    assert x.height == 6
    cheap = b.good([Mfr("cheap").register()])  # forks at genesis: 1 block of work
    out = x.receive([cheap])
    assert [e.reason for _, e in out.refused] == ["low-work"]
    assert not x.side
    for _ in range(100):  # blocks whose parent nobody knows
        f = dict(b.fields([]), prev_hash=os.urandom(32), height=9, tx_root=merkle.root([]))
        x.receive([b.seal(f, [])])
    assert len(x.orphans) == 16 and x.height == 6


def test_side_blocks_are_bounded_lightest_tips_first(tmp_path, genesis, acme):
    a, b = Forge(tmp_path / "a", genesis), Forge(tmp_path / "b", genesis)
    x = node(tmp_path, genesis, "x", max_side=5)
    x.receive([a.good([acme.register()]), a.good([acme.record("d", "S")])])
    sides = [b.seal(b.fields([], proposer=os.urandom(16)), []) for _ in range(12)]
    for s in sides:
        out = x.receive([s])
        assert not out.refused and not out.switched
    assert len(x.side) == 5 and x.height == 2
    # the ones kept are the five of lowest hash (equal work: the tie-break order)
    assert set(x.side) == set(sorted(s.hash for s in sides)[:5])
