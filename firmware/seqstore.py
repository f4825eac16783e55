"""Per-device transaction sequence numbers that never repeat across reboots.

seq must strictly increase but need not be consecutive, so the counter reserves
RESERVE numbers at a time in flash: one flash write per RESERVE transactions
(flash wear) and a reboot resumes above the reservation, never reusing a seq."""
from micropython import const

from firmware import flash

RESERVE = const(32)
SEQ_FILE = "seq"


class SeqStore:
    def __init__(self, path=SEQ_FILE):
        self._path = path
        raw = flash.read(path)
        self._ceiling = int(raw) if raw else 0
        self._next = self._ceiling + 1

    def next(self):
        n = self._next
        if n > self._ceiling:
            self._ceiling = n + RESERVE - 1
            flash.write(self._path, str(self._ceiling).encode())
        self._next = n + 1
        return n
