"""Makes tests/shared/stateproof_vectors.py: a board's balance proof in a
state of 100,000 accounts, built by the gateway's state tree (CPython), for
the dual test tests/shared/test_stateproof.py to check under MicroPython.
tests/ledger/test_commitment.py checks that the file is what this makes.

    python -m tests.support.stateproof_vectors > tests/shared/stateproof_vectors.py
"""

from __future__ import annotations

from hashlib import sha256

from gateway.ledger import state as st
from gateway.ledger.commitment import SparseMerkleTree
from shared import cbor, stateproof
from shared import tx as txm

N_ACCOUNTS = 100_000
BOARD_PUB = bytes.fromhex("02" + "5a" * 32)
BOARD = txm.device_id(BOARD_PUB)
ABSENT = txm.device_id(bytes.fromhex("03" + "77" * 32))


def vectors() -> dict[str, str]:
    rec = st.DeviceRecord(BOARD_PUB, 41, 1234)
    leaf = st.leaf(BOARD, rec)
    items = [(sha256(b"account %d" % i).digest(), sha256(b"leaf %d" % i).digest())
             for i in range(N_ACCOUNTS - 1)]
    items.append((stateproof.account_key(BOARD), stateproof.value_hash(leaf)))
    tree = SparseMerkleTree.build(items)
    return {
        "ROOT": tree.root().hex(), "BOARD": BOARD.hex(), "LEAF": leaf.hex(),
        "PROOF": cbor.dumps(tree.prove(stateproof.account_key(BOARD))).hex(),
        "ABSENT": ABSENT.hex(),
        "ABSENT_PROOF": cbor.dumps(tree.prove(stateproof.account_key(ABSENT))).hex(),
    }


def module_text() -> str:
    lines = ['"""Made by tests/support/stateproof_vectors.py (do not edit): a board\'s',
             'account in a state tree of %d accounts, balance 1234, last seq 41."""'
             % N_ACCOUNTS]
    lines += ['%s = "%s"' % (k, v) for k, v in vectors().items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(module_text(), end="")
