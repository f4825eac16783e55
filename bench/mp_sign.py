"""ES256 timing and heap probe, run under the MicroPython Unix port by bench/crypto.py.

    micropython -X heapsize=64k bench/mp_sign.py ROOT [N | none | import | once]

ROOT holds `shared/` (sources or mpy-cross output). With N (default 50) it prints
`key value` lines:
  import_us, import_heap   first import of shared.p256 (+ errors, hmacsha256):
                           microseconds, and heap still used after it (bytes)
  sign_need, verify_need   free heap (bytes) one call needed: its peak working set
  sign_us, verify_us       mean over N calls, best of 3 rounds (the host is noisy)
`none`, `import` and `once` (import, sign, verify) only exit 0 if that fitted in
the heap: bench/crypto.py searches the smallest -X heapsize for each.
"""
import gc
import sys
import time

ROOT = sys.argv[1]
ARG = sys.argv[2] if len(sys.argv) > 2 else "50"
sys.path.insert(0, ROOT)
PRIV = b"\x5b" * 32
MSG = b"bench message: temperature 2150 scale -2"


def _hold(free):
    # Allocate ballast until about `free` bytes of heap are left (works when fragmented).
    held = []
    size = 1 << 16
    while size >= 32:
        if gc.mem_free() - free < size:
            size >>= 1
            continue
        try:
            held.append(bytearray(size - 16))
        except MemoryError:
            size >>= 1
    return held


def need(fn):
    """Smallest free heap (bytes) in which fn() runs without MemoryError."""
    gc.collect()
    lo, hi = 0, gc.mem_free()
    best = -1
    while hi - lo > 32:
        mid = (lo + hi) // 2
        held = _hold(mid)
        gc.collect()
        free = gc.mem_free()
        try:
            fn()
            ok = True
        except MemoryError:
            ok = False
        del held
        gc.collect()
        if ok:
            hi, best = mid, free
        else:
            lo = mid
    return best


def mean_us(fn, n):
    t = time.ticks_us()
    for _ in range(n):
        fn()
    return time.ticks_diff(time.ticks_us(), t) / n


def main():
    if ARG == "none":
        return
    gc.collect()
    before = gc.mem_alloc()
    t = time.ticks_us()
    from shared import p256

    import_us = time.ticks_diff(time.ticks_us(), t)
    if ARG == "import":
        return
    pub = p256.public_key(PRIV)
    sig = p256.sign(PRIV, MSG)
    if not p256.verify(pub, MSG, sig):
        raise SystemExit("verify failed")
    if ARG == "once":
        return
    n = int(ARG)
    gc.collect()
    print("import_us", import_us)
    print("import_heap", gc.mem_alloc() - before)
    print("sign_need", need(lambda: p256.sign(PRIV, MSG)))
    print("verify_need", need(lambda: p256.verify(pub, MSG, sig)))
    for name, fn in (("sign_us", lambda: p256.sign(PRIV, MSG)),
                     ("verify_us", lambda: p256.verify(pub, MSG, sig))):
        print(name, min(mean_us(fn, n) for _ in range(3)))


main()
