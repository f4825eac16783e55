"""Wire protocol shared by the firmware (MicroPython) and the gateway (CPython)."""
