"""Helpers that dual test modules use under both CPython and MicroPython."""


def expect_error(cls, fn, *args, **kwargs):
    """Call fn; it must raise `cls` (or a subclass). Returns the exception."""
    try:
        fn(*args, **kwargs)
    except cls as e:
        return e
    raise AssertionError("expected %s from %s" % (cls.__name__, fn))


def unhex(s):
    """bytes from a hex string, whitespace allowed."""
    return bytes.fromhex("".join(s.split()))
