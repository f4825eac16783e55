"""Offline queue: signed transactions not yet confirmed by a receipt.

Each entry is a flash file `outbox/<seq>` holding the exact signed bytes, so a
resend after a reconnect or a reboot carries the same seq and tx id (the
gateway answers a duplicate with its receipt; nothing is applied twice).
RAM keeps only seq -> last send time."""
from micropython import const

from firmware import flash

DIR = "outbox"
CAPACITY = const(32)


class Outbox:
    def __init__(self, folder=DIR):
        self._dir = folder
        flash.ensure_dir(folder)
        self._sent = {}
        for name in flash.listdir(folder):
            if name.isdigit():
                self._sent[int(name)] = None  # unsent since boot

    def __len__(self):
        return len(self._sent)

    def full(self):
        return len(self._sent) >= CAPACITY

    def _path(self, seq):
        return self._dir + "/" + str(seq)

    def put(self, seq, message):
        flash.write(self._path(seq), message)
        self._sent[seq] = None

    def get(self, seq):
        return flash.read(self._path(seq))

    def mark_sent(self, seq, now_ms):
        if seq in self._sent:
            self._sent[seq] = now_ms

    def remove(self, seq):
        if seq in self._sent:
            del self._sent[seq]
            flash.remove(self._path(seq))

    def due(self, now_ms, after_ms, ticks_diff):
        """Seqs never sent since boot or sent more than `after_ms` ago, oldest first."""
        out = []
        for seq, t in self._sent.items():
            if t is None or ticks_diff(now_ms, t) >= after_ms:
                out.append(seq)
        out.sort()
        return out
