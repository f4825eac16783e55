"""`chain verify` with the signatures checked by worker processes gives the
sequential replay's verdicts: OK on a sound chain, and on a damaged one the
same first problem (height, reason, detail), also when the replay in the
main process runs past a bad signature into a later problem."""

from __future__ import annotations

import os
import sqlite3
from hashlib import sha256

import pytest

from gateway.db import store
from gateway.db import verify as replay
from tests.support.gwtest import Device, Node
from tools import cli


@pytest.fixture
def chain(node: Node, alice: Device, bob: Device) -> Node:
    devs = [Device("p%d" % i) for i in range(12)]
    node.submit_all([d.register() for d in devs])
    node.produce()
    for k in range(3):
        node.submit_all([d.reading(2000 + k) for d in devs]
                        + [alice.transfer(bob, 1), bob.transfer(devs[k], 2)])
        node.produce()
    node.close()
    return node


def _both(node: Node) -> tuple[replay.Report, replay.Report]:
    with store.Store(node.cfg.db_path, readonly=True) as s:
        g = store.gen.load(node.cfg.genesis_file)
        return replay.verify_chain(s, g, workers=1), replay.verify_chain(s, g, workers=2)


def _err(rep: replay.Report) -> tuple:
    assert not rep.ok and rep.error is not None
    return rep.error.height, rep.error.reason, rep.error.detail


def _bad_signature(node: Node, height: int, idx: int) -> None:
    """Flip a signature byte of one tx and fix its id column (so the id check passes)."""
    db = sqlite3.connect(node.cfg.db_path)
    with db:
        (msg,) = db.execute("SELECT message FROM txs WHERE height = ? AND idx = ?",
                            (height, idx)).fetchone()
        bad = msg[:-5] + bytes([msg[-5] ^ 0x01]) + msg[-4:]
        db.execute("UPDATE txs SET message = ?, id = ? WHERE height = ? AND idx = ?",
                   (bad, sha256(bad).digest(), height, idx))
    db.close()


def test_a_sound_chain_verifies_the_same(chain: Node) -> None:
    seq, par = _both(chain)
    assert seq.ok and par.ok
    assert (seq.blocks, seq.txs, seq.state_root) == (par.blocks, par.txs, par.state_root)
    assert par.txs == 12 + 3 * 14


def test_a_bad_signature_is_the_same_first_problem(chain: Node) -> None:
    _bad_signature(chain, 2, 5)
    seq, par = _both(chain)
    assert _err(seq) == _err(par)
    assert _err(par)[:2] == (2, replay.BAD_TX) and "bad-signature" in _err(par)[2]
    assert _err(par)[2].startswith("tx 5 ")


def test_an_earlier_problem_wins_over_a_later_bad_signature(chain: Node) -> None:
    _bad_signature(chain, 3, 1)
    db = sqlite3.connect(chain.cfg.db_path)
    with db:
        db.execute("UPDATE txs SET status = 1 WHERE height = 2 AND idx = 3")
    db.close()
    seq, par = _both(chain)
    assert _err(seq) == _err(par)
    assert _err(par)[:2] == (2, replay.RECEIPT_MISMATCH)


def test_chain_verify_jobs_option(chain: Node, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(chain.data_dir)
    assert cli.main(["chain", "verify", "--data-dir", d, "--jobs", "2"]) == 0
    assert "chain OK" in capsys.readouterr().out
    _bad_signature(chain, 1, 0)
    assert cli.main(["chain", "verify", "--data-dir", d, "--jobs", "2"]) == 1
    assert "bad-signature" in capsys.readouterr().out


_PARENT = os.getpid()
_REAL_CHECK = replay.check_signatures


def _dies_in_a_worker(jobs: list) -> object:
    """check_signatures, except that a worker process exits at once (as if killed)."""
    if os.getpid() != _PARENT:
        os._exit(9)
    return _REAL_CHECK(jobs)


def test_a_worker_that_dies_changes_no_verdict(chain: Node, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    """Every worker process exits on its first batch: the batches are
    checked in the replaying process, the verdicts stay."""
    monkeypatch.setattr(replay, "check_signatures", _dies_in_a_worker)
    monkeypatch.setattr(replay, "SIG_BATCH", 8)
    seq, par = _both(chain)
    assert seq.ok and par.ok and par.txs == seq.txs
    _bad_signature(chain, 3, 6)
    seq, par = _both(chain)
    assert _err(seq) == _err(par) and "bad-signature" in _err(par)[2]
