"""State proofs a light node checks (dual: CPython and MicroPython at 64 KiB):
a board proves its own balance against a header's state_root in a state of
100,000 accounts (the proof as the gateway's tree made it, CBOR bytes as
they arrive), an absent account proves absent, and altered proofs fail."""
from mpcompat import unhex
from stateproof_vectors import ABSENT, ABSENT_PROOF, BOARD, LEAF, PROOF, ROOT

from shared import cbor, stateproof

_ROOT = unhex(ROOT)
_BOARD = unhex(BOARD)


def test_a_board_proves_its_own_balance():
    proof = cbor.loads(unhex(PROOF))
    assert stateproof.account_balance(_ROOT, _BOARD, unhex(LEAF), proof) == (1234, 41)
    assert len(unhex(PROOF)) < 1024  # about log2(100,000) sibling hashes


def test_an_absent_account_proves_absent():
    proof = cbor.loads(unhex(ABSENT_PROOF))
    assert stateproof.check_account(_ROOT, unhex(ABSENT), None, proof)
    assert not stateproof.check_account(_ROOT, _BOARD, None, cbor.loads(unhex(PROOF)))
    assert stateproof.account_balance(_ROOT, unhex(ABSENT), None, proof) is None


def test_a_changed_balance_root_or_path_does_not_prove():
    leaf = unhex(LEAF)
    proof = cbor.loads(unhex(PROOF))
    rec = cbor.loads(leaf)
    rec[3] = 1235
    assert stateproof.account_balance(_ROOT, _BOARD, cbor.dumps(rec), proof) is None
    other_root = bytes([_ROOT[0] ^ 1]) + _ROOT[1:]
    assert stateproof.account_balance(other_root, _BOARD, leaf, proof) is None
    sibs, term = proof
    for i in (0, len(sibs) // 2, len(sibs) - 1):
        bad = list(sibs)
        s = bad[i] or bytes(32)
        bad[i] = bytes([s[0] ^ 0x80]) + s[1:]
        assert stateproof.account_balance(_ROOT, _BOARD, leaf, [bad, term]) is None
    for p in ([sibs[1:], term], [sibs + [b""], term], [sibs, []], [sibs], 7, [None, None]):
        assert stateproof.account_balance(_ROOT, _BOARD, leaf, p) is None
    assert stateproof.account_balance(_ROOT, unhex(ABSENT), leaf, proof) is None
