"""State-proof check timing under the MicroPython Unix port (bench/state_tree.py).

    micropython -X heapsize=64k bench/mp_stateproof.py N

Imports shared.stateproof and the dual test's vectors (a board's account in
a tree of 100,000), decodes the CBOR proof and checks the balance N times;
prints `key value` lines: proof_bytes, check_us (mean, best of 3 rounds),
free_after (heap left after the checks)."""
import gc
import sys
import time

sys.path.insert(0, "tests/shared")
sys.path.insert(0, ".")
from stateproof_vectors import BOARD, LEAF, PROOF, ROOT  # noqa: E402

from shared import cbor, stateproof  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
root, board, leaf, raw = (bytes.fromhex(x) for x in (ROOT, BOARD, LEAF, PROOF))
best = None
for _ in range(3):
    t0 = time.ticks_us()
    for _ in range(N):
        assert stateproof.account_balance(root, board, leaf, cbor.loads(raw)) == (1234, 41)
    dt = time.ticks_diff(time.ticks_us(), t0) / N
    best = dt if best is None or dt < best else best
gc.collect()
print("proof_bytes", len(raw))
print("check_us", best)
print("free_after", gc.mem_free())
