"""Signed firmware releases (docs/OTA.md), one code base for the board's
updater (firmware/ota.py) and the host (tools/ota.py, gateway/firmware/).

A release is a manifest, a canonical CBOR map with integer keys, signed as a
COSE_Sign1 (ES256, protected kid = the signer's id SHA-256(pubkey)[:16]):

    1 board     text   the board profile it is built for ("unix", "esp32", "rp2040")
    2 abi       text   MicroPython .mpy ABI "<version>.<sub-version>" ("6.3")
    3 version   int    >= 1, strictly increasing per board
    4 protocol  int    the minimum wire protocol version the domain must speak
    5 files     array  path text, size int, sha256 bstr(32), path, size, ...
                       (flat, three items per file: a board holds no list per file)
    6 chunk     int    bytes per chunk of the MQTT download
    7 next key  bstr   optional: the key that signs the next releases (rotation)

The release id (rid) is SHA-256(signed manifest)[:8]. Topics, all retained,
under A = tl/<domain>/fw/<board> (shared/topics.py firmware):

    A                          the announcement: CBOR [rid, version, signer id]
                               (a hint, ~40 bytes: a node checks it for the
                               price of a receipt; the updater checks the rest)
    A/<rid hex>                the signed manifest
    A/<rid hex>/<file>/<chunk> CBOR [rid, file index, chunk index, bytes]

A board takes one message at a time (subscribe, receive, unsubscribe), so a
download is resumable and its heap is one chunk.

Only the updater loads this module (the node loop pays nothing for it), and
it holds only what the board needs: building releases and chunks is
shared/ota_host.py's (reachable here too, loaded on first use).
"""
from hashlib import sha256

from shared import cbor, cose, errors, lazy

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


M_BOARD = const(1)
M_ABI = const(2)
M_VERSION = const(3)
M_PROTOCOL = const(4)
M_FILES = const(5)
M_CHUNK = const(6)
M_NEXT_KEY = const(7)
PROTOCOL = const(1)  # this code base's wire protocol version
RID_LEN = const(8)
_MAX_FILES = const(64)
_MAX_FILE = const(262144)
_MIN_CHUNK = const(256)
_MAX_CHUNK = const(2048)  # + header and topic: under the board's 4 KiB MQTT packets


class FirmwareError(errors.TLError):
    """A release, chunk or file the board refuses; detail names why."""

    reason = "bad-firmware"


def release_id(signed):
    return sha256(signed).digest()[:RID_LEN]


def abi_of(mpy):
    """The .mpy ABI of sys.implementation._mpy: "<version>.<sub-version>"."""
    return "%d.%d" % (mpy & 0xFF, mpy >> 8 & 3)


def _int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_manifest(m):
    """The manifest's structure (not its signature, not its fit to a board).
    A path is lowercase a-z 0-9 _ - . / under shared/, firmware/ or boards/,
    names a .mpy file and has no empty or dot-led part ('..')."""
    bad = FirmwareError
    if not isinstance(m, dict) or not all(_int(k, M_BOARD, M_NEXT_KEY) for k in m):
        raise bad("bad-manifest")
    if not (isinstance(m.get(M_BOARD), str) and isinstance(m.get(M_ABI), str)
            and _int(m.get(M_VERSION), 1, 0x7FFFFFFF) and _int(m.get(M_PROTOCOL), 1, 0xFFFF)
            and _int(m.get(M_CHUNK), _MIN_CHUNK, _MAX_CHUNK)):
        raise bad("bad-manifest")
    nk = m.get(M_NEXT_KEY)
    if nk is not None and (not isinstance(nk, bytes) or len(nk) != 33):
        raise bad("bad-next-key")
    files = m.get(M_FILES)
    if not isinstance(files, list) or not 0 < len(files) <= 3 * _MAX_FILES or len(files) % 3:
        raise bad("bad-manifest")
    seen = set()
    for i in range(0, len(files), 3):
        if not (_int(files[i + 1], 0, _MAX_FILE) and isinstance(files[i + 2], bytes)
                and len(files[i + 2]) == 32):
            raise bad("bad-manifest")
        p = files[i]
        if not isinstance(p, str) or not 0 < len(p) <= 64 or p in seen:
            raise bad("bad-path")
        for ch in p:
            if not ("a" <= ch <= "z" or "0" <= ch <= "9" or ch in "_-./"):
                raise bad("bad-path")
        parts = p.split("/")
        if parts[0] not in ("shared", "firmware", "boards") or len(parts) < 2 \
                or not p.endswith(".mpy") or [s for s in parts if not s or s[0] == "."]:
            raise bad("bad-path")
        seen.add(p)
    return m


def open_release(signed, keys):
    """The manifest of a signed release whose signature checks under the
    pinned key (of `keys`, SEC1 bytes) its kid names: FirmwareError
    unknown-key, SignatureError, or a structural error."""
    s1 = cose.parse1(signed, False)
    for k in keys:
        if sha256(k).digest()[:16] == s1.kid:
            cose.check1(k, s1)
            return check_manifest(cbor.loads(s1.payload))
    raise FirmwareError("unknown-key")


def check_fit(m, board, abi, floor, protocol=PROTOCOL):
    """Refuse a release for another board or ABI, at or below `floor` (the
    highest version this board ever installed or tried: no downgrade, no
    replay), or one that needs a newer protocol than the domain speaks."""
    if m[M_BOARD] != board:
        raise FirmwareError("wrong-board")
    if m[M_ABI] != abi:
        raise FirmwareError("wrong-abi")
    if m[M_VERSION] <= floor:
        raise FirmwareError("downgrade")
    if m[M_PROTOCOL] > protocol:
        raise FirmwareError("protocol")


def manifest_topic(announce, rid):
    return announce + "/" + rid.hex()


def chunk_topic(announce, rid, index, n):
    return "%s/%s/%d/%d" % (announce, rid.hex(), index, n)


def open_chunk(msg, rid, index, n, want):
    """The bytes (a view) of chunk `n` of file `index` of release `rid`,
    `want` long: FirmwareError other-release, bad-chunk, truncated, oversized."""
    c = cbor.loads(msg, copy=False)
    if not isinstance(c, list) or len(c) != 4 or not isinstance(c[3], (bytes, memoryview)):
        raise FirmwareError("bad-chunk")
    if bytes(c[0]) != rid:
        raise FirmwareError("other-release")
    if c[1] != index or c[2] != n:
        raise FirmwareError("bad-chunk")
    d = len(c[3])
    if d != want:
        raise FirmwareError("truncated" if d < want else "oversized")
    return c[3]


__getattr__ = lazy("shared.ota_host", globals())
