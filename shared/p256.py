"""ECDSA over NIST P-256 with SHA-256 (COSE ES256), pure Python that runs
unchanged on CPython and MicroPython. Notes on the choices are in comments."""

# API: keygen, public_key, compress, decompress, sign, sign_digest, verify,
# verify_digest.
# - Private key: 32-byte big-endian scalar in [1, n-1]. Public key: SEC1,
#   compressed (33 bytes, the wire form) or uncompressed (65 bytes).
# - Signature: raw r||s (64 bytes, COSE). k is RFC 6979 deterministic
#   (HMAC-SHA-256 DRBG), so a weak board RNG cannot leak the key.
# - Low s: sign returns s <= n/2 (if the RFC 6979 computation gives s > n/2,
#   it returns n - s, which signs the same message: RFC 6979's own "sample"
#   vector is such a case). (r, s) and (r, n - s) both verify in plain ECDSA,
#   so a third party could turn one signed message into another with a
#   different transaction id; the wire takes only the low-s one
#   (docs/PROTOCOL.md). verify here is plain ECDSA and accepts both: the
#   wire's rule is checked by shared/cose.py (check1), for every backend.
# - verify/verify_digest return False, never raise, on any malformed input.
#   public_key, compress, decompress and sign raise errors.KeyFormatError
#   with detail "type", "length", "prefix", "range" or "not-on-curve".
# - Not constant-time (Python big ints never are): the threat model is a
#   network attacker, not one on the board's power rail.
#
# Memory and speed (MicroPython, 64 KiB heap): each big int is a 40-110 byte
# heap object, so precomputed points live in ONE bytearray (64 bytes per
# affine point) and are turned into ints on use. Points are Jacobian (a = -3
# doubling). k*G is a Lim-Lee comb (_W teeth, _D columns, 2**_W - 1 points,
# 192 bytes) built at import. verify's u1*G + u2*Q is Shamir's trick as the
# same comb walk: 2 teeth, 256 columns, over the 3-point table (G, Q, G+Q)
# (192 bytes, one inversion), i.e. the 512-bit scalar u2 * 2**256 + u1: 256
# doublings and ~192 additions, no other table. The walk (_comb) does its
# doublings and additions inline: MicroPython puts the frame of a call with
# more than ~10 locals and stack slots on the heap, and a helper per step also
# costs a tuple; about ten big ints are alive at once. RFC 6979 nonces are a plain loop, not a generator
# (a generator's frame lives on the heap). Inverses use extended Euclid: ~6x
# faster than pow(a, p - 2, p) on MicroPython. Larger _W signs faster but
# costs 64 * 2**_W bytes of heap and a slower import: _W = 2 because a board
# signs one reading every few seconds but checks every receipt in the same
# 64 KiB (4 teeth cost 768 bytes more for good, bench/README.md). The module holds few
# names (each costs a board heap for good): the HMAC it needs lives here too.

import os
from hashlib import sha256

from shared import errors

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_P = const(0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF)
_N = const(0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551)
_B = const(0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B)
_GX = const(0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296)
_GY = const(0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)
_SQRT = const(0x3FFFFFFFC0000000400000000000000000000000400000000000000000000000)  # (p+1)/4
_W = const(2)
_D = const(128)  # _W * _D >= 256; W=2: 192 bytes of table (W=4: 960 B, signs ~1.5x faster)

_BYTES = (bytes, bytearray)


def _inv(v, n):
    r0, r1, s0, s1 = v % n, n, 1, 0
    while r1:
        q, r = divmod(r0, r1)
        r0, r1, s0, s1 = r1, r, s1, s0 - q * s1
    return s0 % n


# Jacobian (X, Y, Z) is the affine point (X/Z^2, Y/Z^3); Z == 0 is infinity.

def _dbl(x, y, z):
    if not z:
        return 0, 0, 0
    d = z * z % _P
    g = y * y % _P
    b = x * g % _P
    a = 3 * (x - d) * (x + d) % _P
    x3 = (a * a - 8 * b) % _P
    return x3, (a * (4 * b - x3) - 8 * g * g) % _P, 2 * y * z % _P


def _affine(x, y, z):
    zi = _inv(z, _P)
    zi2 = zi * zi % _P
    return x * zi2 % _P, y * zi2 % _P * zi % _P


def _get(tbl, i):
    o = 64 * i - 64
    return int.from_bytes(tbl[o:o + 32], "big"), int.from_bytes(tbl[o + 32:o + 64], "big")


def _put(tbl, i, x, y):
    tbl[64 * i - 64:64 * i] = x.to_bytes(32, "big") + y.to_bytes(32, "big")


def _table(x, y, w, d):
    # Comb table: entry i (1 <= i < 2**w, at 64*(i-1)) is the sum of 2**(t*d) * (x, y)
    # over the set bits t of i, affine. Level t adds B_t = 2**(t*d) * (x, y) to the
    # entries below it with affine additions that share one inversion (Montgomery's
    # trick; the prefix products wait in the still-empty slots, not in a list).
    # No addend is +-B_t: the scalars involved are distinct and below n/2.
    tbl = bytearray(64 * ((1 << w) - 1))
    for t in range(w):
        top = 1 << t
        _put(tbl, top, x, y)
        acc = 1
        for i in range(1, top):
            acc = acc * (x - _get(tbl, i)[0]) % _P
            _put(tbl, top + i, acc, 0)
        inv = _inv(acc, _P)
        for i in range(top - 1, 0, -1):
            xi, yi = _get(tbl, i)
            lam = (y - yi) * inv * (_get(tbl, top + i - 1)[0] if i > 1 else 1) % _P
            inv = inv * (x - xi) % _P
            x3 = (lam * lam - x - xi) % _P
            _put(tbl, top + i, x3, (lam * (xi - x3) - yi) % _P)
        if t < w - 1:
            z = 1
            for _ in range(d):
                x, y, z = _dbl(x, y, z)
            x, y = _affine(x, y, z)
    return tbl


def _comb(kb, tbl, w, d):
    # The comb walk: Jacobian sum of kb * P for tbl = the comb table of P (w teeth,
    # d columns) and kb the scalar as big-endian bytes (8 * len(kb) >= w * d).
    # Column j (d - 1 down to 0): double, then add entry i made of the bits
    # j + t * d, t = w - 1 .. 0. Doubling (a = -3) and mixed addition are inline:
    # no call frames (MicroPython puts large ones on the heap), no tuple per step,
    # about ten big ints alive at once. `% _P + 0`: MicroPython's remainder keeps
    # the digit array of the dividend (a 512-bit product: 3 heap blocks), the sum
    # one of its own size (2 blocks): the walk's live ints take a quarter less heap
    # (a board's peak during a receipt check).
    x = y = z = 0
    top = len(kb) - 1
    for j in range(d - 1, -1, -1):
        if z:
            t = z * z % _P + 0
            a = y * y % _P + 0
            c = x * a % _P + 0
            t = 3 * (x - t) * (x + t) % _P + 0
            z = 2 * y * z % _P + 0
            x = (t * t - 8 * c) % _P + 0
            y = (t * (4 * c - x) - 8 * a * a) % _P + 0
        i = 0
        b = j + (w - 1) * d
        while b >= 0:
            i = (i << 1) | ((kb[top - (b >> 3)] >> (b & 7)) & 1)
            b -= d
        if not i:
            continue
        a, c = _get(tbl, i)
        if not z:
            x, y, z = a, c, 1
            continue
        t = z * z % _P + 0
        a = (a * t - x) % _P + 0  # h
        c = (c * t % _P * z - y) % _P + 0  # r
        if not a:  # the entry is +-(x, y, z): a doubling or infinity (only by adversarial input)
            x, y, z = _dbl(x, y, z) if not c else (0, 0, 0)
            continue
        t = a * a % _P + 0  # h^2
        x = x * t % _P + 0  # v = x1 * h^2
        t = a * t % _P + 0  # h^3
        z = z * a % _P + 0
        a = (c * c - t - 2 * x) % _P + 0  # x3
        y = (c * (x - a) - y * t) % _P + 0
        x = a
    return x, y, z


_TABLE = _table(_GX, _GY, _W, _D)


def _scalar(key):
    if not isinstance(key, _BYTES):
        raise errors.KeyFormatError("type")
    if len(key) != 32:
        raise errors.KeyFormatError("length")
    d = int.from_bytes(key, "big")
    if not 0 < d < _N:
        raise errors.KeyFormatError("range")
    return d


def _point(key):
    # SEC1 public key (33 or 65 bytes) -> affine (x, y) on the curve.
    if not isinstance(key, _BYTES):
        raise errors.KeyFormatError("type")
    n = len(key)
    if n != 33 and n != 65:
        raise errors.KeyFormatError("length")
    if key[0] != (4 if n == 65 else (key[0] & 1) | 2):
        raise errors.KeyFormatError("prefix")
    x = int.from_bytes(key[1:33], "big")
    y = int.from_bytes(key[33:], "big") if n == 65 else 0
    if x >= _P or y >= _P:
        raise errors.KeyFormatError("range")
    rhs = (x * x * x - 3 * x + _B) % _P
    if n == 33:
        y = pow(rhs, _SQRT, _P)
        if (y ^ key[0]) & 1:
            y = _P - y
    if y * y % _P != rhs:
        raise errors.KeyFormatError("not-on-curve")
    return x, y


def _encode(x, y, compressed):
    if compressed:
        return bytes((2 | (y & 1),)) + x.to_bytes(32, "big")
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def compress(key):
    """Any SEC1 public key -> 33-byte compressed form (KeyFormatError if bad)."""
    return _encode(*_point(key), True)


def decompress(key):
    """Any SEC1 public key -> 65-byte uncompressed form (KeyFormatError if bad)."""
    return _encode(*_point(key), False)


# HMAC-SHA-256 (RFC 2104) on hashlib.sha256, for the RFC 6979 nonces
# (MicroPython has no hmac module; shared/hmacsha256.py re-exports it). The
# pads are XORed as one 512-bit integer: on MicroPython much cheaper than a
# 64-step byte loop.
_ONES = const(0x0101010101010101010101010101010101010101010101010101010101010101
              * ((1 << 256) + 1))  # 64 bytes of 0x01
_IPAD = const(0x36 * _ONES)
_OPAD = const(0x5C * _ONES)


def hmac_sha256(key, msg):
    """HMAC-SHA-256 of `msg` under `key` (both bytes-like); 32 bytes."""
    if len(key) > 64:
        key = sha256(key).digest()
    k = int.from_bytes(bytes(key) + bytes(64 - len(key)), "big")
    inner = sha256((k ^ _IPAD).to_bytes(64, "big"))
    inner.update(msg)
    outer = sha256((k ^ _OPAD).to_bytes(64, "big"))
    outer.update(inner.digest())
    return outer.digest()


def public_key(private_key, compressed=True):
    """SEC1 public key (33 bytes, or 65 if not compressed) of a private key."""
    _scalar(private_key)
    return _encode(*_affine(*_comb(private_key, _TABLE, _W, _D)), compressed)


def keygen():
    """New key pair from os.urandom: (32-byte private, 33-byte compressed public)."""
    while True:
        priv = os.urandom(32)
        if 0 < int.from_bytes(priv, "big") < _N:
            return priv, public_key(priv)


def sign_digest(private_key, digest):
    """r||s (64 bytes, s <= n/2) over a 32-byte SHA-256 digest, RFC 6979 k."""
    d = _scalar(private_key)
    if not isinstance(digest, _BYTES) or len(digest) != 32:
        raise ValueError("digest must be 32 bytes")
    e = int.from_bytes(digest, "big")
    # RFC 6979 section 3.2 (qlen = hlen = 256): each candidate k is a fresh V.
    # Inline rather than a generator: a generator's frame lives on the heap.
    xh = d.to_bytes(32, "big") + (e % _N).to_bytes(32, "big")
    v = b"\x01" * 32
    k = hmac_sha256(bytes(32), v + b"\x00" + xh)
    v = hmac_sha256(k, v)
    k = hmac_sha256(k, v + b"\x01" + xh)
    v = hmac_sha256(k, v)
    while True:
        v = hmac_sha256(k, v)
        t = int.from_bytes(v, "big")
        if 0 < t < _N:
            x, _, z = _comb(v, _TABLE, _W, _D)
            z = _inv(z, _P)
            r = x * z * z % _P % _N
            s = _inv(t, _N) * (e + r * d) % _N
            if r and s:
                if s + s > _N:  # low s (see the notes at the top); no n/2 constant on the heap
                    s = _N - s
                return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        k = hmac_sha256(k, v + b"\x00")
        v = hmac_sha256(k, v)


def sign(private_key, message):
    """ES256 signature r||s (64 bytes, s <= n/2) of message (hashed here with SHA-256)."""
    return sign_digest(private_key, sha256(message).digest())


def verify_digest(public_key, digest, signature):
    """True iff signature (64-byte r||s; also a memoryview, as shared/cose.check1
    passes a view into the received message: no copy) is valid for the 32-byte digest."""
    if not (isinstance(signature, (bytes, bytearray, memoryview)) and len(signature) == 64
            and isinstance(digest, _BYTES) and len(digest) == 32):
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < _N and 0 < s < _N):
        return False
    try:
        qx, qy = _point(public_key)
    except errors.KeyFormatError:
        return False
    s = _inv(s, _N)
    e = int.from_bytes(digest, "big") * s % _N  # u1
    s = r * s % _N  # u2
    if qx == _GX:  # Q = +-G (private key 1 or n - 1): u1*G + u2*Q = (u1 +- u2)*G
        kb = ((e + s if qy == _GY else e - s) % _N).to_bytes(32, "big")
        tbl, w, d = _TABLE, _W, _D
    else:  # Shamir's trick: the comb walk of u2 * 2**256 + u1 over (G, Q, G + Q)
        kb = s.to_bytes(32, "big") + e.to_bytes(32, "big")
        tbl = bytearray(192)
        _put(tbl, 1, _GX, _GY)
        _put(tbl, 2, qx, qy)
        e = (qy - _GY) * _inv(qx - _GX, _P) % _P
        s = (e * e - _GX - qx) % _P
        _put(tbl, 3, s, (e * (_GX - s) - _GY) % _P)
        w, d = 2, 256
    qx = qy = e = s = 0  # not needed by the walk: on a board each is ~100 bytes of heap
    x, y, z = _comb(kb, tbl, w, d)
    if not z:
        return False
    # x(R) mod n == r, without inverting Z: X == r' * Z^2 for r' in {r, r + n} below p.
    zz = z * z % _P
    return x == r * zz % _P or (r + _N < _P and x == (r + _N) * zz % _P)


def verify(public_key, message, signature):
    """True iff signature (64-byte r||s) is a valid ES256 signature of message
    under the SEC1 public key (33 or 65 bytes); False for any malformed input."""
    return isinstance(message, _BYTES) and verify_digest(
        public_key, sha256(message).digest(), signature)
