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
#
# Frugality (light nodes load this module; see shared/__init__.py): few
# module-level names and few distinct argument names (each one is interned
# in the board's heap for good): private helpers take ROM-interned names
# (buf, pos, end, key, v, n), constants are `_X = const(...)` or inline.

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

# True when the interpreter's UTF-8 decoder refuses overlongs, surrogates
# and code points above U+10FFFF (CPython yes, MicroPython no). The probe is
# replaced by its answer (one name, and the function's heap goes back).
def _STRICT_UTF8():
    for v in (b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"):
        try:
            str(v, "utf-8")
        except UnicodeError:
            continue
        return False
    return True


_STRICT_UTF8 = _STRICT_UTF8()


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


# True when buf[pos:end] is strict UTF-8 (RFC 3629): no overlongs, surrogates,
# code points above U+10FFFF or cut sequences.
def utf8_ok(buf, pos, end):
    while pos < end:
        c = buf[pos]
        if c < 0x80:
            pos += 1
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
        if end - pos <= n:
            return False
        c = buf[pos + 1]
        if c < lo or c > hi:
            return False
        for j in range(pos + 2, pos + n + 1):
            if buf[j] & 0xC0 != 0x80:
                return False
        pos += n + 1
    return True


# ---------------------------------------------------------------- encoding


def _head(buf, t, n):
    # t: major type (high 3 bits)
    if n < 24:
        buf.append(t | n)
    elif n < 0x100:
        buf.append(t | 24)
        buf.append(n)
    elif n < 0x10000:
        buf.append(t | 25)
        buf.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        buf.append(t | 26)
        buf.extend(n.to_bytes(4, "big"))
    elif not n >> 64:
        buf.append(t | 27)
        buf.extend(n.to_bytes(8, "big"))
    else:
        raise errors.EncodeError("int-range")


def bstr_head(n):
    """The head of a byte string of length n (to hash CBOR piecewise)."""
    buf = bytearray()
    _head(buf, _MT_BYTES, n)
    return buf


# v with len() counting bytes: CPython views of other formats are cast.
def _byte_view(v):
    if isinstance(v, memoryview) and getattr(v, "format", "B") != "B":
        v = v.cast("B")
    return v


def _enc_key(key):
    if isinstance(key, bool) or not isinstance(key, (int, str, bytes)):
        raise errors.EncodeError("bad-key")
    kb = bytearray()
    _enc(kb, key, 0)
    return bytes(kb)


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
        pairs.sort()  # by encoded key: distinct keys encode differently, values never compared
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


# Decode one item at buf[pos]; returns (value, index after it). copy: byte
# strings as bytes, else as memoryview slices of buf (map keys are always bytes).
def _item(buf, pos, end, depth, copy):
    if pos >= end:
        raise errors.DecodeError("truncated")
    ib = buf[pos]
    pos += 1
    mt = ib & 0xE0
    ai = ib & 0x1F
    if mt == 0xE0:
        if ai == 20:
            return False, pos
        if ai == 21:
            return True, pos
        if ai == 22:
            return None, pos
        raise errors.DecodeError("indefinite" if ai == 31 else "unsupported")
    if ai < 24:
        n = ai
    elif ai < 28:
        k = 1 << (ai - 24)
        if end - pos < k:
            raise errors.DecodeError("truncated")
        n = 0
        for j in range(pos, pos + k):
            n = (n << 8) | buf[j]
        pos += k
        # smallest argument allowed after additional info 24, 25, 26, 27
        if n < (24, 0x100, 0x10000, 0x100000000)[ai - 24]:
            raise errors.DecodeError("non-canonical")
    else:
        raise errors.DecodeError("indefinite" if ai == 31 else "unsupported")

    if mt == _MT_UINT:
        return n, pos
    if mt == _MT_NINT:
        return -1 - n, pos
    if mt == _MT_BYTES or mt == _MT_TEXT:
        if n > end - pos:
            raise errors.DecodeError("truncated")
        j = pos + n
        if mt == _MT_BYTES:
            return (bytes(buf[pos:j]) if copy else buf[pos:j]), j
        if not _STRICT_UTF8 and not utf8_ok(buf, pos, j):
            raise errors.DecodeError("bad-utf8")
        try:
            return str(buf[pos:j], "utf-8"), j
        except UnicodeError:
            raise errors.DecodeError("bad-utf8") from None
    if mt == _MT_TAG and n != _TAG_COSE_SIGN1:
        raise errors.DecodeError("unsupported")
    if depth <= 0:
        raise errors.DecodeError("too-deep")
    depth -= 1
    if mt == _MT_ARRAY:
        if n > end - pos:  # each item takes at least one byte
            raise errors.DecodeError("truncated")
        out = [None] * n  # one allocation, no regrowth; n <= len(data)
        for k in range(n):
            out[k], pos = _item(buf, pos, end, depth, copy)
        return out, pos
    if mt == _MT_MAP:
        if n > (end - pos) >> 1:  # each pair takes at least two bytes
            raise errors.DecodeError("truncated")
        out = {}
        prev = None  # encoding of the previous key: keys must strictly increase
        for _ in range(n):
            if pos < end and buf[pos] >= _MT_ARRAY:
                raise errors.DecodeError("unsupported")  # key is not int/str/bytes
            j = pos
            k, pos = _item(buf, pos, end, depth, True)
            j = bytes(buf[j:pos])
            if prev is not None and not prev < j:
                raise errors.DecodeError("duplicate-key" if k in out else "non-canonical")
            prev = j
            v, pos = _item(buf, pos, end, depth, copy)
            out[k] = v
        return out, pos
    # tag 18
    v, pos = _item(buf, pos, end, depth, copy)
    return Tag(_TAG_COSE_SIGN1, v), pos


def loads(data, max_size=MAX_SIZE, max_depth=MAX_DEPTH, copy=True):
    """The one canonical CBOR item in data (bytes, bytearray, memoryview).
    copy=False: byte strings come back as memoryview slices of data, valid
    while data is unchanged (no copy: cose.verify1 checks a signature in place)."""
    if isinstance(data, (bytes, bytearray)):
        mv = memoryview(data)
    elif isinstance(data, memoryview):
        mv = _byte_view(data)
    else:
        raise errors.DecodeError("bad-type")
    end = len(mv)
    if end > max_size:
        raise errors.TooLarge("too-large")
    v, pos = _item(mv, 0, end, max_depth, copy)
    if pos != end:
        raise errors.DecodeError("trailing")
    return v
