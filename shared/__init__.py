"""Wire protocol shared by the firmware (MicroPython) and the gateway (CPython).

Heap budget: a light node runs in a 64 KiB MicroPython heap, where every
function (~200 bytes), class (~250 bytes) and public module-level name (~40
bytes plus its interned string) that a board imports costs RAM for good. So
each module a board loads holds what a light node needs, and the gateway's
side of it lives in a companion module (topics -> topics_gateway, header ->
header_gateway, messages -> messages_gateway, errors -> reasons, tx -> txdecode,
merkle -> merkletree) whose names stay reachable through the light module:
its `__getattr__ = lazy(companion, globals())` imports the companion on first
use. A board never imports one, so it never pays for it."""


def lazy(module, into):
    """A module `__getattr__` (PEP 562; MicroPython has it too) serving the
    names of `module`, imported on first use; each name served is then stored
    in `into` (the light module's globals()), so later lookups are plain
    attribute reads. A closure, not a function per module: cheaper on a board."""

    def get(name):
        m = __import__(module, None, None, ["*"])
        try:
            v = getattr(m, name)
        except AttributeError:
            raise AttributeError(name) from None
        into[name] = v
        return v

    return get
