"""Heap cost of each firmware module under `micropython -X heapsize=64k`.

Run by bench/firmware.py under MicroPython with the mpy-cross build on
sys.path: prints `module <name> <bytes>` lines for the modules the node loop
keeps, then `total` and `free`, then `startup <name> <bytes>` for the
modules firmware/main.py loads for start-up only and drops before the loop
(their heap comes back), then `market <name> <bytes>` for the modules only a
board with an "offer" or a "need" loads (docs/MARKET.md)."""
import gc
import sys

MODULES = ("shared.errors", "shared.cbor", "shared.p256", "shared.cose", "shared.tx",
           "shared.merkle", "shared.header", "shared.messages", "shared.commit", "firmware.flash",
           "firmware.wallet", "firmware.mqtt", "firmware.node", "boards", "boards.unix",
           "firmware.main")
STARTUP = ("shared.topics", "boards.profile", "firmware.startup")
MARKET = ("firmware.market",)  # the rest is loaded per call (bench/market_heap.py)


def main(build):
    sys.path.insert(0, build)
    gc.collect()
    start = f0 = gc.mem_free()
    for m in MODULES:
        __import__(m)
        gc.collect()
        f1 = gc.mem_free()
        print("module %s %d" % (m, f0 - f1))
        f0 = f1
    print("total %d" % (start - f0))
    print("free %d" % f0)
    for kind, names in (("startup", STARTUP), ("market", MARKET)):
        for m in names:
            __import__(m)
            gc.collect()
            f1 = gc.mem_free()
            print("%s %s %d" % (kind, m, f0 - f1))
            f0 = f1


main(sys.argv[1])
