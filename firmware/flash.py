"""Everything the light node keeps in the board's flash.

- small files with atomic replace (write a temp file, rename): a power cut
  leaves the old or the new file;
- SeqStore: per-device transaction seq numbers that never repeat across
  reboots. seq must strictly increase but need not be consecutive, so the
  counter reserves RESERVE numbers at a time: one flash write per RESERVE
  transactions (flash wear), and a reboot resumes above the reservation;
- Outbox: signed transactions not yet confirmed by a receipt, one file
  `outbox/<seq>` each holding the exact signed bytes, so a resend after a
  reconnect or a reboot carries the same seq and tx id (the gateway answers a
  duplicate with its receipt; nothing is applied twice). RAM keeps only
  seq -> last send time.
On the unix virtual board the current directory is the board's flash.
(One module rather than three: each module costs board heap.)
"""
import os

from micropython import const


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def read(path):
    """File bytes, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write(path, data):
    """Replace `path` atomically: a power cut leaves the old or the new file."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def ensure_dir(path):
    if not exists(path):
        os.mkdir(path)


def listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


RESERVE = const(32)
SEQ_FILE = "seq"


class SeqStore:
    def __init__(self, path=SEQ_FILE):
        self._path = path
        raw = read(path)
        self._ceiling = int(raw) if raw else 0
        self._next = self._ceiling + 1

    def next(self):
        n = self._next
        if n > self._ceiling:
            self._ceiling = n + RESERVE - 1
            write(self._path, str(self._ceiling).encode())
        self._next = n + 1
        return n


OUTBOX_DIR = "outbox"
CAPACITY = const(32)


class Outbox:
    def __init__(self, folder=OUTBOX_DIR):
        self._dir = folder
        ensure_dir(folder)
        self._sent = {}
        for name in listdir(folder):
            if name.isdigit():
                self._sent[int(name)] = None  # unsent since boot

    def __len__(self):
        return len(self._sent)

    def full(self):
        return len(self._sent) >= CAPACITY

    def _path(self, seq):
        return self._dir + "/" + str(seq)

    def put(self, seq, message):
        write(self._path(seq), message)
        self._sent[seq] = None

    def get(self, seq):
        return read(self._path(seq))

    def unsend(self):
        """Make every entry due now (after a reconnect)."""
        for seq in self._sent:
            self._sent[seq] = None

    def mark_sent(self, seq, now_ms):
        if seq in self._sent:
            self._sent[seq] = now_ms

    def remove(self, seq):
        if seq in self._sent:
            del self._sent[seq]
            remove(self._path(seq))

    def due(self, now_ms, after_ms, ticks_diff):
        """Seqs never sent since boot or sent more than `after_ms` ago, oldest first."""
        out = []
        for seq, t in self._sent.items():
            if t is None or ticks_diff(now_ms, t) >= after_ms:
                out.append(seq)
        out.sort()
        return out
