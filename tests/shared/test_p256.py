"""ECDSA P-256 / SHA-256 and HMAC-SHA-256 known answers (dual: CPython and MicroPython).
Keys: test_p256_keys.py; rejections: test_p256_reject.py (split to fit a 64 KiB heap)."""
from mpcompat import expect_error, unhex

from shared import p256  # isort: skip  (compiled first: its compile is the heap peak)
from shared.hmacsha256 import hmac_sha256

# RFC 6979 A.2.5 (P-256): private key x, public key U = (Ux, Uy), SHA-256 signatures.
X = unhex("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721")
U = unhex("04 60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
          "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299")
SAMPLE = unhex("EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
               "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8")
TEST = unhex("F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367"
             "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083")
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def test_hmac_rfc4231():
    # Cases 1, 2, 4 and 6 (key longer than the 64-byte block: hashed first).
    for key, msg, mac in (
        (b"\x0b" * 20, b"Hi There",
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (b"Jefe", b"what do ya want for nothing?",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (bytes(range(1, 26)), b"\xcd" * 50,
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
        (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    ):
        assert hmac_sha256(key, msg) == unhex(mac)


def test_rfc6979_public_key():
    assert p256.public_key(X, compressed=False) == U
    assert p256.public_key(X) == b"\x03" + U[1:33]  # Uy is odd


def _s(sig):
    return int.from_bytes(sig[32:], "big")


def test_rfc6979_signatures_low_s():
    # The published "sample" signature has s > n/2; sign returns its low-s twin:
    # the same r (the same RFC 6979 k), s replaced by n - s. "test" is low already.
    assert _s(SAMPLE) > N // 2 and _s(TEST) <= N // 2
    assert p256.sign(X, b"sample") == SAMPLE[:32] + (N - _s(SAMPLE)).to_bytes(32, "big")
    assert p256.sign(X, b"test") == TEST


def test_rfc6979_vectors_verify():
    for key in (U, p256.compress(U)):
        assert p256.verify(key, b"sample", SAMPLE)
        assert p256.verify(key, b"test", TEST)
        assert not p256.verify(key, b"test", SAMPLE)


def test_verify_is_plain_ecdsa():
    # verify accepts s and n - s alike (the raw vector above and its low-s twin);
    # the wire's low-s rule is shared/cose.py's (test_low_s.py).
    assert p256.verify(U, b"sample", SAMPLE)
    assert p256.verify(U, b"sample", SAMPLE[:32] + (N - _s(SAMPLE)).to_bytes(32, "big"))
    assert p256.verify(U, b"test", TEST[:32] + (N - _s(TEST)).to_bytes(32, "big"))


def test_sign_verify_fresh_keys():
    for _ in range(2):
        priv, pub = p256.keygen()
        assert len(priv) == 32 and len(pub) == 33 and pub[0] in (2, 3)
        assert p256.public_key(priv) == pub
        sig = p256.sign(priv, b"reading 2150")
        assert len(sig) == 64
        assert sig == p256.sign(bytearray(priv), bytearray(b"reading 2150"))  # deterministic
        assert p256.verify(pub, b"reading 2150", sig)
        assert p256.verify(p256.decompress(pub), b"reading 2150", sig)
        assert not p256.verify(pub, b"reading 2151", sig)


def test_sign_digest_zero():
    # e = 0 makes u1 = 0 in verify: only the u2*Q half contributes.
    sig = p256.sign_digest(X, bytes(32))
    assert p256.verify_digest(U, bytes(32), sig)
    assert not p256.verify_digest(U, b"\x01" + bytes(31), sig)
    expect_error(ValueError, p256.sign_digest, X, bytes(31))
