"""The set-up of `thingledger run --gateways N` (tools/cluster_setup.py), without
a network: the set-up transactions are committed by the real ledger rules
(owner-certified full nodes, a coordinator, boards as light nodes) and a
second look at the chain asks for none; a board's wallet is written in the
firmware's layout; the admission export writes the NATS file only when what
NATS enforces changed (bcrypt salts differ on every hashing, so an unchanged
file proves no re-hash), and its users are exactly the chain's."""

from __future__ import annotations

import stat

from gateway import broker as broker_auth
from gateway.broker.nats_export import nats_check
from gateway.identity import roles
from shared import p256
from shared import tx as txm
from tests.support import gwtest
from tools import cluster_setup as setup
from tools.keys import KeyPair


def keypair(name: str) -> KeyPair:
    priv, pub = gwtest.key(name)
    return KeyPair(priv, pub)


def test_board_wallet_in_the_firmware_layout(tmp_path):
    flash = tmp_path / "board-1"
    w = setup.board_wallet("board-1", flash)
    raw = (flash / setup.WALLET_FILE).read_bytes()
    assert len(raw) == 48 and raw[:16] == w.id == txm.device_id(w.key.public)
    assert p256.public_key(raw[16:]) == w.key.public
    assert stat.S_IMODE((flash / setup.WALLET_FILE).stat().st_mode) == 0o600
    assert setup.board_wallet("board-1", flash) == w  # kept, not made again
    assert setup.flash_seq(flash) == 0
    setup.raise_flash_seq(flash, 7)
    setup.raise_flash_seq(flash, 3)  # never lowered
    assert setup.flash_seq(flash) == 7


def test_set_up_transactions_are_committed_and_asked_once(tmp_path):
    owner, coord = keypair("owner"), keypair("coordinator")
    validators = [keypair(f"validator-{i}") for i in range(3)]
    board = setup.board_wallet("board-1", tmp_path / "board-1")
    n = gwtest.Node(tmp_path / "gw", owner=owner.public)
    try:
        d = gwtest.DOMAIN
        first, notes = setup.full_node_joins(n.state, d, owner, validators)
        assert not notes and len(first) == 3
        second = []
        a, b, _ = setup.register_and_join(n.state, d, "the coordinator", coord, coord.id,
                                          setup.COORDINATOR_HARDWARE)
        first, second = first + a, second + b
        a, b, last = setup.register_and_join(n.state, d, "board-1", board.key, board.id,
                                             setup.BOARD_HARDWARE, first_seq=5)
        first, second = first + a, second + b
        # the board's seqs start above its flash reservation, the join after the register
        seqs = [txm.decode(t.message).seq for t in a + b]
        assert seqs == [5, 6] and last == 6
        for batch in (first, second):
            n.submit_all([t.message for t in batch])
            blk = n.produce()
            assert len(blk.txs) == len(batch) and not blk.dropped, blk.dropped
            assert all(r.status == 0 for r in blk.receipts), blk.receipts
        for v in validators:
            assert n.state.get(v.id).node == roles.FULL
        assert n.state.get(coord.id).node == roles.COORDINATION
        rec = n.state.get(board.id)
        assert rec.node == roles.LIGHT and rec.last_seq == 6
        # a second run finds everything in place: nothing to submit
        assert setup.full_node_joins(n.state, d, owner, validators) == ([], [])
        for who, key, pid, hw in (("c", coord, coord.id, setup.COORDINATOR_HARDWARE),
                                  ("b", board.key, board.id, setup.BOARD_HARDWARE)):
            assert setup.register_and_join(n.state, d, who, key, pid, hw)[:2] == ([], [])
    finally:
        n.close()


def test_a_domain_without_owner_gets_no_full_node_joins(tmp_path):
    n = gwtest.Node(tmp_path / "gw")
    try:
        txs, notes = setup.full_node_joins(n.state, gwtest.DOMAIN, None, [keypair("v")])
        assert txs == [] and "no owner" in notes[0]
    finally:
        n.close()


def test_admission_export_rewrites_only_on_a_change(tmp_path):
    coord = keypair("coordinator")
    board = setup.board_wallet("board-1", tmp_path / "board-1")
    n = gwtest.Node(tmp_path / "gw")
    try:
        d = gwtest.DOMAIN
        path = tmp_path / "nats" / setup.AUTH_FILE
        adm = setup.Admission(path, n.data_dir, n.genesis, n.ledger.authority_priv)
        adm.add_login(coord.id, coord)
        adm.add_login(board.id, board.key)
        ex, _ = adm.export()
        user, pw = adm.gateway_login
        assert ex.users == [user]  # nobody else is on the chain yet
        text = path.read_text()
        assert coord.id.hex() not in text and "No anonymous access" in text
        again, _ = adm.export()
        assert again.digest == ex.digest and path.read_text() == text  # not re-hashed
        # the board registers: the next export lets it in with its own password
        n.submit_all([m.message for m in setup.register_and_join(
            n.state, d, "board-1", board.key, board.id, setup.BOARD_HARDWARE, 1)[0]])
        n.produce()
        ex2, height = adm.export()
        assert height == 1 and ex2.digest != ex.digest and ex2.users == [user, board.id.hex()]
        line = next(x for x in path.read_text().splitlines() if board.id.hex() in x)
        hashed = line.split('password: "')[1].split('"')[0]
        assert nats_check(broker_auth.mqtt_password(board.key.private, d, board.id), hashed)
        assert not nats_check(adm.logins[coord.id], hashed)
        assert broker_auth.load_credentials(adm.credentials_file)[board.id] == \
            adm.logins[board.id]
    finally:
        n.close()


def test_watch_does_not_reload_the_export_the_nodes_started_with():
    """broker_sync.Watch(digest=...): the run hands over the digest of the file
    the nodes already loaded; the watch's first export then reloads nobody
    (a login during a reload can be refused), and a changed export does."""
    import threading
    from types import SimpleNamespace

    from tools.broker_sync import Watch

    def once(digest_start: str | None, exported: str) -> list[str]:
        stop = threading.Event()
        reloads: list[str] = []

        def export():
            stop.set()  # one round
            return SimpleNamespace(digest=exported, users=["gw"]), 3

        Watch(export, lambda: b"head", lambda: reloads.append("hup") or "reloaded",
              lambda line: None, digest=digest_start).run(stop, poll=0.01)
        return reloads

    assert once("d1", "d1") == []
    assert once("d1", "d2") == ["hup"]
    assert once(None, "d1") == ["hup"]


def test_the_demo_domain_takes_a_validators_double_vote_as_proof(tmp_path):
    """`run --gateways`'s genesis (run_cluster.prepare_domain) keeps trust and
    gives each validator an account: after the run's set-up transactions, a
    PROOF of validator 0's double vote signed by validator 1's key, as a
    replica files it, is committed; validator 0 is banned and leaves the set
    from the next height."""
    from gateway.ledger import blocks, consensus
    from gateway.trust import evidence
    from gateway.trust import standing as st
    from gateway.trust.rules import VOTE_EQUIVOCATION
    from shared import commit_gateway, header
    from tools import run_cluster

    dirs = run_cluster.prepare_domain(tmp_path, gwtest.DOMAIN, 3, lambda line: None)
    owner = setup.load_key(tmp_path / setup.OWNER_KEY)
    vals = [setup.load_key(d / "validator.key") for d in dirs]
    n = gwtest.Node(dirs[0], create=False)
    try:
        assert n.ledger.rules.trust
        joins, notes = setup.full_node_joins(n.state, gwtest.DOMAIN, owner, vals)
        assert not notes
        n.submit_all([t.message for t in joins])
        one = n.produce()
        assert len(one.txs) == 3 and not one.dropped, one.dropped
        sib = blocks.build_block(n.store.get_block(0), [], n.store.load_state(), n.time + 1,
                                 n.ledger.authority_priv, n.genesis.authority_id,
                                 domain=gwtest.DOMAIN, rules=n.ledger.rules)
        assert sib.height == 1 and sib.hash != one.hash

        def vote(hb: bytes) -> bytes:
            h = header.block_hash(hb)
            return evidence.encode_vote(vals[0].public, hb,
                                        commit_gateway.vote(vals[0].private, vals[0].public, h))
        filer = vals[1]
        rec = n.state.get(filer.id)
        assert rec is not None
        n.submit(txm.make(filer.private, filer.id, txm.TYPE_PROOF, gwtest.DOMAIN,
                          rec.last_seq + 1, n.ledger.rules.min_fee,
                          {1: VOTE_EQUIVOCATION, 2: vote(one.header_bytes),
                           3: vote(sib.header_bytes)}))
        two = n.produce()
        assert two.receipts[0].status == 0 and not two.dropped
        assert st.level_of(n.state, vals[0].id) == st.BANNED
        sched = consensus.schedule(n.state)
        assert consensus.set_at(sched, 3).pubkeys == tuple(sorted(v.public for v in vals[1:]))
    finally:
        n.close()
