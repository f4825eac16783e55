"""Canonical CBOR (RFC 8949 s4.2.1) encoder and strict decoder for the
ThingLedger wire; one code base for CPython and MicroPython."""

# Owns the bytes of every signed message, transaction and block header.
# (Reference notes are comments, not docstrings: comments cost no heap when
# MicroPython compiles this file from source.)
#
# Subset, everything else refused: ints -2**64 .. 2**64-1, byte strings,
# text strings, definite arrays, definite maps with int/str/bytes keys,
# false/true/null, tags (`Tag`; the decoder accepts tag 18 = COSE_Sign1 only).
#
# dumps(obj): shortest heads, definite lengths, map keys sorted bytewise by
# their encodings. errors.EncodeError details:
#   unsupported  float or other type     int-range  int/tag outside 64 bits
#   bad-key      map key not int/str/bytes (bool keys included)
#   too-deep     more than max_depth arrays/maps/tags open
#   bad-utf8     str that is not valid UTF-8 (lone surrogate)
#
# loads(data): accepts exactly what dumps produces, so dumps(loads(b)) == b.
# errors.TooLarge("too-large"): input longer than max_size, refused unread.
# errors.DecodeError details:
#   truncated      input ends inside a head or before a container is
#                  complete, or a declared byte/text length or item count is
#                  larger than the input that remains (checked before
#                  anything is allocated)
#   trailing       bytes after the top-level item
#   non-canonical  non-shortest head; map keys not strictly increasing
#   indefinite     additional info 31 (indefinite length, stray break)
#   too-deep       more than max_depth arrays/maps/tags open at once
#   duplicate-key  a map key seen twice
#   unsupported    floats, simple values other than false/true/null,
#                  undefined, reserved additional info 28-30, tags other
#                  than 18, map keys that are not int/str/bytes
#   bad-utf8       text that is not strict UTF-8 (checked by hand where the
#                  interpreter's decoder is lax, as MicroPython's is)
#   bad-type       data is not bytes, bytearray or memoryview
#
# The decoder walks a memoryview by index; only the bytes/str values it
# returns are copied. Recursion is bounded by max_depth.

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from shared import errors

MAX_SIZE = const(4096)
MAX_DEPTH = const(16)

_MT_UINT = const(0x00)
_MT_NINT = const(0x20)
_MT_BYTES = const(0x40)
_MT_TEXT = const(0x60)
_MT_ARRAY = const(0x80)
_MT_MAP = const(0xA0)
_MT_TAG = const(0xC0)
_FALSE = const(0xF4)
_TRUE = const(0xF5)
_NULL = const(0xF6)
_TAG_COSE_SIGN1 = const(18)

# Smallest argument allowed after additional info 24, 25, 26, 27.
_MIN_ARG = (24, 0x100, 0x10000, 0x100000000)


# True when the interpreter's UTF-8 decoder refuses overlongs, surrogates
# and code points above U+10FFFF (CPython yes, MicroPython no).
def _strict_utf8():
    for bad in (b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"):
        try:
            str(bad, "utf-8")
        except UnicodeError:
            continue
        return False
    return True


_STRICT_UTF8 = _strict_utf8()


class Tag:
    """A tagged item: `tag` number and its `value`."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    __hash__ = None

    def __repr__(self):
        return "Tag(%r, %r)" % (self.tag, self.value)


# True when buf[i:end] is strict UTF-8 (RFC 3629): no overlongs, surrogates,
# code points above U+10FFFF or cut sequences.
def utf8_ok(buf, i, end):
    while i < end:
        c = buf[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xC2 or c > 0xF4:
            return False
        if c < 0xE0:
            n, lo, hi = 1, 0x80, 0xBF
        elif c < 0xF0:
            n = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        else:
            n = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        if end - i <= n:
            return False
        c = buf[i + 1]
        if c < lo or c > hi:
            return False
        for j in range(i + 2, i + n + 1):
            if buf[j] & 0xC0 != 0x80:
                return False
        i += n + 1
    return True


# ---------------------------------------------------------------- encoding


def _head(buf, mt, n):
    if n < 24:
        buf.append(mt | n)
    elif n < 0x100:
        buf.append(mt | 24)
        buf.append(n)
    elif n < 0x10000:
        buf.append(mt | 25)
        buf.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        buf.append(mt | 26)
        buf.extend(n.to_bytes(4, "big"))
    elif not n >> 64:
        buf.append(mt | 27)
        buf.extend(n.to_bytes(8, "big"))
    else:
        raise errors.EncodeError("int-range")


# x with len() counting bytes: CPython views of other formats are cast.
def _byte_view(x):
    if isinstance(x, memoryview) and getattr(x, "format", "B") != "B":
        x = x.cast("B")
    return x


def _enc_key(k):
    if isinstance(k, bool) or not isinstance(k, (int, str, bytes)):
        raise errors.EncodeError("bad-key")
    kb = bytearray()
    _enc(kb, k, 0)
    return bytes(kb)


def _first(pair):
    return pair[0]


def _enc(buf, x, depth):
    if x is None:
        buf.append(_NULL)
    elif x is True:
        buf.append(_TRUE)
    elif x is False:
        buf.append(_FALSE)
    elif isinstance(x, int):
        if x >= 0:
            _head(buf, _MT_UINT, x)
        else:
            _head(buf, _MT_NINT, -1 - x)
    elif isinstance(x, str):
        try:
            b = x.encode("utf-8")
        except UnicodeError:  # CPython: lone surrogate
            raise errors.EncodeError("bad-utf8") from None
        if not _STRICT_UTF8 and not utf8_ok(b, 0, len(b)):
            raise errors.EncodeError("bad-utf8")
        _head(buf, _MT_TEXT, len(b))
        buf.extend(b)
    elif isinstance(x, (bytes, bytearray, memoryview)):
        x = _byte_view(x)
        _head(buf, _MT_BYTES, len(x))
        buf.extend(x)
    elif isinstance(x, (list, tuple)):
        if depth <= 0:
            raise errors.EncodeError("too-deep")
        _head(buf, _MT_ARRAY, len(x))
        for v in x:
            _enc(buf, v, depth - 1)
    elif isinstance(x, dict):
        if depth <= 0:
            raise errors.EncodeError("too-deep")
        pairs = [(_enc_key(k), v) for k, v in x.items()]
        pairs.sort(key=_first)
        _head(buf, _MT_MAP, len(pairs))
        for kb, v in pairs:
            buf.extend(kb)
            _enc(buf, v, depth - 1)
    elif isinstance(x, Tag):
        t = x.tag
        if isinstance(t, bool) or not isinstance(t, int):
            raise errors.EncodeError("unsupported")
        if t < 0:
            raise errors.EncodeError("int-range")
        if depth <= 0:
            raise errors.EncodeError("too-deep")
        _head(buf, _MT_TAG, t)
        _enc(buf, x.value, depth - 1)
    else:
        raise errors.EncodeError("unsupported")


def dumps(obj, max_depth=MAX_DEPTH):
    """Canonical CBOR bytes of obj."""
    buf = bytearray()
    _enc(buf, obj, max_depth)
    return bytes(buf)


# ---------------------------------------------------------------- decoding


def _fail(detail):
    return errors.DecodeError(detail)


# True when mv[a:ae] sorts strictly before mv[b:be] (bytewise).
def _before(mv, a, ae, b, be):
    while a < ae and b < be:
        x = mv[a]
        y = mv[b]
        if x != y:
            return x < y
        a += 1
        b += 1
    return a == ae and b < be


# Decode one item at mv[i]; returns (value, index after it).
def _item(mv, i, end, depth):
    if i >= end:
        raise _fail("truncated")
    ib = mv[i]
    i += 1
    mt = ib & 0xE0
    ai = ib & 0x1F
    if mt == 0xE0:
        if ai == 20:
            return False, i
        if ai == 21:
            return True, i
        if ai == 22:
            return None, i
        if ai == 31:
            raise _fail("indefinite")
        raise _fail("unsupported")
    if ai < 24:
        n = ai
    elif ai < 28:
        k = 1 << (ai - 24)
        if end - i < k:
            raise _fail("truncated")
        n = 0
        for j in range(i, i + k):
            n = (n << 8) | mv[j]
        i += k
        if n < _MIN_ARG[ai - 24]:
            raise _fail("non-canonical")
    elif ai == 31:
        raise _fail("indefinite")
    else:
        raise _fail("unsupported")

    if mt == _MT_UINT:
        return n, i
    if mt == _MT_NINT:
        return -1 - n, i
    if mt == _MT_BYTES or mt == _MT_TEXT:
        if n > end - i:
            raise _fail("truncated")
        j = i + n
        if mt == _MT_BYTES:
            return bytes(mv[i:j]), j
        if not _STRICT_UTF8 and not utf8_ok(mv, i, j):
            raise _fail("bad-utf8")
        try:
            return str(mv[i:j], "utf-8"), j
        except UnicodeError:
            raise _fail("bad-utf8") from None
    if mt == _MT_TAG and n != _TAG_COSE_SIGN1:
        raise _fail("unsupported")
    if depth <= 0:
        raise _fail("too-deep")
    depth -= 1
    if mt == _MT_ARRAY:
        if n > end - i:  # each item takes at least one byte
            raise _fail("truncated")
        out = [None] * n  # one allocation, no regrowth; n <= len(data)
        for k in range(n):
            out[k], i = _item(mv, i, end, depth)
        return out, i
    if mt == _MT_MAP:
        if n > (end - i) >> 1:  # each pair takes at least two bytes
            raise _fail("truncated")
        out = {}
        ps = pe = -1
        for _ in range(n):
            if i < end and mv[i] >= _MT_ARRAY:
                raise _fail("unsupported")  # key is not int/str/bytes
            ks = i
            k, i = _item(mv, i, end, depth)
            if ps >= 0 and not _before(mv, ps, pe, ks, i):
                if k in out:
                    raise _fail("duplicate-key")
                raise _fail("non-canonical")
            ps = ks
            pe = i
            v, i = _item(mv, i, end, depth)
            out[k] = v
        return out, i
    # tag 18
    v, i = _item(mv, i, end, depth)
    return Tag(_TAG_COSE_SIGN1, v), i


def loads(data, max_size=MAX_SIZE, max_depth=MAX_DEPTH):
    """The one canonical CBOR item in data (bytes, bytearray, memoryview)."""
    if isinstance(data, (bytes, bytearray)):
        mv = memoryview(data)
    elif isinstance(data, memoryview):
        mv = _byte_view(data)
    else:
        raise _fail("bad-type")
    end = len(mv)
    if end > max_size:
        raise errors.TooLarge("too-large")
    v, i = _item(mv, 0, end, max_depth)
    if i != end:
        raise _fail("trailing")
    return v
