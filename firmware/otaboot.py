"""The boot file: the flash root's main.py (docs/OTA.md, "The board's state
machine"). It is never part of a release, so no update can break it; it is
written over USB only (`thingledger board flash`; tools/vboard.py for the
virtual boards) and imports nothing of the firmware before it has chosen
which firmware to run.

ota/state holds "<active> <previous> <c|u> <boots>": the version running
(0: the firmware flashed over USB, at the flash root), the one before it,
whether the active version confirmed itself (c) or not yet (u), and how many
times an unconfirmed version was booted. A version lives in fw/<version>/,
put there whole by the updater (firmware/ota.py) with one rename, so the
folder exists only once every file in it checked. An unconfirmed version is
booted at most TRIES times; at the next boot this file rolls back to the
previous version and writes ota/failed ("<failed> <previous>") for the node
to report on chain. Every write is a temporary file renamed over the old one:
a power cut leaves the old or the new state, and either names a whole version.
"""
import os
import sys

TRIES = 3


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def _whole(v):
    if v == "0":
        return True
    try:
        os.stat("fw/" + v + "/firmware")
        return True
    except OSError:
        return False


def pick():
    """The version to run (a folder name under fw/, "0" for the root), after
    counting this boot of an unconfirmed version or rolling it back."""
    s = (_read("ota/state") or "").split()
    if len(s) != 4 or not s[3].isdigit():
        s = ["0", "-", "c", "0"]
    a, p, f, n = s[0], s[1], s[2], int(s[3])
    if f == "u":
        n += 1
        if n > TRIES or not _whole(a):
            _write("ota/failed", a + " " + p)
            a, p, f, n = (p if p != "-" and _whole(p) else "0"), "-", "c", 0
        _write("ota/state", "%s %s %s %d" % (a, p, f, n))
    if a != "0" and _whole(a):
        sys.path.insert(0, "fw/" + a)
        return a
    return "0"


def boot():
    """Pick the version, then drop this module (the node wants the heap)."""
    v = pick()
    print("boot version=%s" % v)
    sys.modules.pop("otaboot", None)
    return v


def failed(e):
    """The chosen firmware raised out of its main: an unconfirmed version
    resets (one more boot counted, so the rollback comes); a confirmed one
    re-raises, as before the updater existed."""
    if (_read("ota/state") or "").split()[2:3] != ["u"]:
        raise e
    print("boot-failed error=%r" % (e,))
    sys.print_exception(e)
    try:
        import machine

        machine.reset()
    except (ImportError, AttributeError):  # the unix virtual board: its launcher starts it again
        sys.exit(75)  # boards/unix.py RESET_EXIT

