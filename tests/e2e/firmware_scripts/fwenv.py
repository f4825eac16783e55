"""Set-up shared by the MQTT scenario scripts (MicroPython Unix port).

Scripts are called as: micropython SCRIPT ROOT BUILD HOST PORT PREFIX CLIENT_ID [ARGS...]
BUILD is a folder of mpy-cross compiled firmware ("-" for none): it goes first on
sys.path, as on a board; ROOT (the project) comes next for the sources.
Every loop is bounded by a deadline; progress goes to stdout one line at a time.
"""
import sys
import time


def env():
    a = sys.argv
    sys.path.insert(0, a[1])
    if a[2] != "-":
        sys.path.insert(0, a[2])
    return a[3], int(a[4]), a[5], a[6], a[7:]


def elapsed(t0):
    return time.ticks_diff(time.ticks_ms(), t0)


def connected(client, ms=5000):
    """Connect (the filters subscribed so far go with it), or print FAIL and exit 1."""
    if not client.ensure_connected(ms):
        print("FAIL no connection")
        raise SystemExit(1)


def loop_until(client, cond, ms, step=100):
    """Call client.wait_msg(step) until cond() or ms elapsed. Returns cond()."""
    t0 = time.ticks_ms()
    while not cond() and elapsed(t0) < ms:
        client.wait_msg(step)
    return cond()
