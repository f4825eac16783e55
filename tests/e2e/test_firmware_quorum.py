"""The firmware accepts a receipt only when its header is final under the
validator set of the board's config (docs/CONSENSUS.md): k valid votes of
distinct members on that very header, plus the Merkle proof. The real
firmware (mpy-cross build) runs under `micropython -X heapsize=64k`
(tests/e2e/firmware_scripts/node_quorum.py) and is handed receipts the
gateway's code builds here (shared/messages.receipt, shared/commit_gateway.vote).
Refused, the transaction stays in the outbox: fewer than k votes, a key
outside the set, a member index beyond the set, one member twice, votes on
another header, a header naming another set."""

from __future__ import annotations

import json
import os
from hashlib import sha256
from pathlib import Path

import pytest

from gateway.ledger import consensus
from shared import commit_gateway, header, merkle, messages, p256, tx
from tests.support.mpyrun import ROOT, firmware_build, run_micropython

pytestmark = pytest.mark.micropython
SCRIPT = ROOT / "tests" / "e2e" / "firmware_scripts" / "node_quorum.py"
PRIVS = [sha256(b"gw-%d" % i).digest() for i in range(3)]
PUB_OF = {k: p256.public_key(k) for k in PRIVS}
SET = consensus.ValidatorSet.of(PUB_OF.values(), 2)
BY_INDEX = sorted(PRIVS, key=lambda k: PUB_OF[k])
OUTSIDER = sha256(b"outsider").digest()


def receipt(tid: bytes, signers: list[tuple[int, bytes]], *, set_hash: bytes | None = None,
            vote_time: int | None = None) -> bytes:
    leaf = messages.receipt_leaf(tid, 0, "", [])

    def hdr(t: int) -> bytes:
        return header.encode({
            "version": 2, "domain": "demo", "height": 3, "prev_hash": bytes(32), "time": t,
            "tx_root": bytes(32), "receipts_root": merkle.leaf_hash(leaf),
            "state_root": bytes(32), "proposer": bytes(16),
            "validators": set_hash or SET.hash, "next_validators": SET.hash})

    hb = hdr(1_700_000_000)
    h = header.block_hash(hb if vote_time is None else hdr(vote_time))
    cert = commit_gateway.certificate({i: commit_gateway.vote(k, p256.public_key(k), h) for i, k in signers})
    if len(signers) == 2 and signers[0][0] == signers[1][0]:  # the same member twice
        cert = [cert[0], cert[0]]
    return messages.receipt(tid, 1, 0, "", [], 3, hb, 0, 1, [], cert)


def test_firmware_accepts_only_a_final_header(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    board = sha256(b"board").digest()
    (flash / "wallet.key").write_bytes(tx.device_id(p256.public_key(board)) + board)
    os.chmod(flash / "wallet.key", 0o600)
    cfg = {"domain": "demo", "authority": p256.public_key(sha256(b"auth").digest()).hex(),
           "validators": [p.hex() for p in PUB_OF.values()], "threshold": 2}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    # the board's first transaction, as its wallet signs it (RFC 6979: deterministic)
    me = tx.device_id(p256.public_key(board))
    tid = tx.tx_id(tx.make(board, me, tx.TYPE_READING, "demo", 1, 0, {1: 1, 2: -2}))
    a, b, c = BY_INDEX
    cases = [
        (receipt(tid, [(0, a)]), "detail=too-few-signatures"),
        (receipt(tid, [(0, a), (1, OUTSIDER)]), "reason=bad-signature"),  # not a member's key
        (receipt(tid, [(0, a), (3, b)]), "detail=signer-outside-set"),
        (receipt(tid, [(1, b), (1, b)]), "detail=duplicate-signer"),
        (receipt(tid, [(0, a), (2, c)], vote_time=1_700_000_001), "reason=bad-signature"),
        (receipt(tid, [(0, a), (2, c)], set_hash=bytes(32)), "detail=wrong-validator-set"),
        (receipt(tid, [(1, b), (2, c)]), "receipt-verified seq=1 height=3"),
    ]
    with open(tmp_path / "receipts", "wb") as f:
        for m, _ in cases:
            f.write(len(m).to_bytes(2, "big") + m)
    out = run_micropython([str(SCRIPT), str(ROOT), str(firmware_build()),
                           str(tmp_path / "config.json"), str(tmp_path / "receipts")],
                          cwd=flash, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "TX seq=1 id=%s" % tid.hex() in lines, out.stdout
    states = [ln for ln in lines if ln.startswith("STATE ")]
    assert states == ["STATE receipts=0 seq1=1"] * 6 + ["STATE receipts=1 seq1=0"], lines
    logs = [ln for ln in lines if ln.startswith("LOG bad-reply") or
            ln.startswith("LOG receipt-verified")]
    assert len(logs) == len(cases), lines
    for (_, why), ln in zip(cases, logs, strict=True):
        assert why in ln, (why, ln)
    low = int(lines[-1].split("=")[1])
    print("lowest free heap after a receipt check: %d B" % low)
    assert low > 0
