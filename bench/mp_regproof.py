"""Light lookup check under the MicroPython Unix port, run by bench/registry_net.py.

    micropython -X heapsize=64k bench/mp_regproof.py ROOT FILE ROUNDS

FILE holds length-prefixed (2 bytes, big-endian) CBOR items: first
[checkpoint tip fields, record proof, retarget params], then the headers a
node answers a lookup with, since that checkpoint. The board way: headers are
checked one at a time as they are read (never all in memory). Prints `key
value` lines: headers_us (reading and checking the headers), record_us
(checking the record's Merkle proof), best of ROUNDS; heap_free after.
"""
import gc
import sys
import time

sys.path.insert(0, sys.argv[1])
from shared import cbor, regproof  # noqa: E402

ROUNDS = int(sys.argv[3])


def item(f):
    n = f.read(2)
    if len(n) < 2:
        return None
    return f.read((n[0] << 8) | n[1])


best_h = best_r = 1 << 60
for _ in range(ROUNDS):
    with open(sys.argv[2], "rb") as f:
        t, rec, params = cbor.loads(item(f))
        tip = regproof.Tip(t[0], t[1], t[2], t[3], t[4], t[5])
        gc.collect()
        t0 = time.ticks_us()
        while True:
            hb = item(f)
            if hb is None:
                break
            tip = regproof.check_headers(tip, [hb], params[0], params[1], params[2])
    t1 = time.ticks_us()
    regproof.check_record(tip, rec[0], rec[1], rec[2], rec[3])
    t2 = time.ticks_us()
    best_h = min(best_h, time.ticks_diff(t1, t0))
    best_r = min(best_r, time.ticks_diff(t2, t1))
gc.collect()
print("headers_us", best_h)
print("record_us", best_r)
print("heap_free", gc.mem_free())
