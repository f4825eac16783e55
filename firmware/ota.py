"""The board's updater (docs/OTA.md). firmware/startup.py runs it before the
node is even imported when the node left a release id in ota/offer; each run
does one phase on a fresh heap and ends with a reset (main below):

    1 fetch  the signed manifest (retained on A/<rid>) into ota/manifest
    2 check  the signature under a pinned key (ota/keys), the board, the .mpy
             ABI, the version above every version tried here (ota/floor and
             the active one: no downgrade, no replay), the protocol; the file
             list into ota/files (fixed records), the rest into ota/checked
    3 fetch  the space, then every file one chunk at a time (subscribe to its
             retained topic, take it, unsubscribe), appended to
             fw/stage/<path> and hashed as it goes; resumable: after a reset
             the staged bytes are hashed again and the download goes on from
             there. Then the swap, steps 1-7 (Updater._swap): fw/stage renamed
             to fw/<version>, then the state file names it, unconfirmed; the
             boot file (firmware/otaboot.py) runs it at the next boot

A refused release is remembered (ota/seen) so its retained announcement is
ignored afterwards; a chunk that does not come in time is waited for again
up to ATTEMPTS times, then the release is given up (staged bytes stay).
Every refusal is logged `ota-refused reason=<detail>`.
"""
import gc
import os
import sys
import time
from hashlib import sha256

from micropython import const

from firmware import flash
from shared import errors, ota

OFFER = "ota/offer"
STATE = "ota/state"
KEYS = "ota/keys"
FLOOR = "ota/floor"
SEEN = "ota/seen"
LATER = "ota/later"
HOLD = "ota/hold"
MANIFEST = "ota/manifest"
FILES = "ota/files"  # the checked manifest's file list: _REC-byte records
CHECKED = "ota/checked"  # "<version> <chunk> <files> <next key hex or ->"
_REC = const(104)  # size 4, sha256 32, path length 1, path <= 64, padding
STAGE = "fw/stage"
_SEEN_MAX = const(16)
_WAIT_MS = const(10000)  # for one chunk
ATTEMPTS = const(6)
_BLOCK = const(512)
_RETRY_MS = const(1000)  # after a refused chunk, before asking for it again


def state():
    s = (flash.read(STATE) or b"").decode().split()
    return s if len(s) == 4 and s[3].isdigit() else ["0", "-", "c", "0"]


def pinned():
    k = flash.read(KEYS) or b""
    return [k[i:i + 33] for i in range(0, len(k) - 32, 33)]


def seen(rid):
    s = flash.read(SEEN) or b""
    for i in range(0, len(s), ota.RID_LEN):
        if s[i:i + ota.RID_LEN] == rid:
            return True
    return False


def remember(rid):
    if not seen(rid):
        s = (flash.read(SEEN) or b"") + rid
        flash.write(SEEN, s[-_SEEN_MAX * ota.RID_LEN:])


def rmtree(path):
    """Remove a file or a folder with everything in it (nothing if missing)."""
    try:
        names = os.listdir(path)
    except OSError:
        flash.remove(path)
        return
    for n in names:
        rmtree(path + "/" + n)
    os.rmdir(path)


def used(path):
    """Bytes of the files under `path` (folders and files only: a virtual
    board's link to its firmware build, tools/vboard.py, is not flash)."""
    n = 0
    for e in os.ilistdir(path):
        p = path + "/" + e[0]
        n += used(p) if e[1] == 0x4000 else _size(p) if e[1] == 0x8000 else 0
    return n


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


class Updater:
    def __init__(self, board, cfg, log):
        self.board = board
        self.cfg = cfg
        self.log = log
        self.pause = cfg.get("ota_pause_step")  # tests: hold at a swap step to be killed there
        self.client = self.announce = self._want = self._got = None

    def _on_message(self, topic, msg, retained):
        if topic == self._want:
            self._got = msg

    def _step(self, n):
        self.log("ota-step n=%d" % n)
        if self.pause == n:
            while True:
                time.sleep_ms(1000)

    def check(self, signed, rid):
        """Check the fetched manifest: write its file list (ota/files) and the
        rest (ota/checked) if it may be installed here, else refuse it."""
        gc.collect()
        self.log("ota-phase 2 rid=%s free=%d" % (rid.hex(), gc.mem_free()))
        try:
            m = ota.open_release(signed, pinned())
            signed = None
            floor = max(int(flash.read(FLOOR) or b"0"), int(state()[0]))
            ota.check_fit(m, self.cfg["board"], ota.abi_of(sys.implementation._mpy), floor,
                          int(self.cfg.get("protocol", ota.PROTOCOL)))
            # the file list as fixed records in flash (one read per file later):
            # decoded, it takes several KB of heap the download needs
            f = m[ota.M_FILES]
            with open(FILES, "wb") as out:
                for i in range(0, len(f), 3):
                    p = f[i].encode()
                    out.write(f[i + 1].to_bytes(4, "big") + f[i + 2] + bytes([len(p)])
                              + p + bytes(_REC - 37 - len(p)))
            nk = m.get(ota.M_NEXT_KEY)
            flash.write(CHECKED, ("%d %d %d %s" % (m[ota.M_VERSION], m[ota.M_CHUNK], len(f) // 3,
                                                   nk.hex() if nk else "-")).encode())
            self.log("ota-checked version=%d files=%d" % (m[ota.M_VERSION], len(f) // 3))
        except ota.FirmwareError:
            raise
        except errors.TLError as e:  # a bad signature, bad CBOR
            self.refuse(rid, e.reason)

    def install(self, m, rid):
        """Fetch, check and swap in the checked release `m` (version, chunk,
        next key, file count); returns only if refused or given up (a swap
        resets the board)."""
        a = state()[0]
        v = str(m[0])
        target = "fw/" + v
        flash.ensure_dir("fw")
        for n in flash.listdir("fw"):  # leftovers of older versions and updates
            if n not in (a, state()[1], "stage", v):
                rmtree("fw/" + n)
        gc.collect()
        self.log("ota-phase 3 version=%s rid=%s free=%d" % (v, rid.hex(), gc.mem_free()))
        if not self._whole(target, m):
            self._fetch(m, rid)
        self._swap(m, rid, a, target)

    def refuse(self, rid, why):
        self.log("ota-refused reason=%s rid=%s" % (why, rid.hex()))
        # the node looks at no announcement for a while (a flood of forged
        # ones costs at most one reset per hold)
        flash.write(HOLD, str(int(self.cfg.get("ota_hold_s", 60))).encode())
        if why == "unreachable":  # retried when the release is published again
            flash.write(LATER, rid)
        else:
            remember(rid)
            for p in (MANIFEST, CHECKED, FILES):
                flash.remove(p)
            rmtree(STAGE)
        flash.remove(OFFER)

    def _whole(self, folder, m):
        for i in range(m[3]):
            name, size, digest = entry(i)
            p = folder + "/" + name
            if _size(p) != size or _hash(p, size).digest() != digest:
                return False
        return True

    def _fetch(self, m, rid):
        chunk, n = m[1], m[3]
        need = 0
        for i in range(n):
            name, size, _ = entry(i)
            have = _size(STAGE + "/" + name)
            need += size - (have if 0 <= have <= size else 0)
        q = self.cfg.get("flash_quota")  # bytes the firmware may use of the flash
        free = q - used(".") if q is not None else (
            self.board.flash_free() if hasattr(self.board, "flash_free") else None)
        if free is not None and need > free:
            raise ota.FirmwareError("no-space")
        flash.ensure_dir(STAGE)
        for i in range(n):
            name, size, digest = entry(i)
            path = STAGE + "/" + name
            d = STAGE
            for part in name.split("/")[:-1]:
                d += "/" + part
                flash.ensure_dir(d)
            have = _size(path)
            if have > size or (have % chunk and have != size):
                flash.remove(path)
                have = -1
            if have < 0:
                open(path, "wb").close()
                have = 0
            h = _hash(path, have)  # resumed: what is staged already
            if have:
                self.log("ota-resume file=%d offset=%d" % (i, have))
            c = (have + chunk - 1) // chunk  # a whole chunk or the whole file is staged
            while c * chunk < size:
                want = min(chunk, size - c * chunk)
                data = self._chunk(rid, i, c, want)
                if free is not None:  # never past the quota, whatever was measured
                    free -= want
                    if free < 0:
                        raise ota.FirmwareError("no-space")
                with open(path, "ab") as fh:
                    fh.write(data)
                h.update(data)
                data = self._got = None
                c += 1
            if h.digest() != digest:
                flash.remove(path)
                raise ota.FirmwareError("bad-hash")
            gc.collect()
            self.log("ota-file %d/%d %s free=%d" % (i + 1, n, name, gc.mem_free()))

    def fetch(self, topic):
        """The retained message on `topic` (one subscription at a time; a
        reconnect between tries): FirmwareError unreachable after ATTEMPTS."""
        cl = self.client
        self._want = topic.encode()
        for _ in range(ATTEMPTS):
            self._got = None
            if cl.ensure_connected(_WAIT_MS):
                cl.subscribe(topic, 1)
                t = time.ticks_add(time.ticks_ms(), _WAIT_MS)
                while self._got is None and time.ticks_diff(t, time.ticks_ms()) > 0:
                    cl.check_msg(200)
                try:
                    cl.unsubscribe(topic)
                except OSError:
                    pass
            if self._got is not None:
                msg, self._got = self._got, None
                return msg
        raise ota.FirmwareError("unreachable")

    def _chunk(self, rid, i, c, want):
        topic = ota.chunk_topic(self.announce, rid, i, c)
        for _ in range(ATTEMPTS):
            msg = self.fetch(topic)
            try:
                return ota.open_chunk(msg, rid, i, c, want)
            except ota.FirmwareError as e:  # logged, and asked for again
                self.log("ota-chunk-refused reason=%s file=%d chunk=%d" % (e.detail, i, c))
            except errors.TLError:
                self.log("ota-chunk-refused reason=bad-chunk file=%d chunk=%d" % (i, c))
            msg = self._got = None
            time.sleep_ms(_RETRY_MS)
        raise ota.FirmwareError("unreachable")

    def _swap(self, m, rid, a, target):
        """A power cut between any two steps leaves a bootable whole version:
        the state file (step 5) is the one switch, and it names either the old
        version (still in place) or the new one (renamed whole at step 3)."""
        v = str(m[0])
        self._step(1)  # every file staged and checked
        if flash.exists(STAGE + "/firmware"):
            if flash.exists(target):
                rmtree(target)
            self._step(2)
            os.rename(STAGE, target)
        self._step(3)
        nk = m[2]
        if nk is not None:  # the current key signed the next one
            flash.write(KEYS, nk)
        self._step(4)
        flash.write(STATE, ("%s %s u 0" % (v, a)).encode())
        self._step(5)
        flash.write(FLOOR, v.encode())
        remember(rid)
        self._step(6)
        for p in (OFFER, MANIFEST, CHECKED, FILES):
            flash.remove(p)
        self._step(7)
        self.log("ota-swapped version=%s previous=%s" % (v, a))
        self.board.reset()


def entry(i):
    """(path, size, sha256) of file i of the checked release (ota/files)."""
    with open(FILES, "rb") as f:
        f.seek(i * _REC)
        r = f.read(_REC)
    return r[37:37 + r[36]].decode(), int.from_bytes(r[:4], "big"), r[4:36]


def _hash(path, n):
    """SHA-256 (the hash object) of the first n bytes of the file, read in small blocks."""
    h = sha256()
    buf = bytearray(_BLOCK)
    with open(path, "rb") as f:
        while n > 0:
            k = f.readinto(buf)
            if not k:
                break
            h.update(memoryview(buf)[:min(k, n)])
            n -= k
    return h


def _forget(*names):
    # drop modules between the phases: the next one wants their heap
    for name in names:
        pkg, _, attr = name.rpartition(".")
        if sys.modules.pop(name, None) is not None and pkg in sys.modules:
            sys.modules[pkg].__dict__.pop(attr, None)


def _link(u, cfg):
    from firmware import startup, wallet
    from shared import topics

    u.announce = topics.firmware(cfg["domain"], cfg.get("board", "unix"))
    login = startup.login(cfg, wallet.load_or_create())
    # the password is all this phase needs of the wallet and of P-256: their
    # code goes before the MQTT client and its messages need the heap
    _forget("firmware.wallet", "shared.p256", "shared.hmacsha256", "shared.tx", "shared.topics")
    gc.collect()
    u.client = startup.client(cfg, *login)
    u.client.set_callback(u._on_message)


def main(log):
    """One phase of the update of the offered release (firmware/startup.py),
    then a reset: each phase gets a whole fresh heap (a .mpy module's
    interned names stay for good once loaded, so dropping modules between
    phases would not give it back).

        1 fetch  the signed manifest into ota/manifest
        2 check  signature, board, ABI, version, protocol: the file list
                 into ota/files, the rest into ota/checked
        3 fetch the files, check them, swap (firmware/otaboot.py boots it)

    A refusal or a give-up also ends in a reset, into the node."""
    from firmware import startup

    cfg = startup.load_config()
    board = startup.load_board(cfg)
    u = Updater(board, cfg, log)
    rid = bytes(flash.read(OFFER) or b"")[:ota.RID_LEN]
    try:
        if ota.release_id(flash.read(MANIFEST) or b"") != rid:
            flash.remove(CHECKED)
            rmtree(STAGE)  # what another release left: never mixed into this one
            board.network_up()
            _link(u, cfg)
            gc.collect()
            log("ota-phase 1 free=%d" % gc.mem_free())
            try:
                signed = u.fetch(ota.manifest_topic(u.announce, rid))
            finally:
                u.client.disconnect()
            if ota.release_id(signed) != rid:
                raise ota.FirmwareError("other-release")
            flash.write(MANIFEST, signed)
        elif not flash.exists(CHECKED):
            u.check(flash.read(MANIFEST), rid)
        else:
            c = flash.read(CHECKED).split()
            m = (int(c[0]), int(c[1]), bytes.fromhex(c[3]) if c[3] != b"-" else None, int(c[2]))
            board.network_up()
            _link(u, cfg)
            try:
                u.install(m, rid)
            finally:
                u.client.disconnect()
    except ota.FirmwareError as e:
        u.refuse(rid, e.detail)
    except (OSError, MemoryError) as e:  # the board's trouble, not the release's
        log("ota-failed error=%r" % (e,))
        u.refuse(rid, "unreachable")
    board.reset()
