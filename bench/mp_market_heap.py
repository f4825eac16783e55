# What a market board holds after start-up that a plain board does not (run by
# bench/market_heap.py under `micropython -X heapsize=...`, compiled by
# mpy-cross and found on sys.path as the boot file, firmware/otaboot.py, left it):
#   import mp_market_heap; mp_market_heap.probe(mp_market_heap.start(), SIGN)
# start() is the board's start-up as firmware/main.py runs it before its
# loop (firmware/startup.py, the real Node and MQTT client object, never
# connected; the flash folder's config.json says which kind of board; this
# module's own code is loaded first, the same for every kind). probe prints:
#   FREE <free heap after start-up, collected>
#   qstr pool: ... (micropython.qstr_info: interned names and their bytes)
#   MOD <item> <heap freed when dropped>   (market boards: each market item
#   dropped in turn, collected: the OFFER body, the DEMAND body, the Market
#   object (slots, clock, state: a tree whose market part is an instance),
#   then each market module's code and globals: firmware.market with the
#   market's state where the part is the module itself)
#   USE <module> <heap it takes while loaded for a call, with what it imports;
#   -1: it could not be loaded at this heap>
#   and with SIGN true, instead of the items:
#   SIGN <lowest free heap during the first signature: the most heap a ballast
#   of small objects took with node.submit still signing; -1: fails unburdened>
import gc
import sys

import micropython


def forget(name):  # as firmware/main.py drops a module: sys.modules and its package
    pkg, _, attr = name.rpartition(".")
    if sys.modules.pop(name, None) is not None and pkg in sys.modules:
        sys.modules[pkg].__dict__.pop(attr, None)


USE = ("firmware.reading", "firmware.supply", "firmware.buy", "firmware.bought",
       "firmware.sealed", "firmware.matched", "firmware.notices")
MARKET = ("firmware.market", "firmware.supply", "firmware.buy", "shared.stream",
          "shared.streamroot", "shared.streamsign")


def start():
    # firmware/main.py's main() up to node.run
    gc.threshold(2048)
    from firmware import startup

    node, market = startup.make_node(print)
    startup = None
    for m in ("firmware.startup", "boards.profile", "shared.topics"):
        forget(m)
    if market:
        from firmware.market import Market

        node.market = Market(node, *market)
    market = None
    gc.threshold(-1)
    gc.collect()
    return node


def probe(node, sign):
    gc.collect()
    print("FREE %d" % gc.mem_free())
    micropython.qstr_info()  # "qstr pool: n_pool=.., n_qstr=.., n_str_data_bytes=.., ..."
    if sign:  # in a process of its own: its garbage would blur the account below
        print("SIGN %d" % lowest(node))
        print("MODULES " + " ".join(sorted(sys.modules)))
    elif node.market is not None:
        gc.collect()
        f1 = gc.mem_free()
        part = node.market
        for k in ("offer", "need", None):  # the bodies, then the object (slots, clock)
            if k:
                setattr(part, k, None)
            elif part is sys.modules.get("firmware.market"):
                continue  # the module itself: its state goes with it below
            else:
                node.market = part = None
            gc.collect()
            f0, f1 = f1, gc.mem_free()
            print("MOD %s %d" % (("Market." + k) if k else "Market-object", f1 - f0))
        node.market = part = None
        for name in [m for m in MARKET if m in sys.modules]:
            forget(name)
            gc.collect()
            f0, f1 = f1, gc.mem_free()
            print("MOD %s %d" % (name, f1 - f0))
        for name in USE:  # the heap a pass's code takes while it runs (with shared/stream.py)
            gc.collect()
            f0 = gc.mem_free()
            try:
                __import__(name)
            except ImportError:  # a tree without it
                continue
            except MemoryError:  # no room at this heap: said, not left out of the table
                print("USE %s -1" % name)
                forget(name)
                continue
            gc.collect()
            print("USE %s %d" % (name, f0 - gc.mem_free()))
            for m in (name, "shared.stream", "shared.streamsign"):
                forget(m)


def attempt(node, n_items):
    gc.collect()
    before = gc.mem_free()
    ok = None
    try:
        ballast = [None] * n_items
        for i in range(n_items):
            ballast[i] = bytes(16)
        taken = before - gc.mem_free()
        node.wallet.sign_tx(1, node.domain, 1, 0, {1: node.wallet.public_key})
        ok = taken
    except MemoryError:
        pass
    ballast = None  # noqa: F841
    gc.collect()
    return ok


def lowest(node):
    if attempt(node, 0) is None:
        return -1
    gc.collect()
    lo, hi, low = 0, gc.mem_free() // 32, 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        t = attempt(node, mid)
        if t is None:
            hi = mid
        else:
            lo, low = mid, t
    return low
