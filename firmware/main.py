"""Firmware entry point: wire the board, config, wallet and MQTT client into a
Node and run it. On a board, main.py at the flash root does
`from firmware.main import main; main()`; the unix virtual board is started
the same way with the board's flash folder as working directory and the
firmware build on sys.path (see tools/vboard.py).

Heap frugality (64 KiB): the loop's transient buffers (a received message,
its decoded copies, the signature check's big ints) need free runs of a few
hundred bytes, so the long-lived objects must sit packed at the bottom of the
heap. MicroPython only collects when the heap is full: while modules load,
their code would land between thousands of dead temporaries (the p256 comb
table build, the wallet's first signatures) and, once those are freed, leave
the free heap cut into holes too small for a 340-byte message (seen: 10 KB
free, no 250-byte run). So start-up runs with gc.threshold (a collection
every 2 KiB allocated), which keeps what it allocates packed low;
the loop then runs without it. The wiring itself is firmware/startup.py,
used once and then forgotten (see _forget): its code, the board profile,
shared/topics.py (the node keeps its topics as strings) and the parsed
config.json are worth more as free heap for the receipt checks. A market
board's part (firmware/market.py, with the OFFER and DEMAND bodies start-up
built) is imported only after that, in the room start-up's code left: loaded
beside it, it made the start-up's peak too high for 64 KiB."""
import gc
import sys

from micropython import const

_START_GC_BYTES = const(2048)  # collect every 2 KiB allocated during start-up


def _forget(name):
    # Drop a module used only at start-up: out of sys.modules and off its
    # package, so nothing refers to it and the GC frees its code.
    pkg, _, attr = name.rpartition(".")
    if sys.modules.pop(name, None) is not None and pkg in sys.modules:
        try:
            delattr(sys.modules[pkg], attr)
        except AttributeError:
            pass


def _start():
    # In its own frame: once it returns, no stale slot still holds startup.
    from firmware import startup

    return startup.make_node(print)


def main(steps=None):
    gc.threshold(_START_GC_BYTES)
    node, market = _start()
    _forget("firmware.startup")
    _forget("boards.profile")
    _forget("shared.topics")  # the node keeps its topics as strings
    if market:  # an offer or a need: the market part loads in the room start-up left
        from firmware.market import Market

        node.market = Market(node, *market)
    market = None
    gc.threshold(-1)
    gc.collect()
    node.run(steps)
