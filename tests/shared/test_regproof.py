"""Light checks of the public registry chain (dual: CPython and MicroPython at
64 KiB): a header chain's links, targets and work, and a record's Merkle
proof against its last header (shared/regproof.py). The chain is built here
with shared/ only, so it runs on a board's interpreter too."""
from hashlib import sha256

from mpcompat import expect_error

from shared import cbor, errors, merkle, regproof

T0 = 1700000000
TARGET = 1 << 60  # difficulty 4 bits: about 16 hashes a block
BLOCK_MS = 2000
ANON = bytes(16)


def fields(height, prev, time, root, target=TARGET, nonce=0):
    return {"version": 1, "domain": "registry", "height": height, "prev_hash": prev,
            "time": time, "tx_root": merkle.EMPTY_ROOT, "receipts_root": merkle.EMPTY_ROOT,
            "state_root": root, "proposer": ANON, "target": target, "nonce": nonce}


def seal(f, good=True):
    """Header bytes of f with the first nonce whose hash meets (or misses) the target."""
    n = 0
    while True:
        f["nonce"] = n
        hb = cbor.dumps(f)
        if regproof.meets(sha256(hb).digest(), f["target"]) == good:
            return hb
        n += 1


def device_leaf(i):
    pub = b"\x02" + sha256(b"dev%d" % i).digest()
    did = sha256(pub).digest()[:16]
    return cbor.dumps([1, did, pub, b"M" * 16, "TH-1", "S%d" % i, T0, T0 + 1000, 1, bytes(32)])


def mfr_leaf():
    return cbor.dumps([0, b"M" * 16, b"\x03" + bytes(32), "Acme", 5, 1, bytes(32)])


LEAVES = [mfr_leaf()] + [device_leaf(i) for i in range(5)]
LEVELS = merkle.levels([merkle.leaf_hash(x) for x in LEAVES])
ROOT = merkle.root_of(LEVELS)


def chain(n, times=None):
    """Genesis bytes and n headers after it, the last with ROOT."""
    g = cbor.dumps(fields(0, bytes(32), T0, merkle.EMPTY_ROOT))
    prev, out = sha256(g).digest(), []
    for h in range(1, n + 1):
        t = times[h - 1] if times else T0 + 2 * h
        hb = seal(fields(h, prev, t, ROOT if h == n else merkle.EMPTY_ROOT))
        out.append(hb)
        prev = sha256(hb).digest()
    return g, out


def check(g, headers, now=None):
    return regproof.check_headers(regproof.genesis_tip(g), headers, 0, BLOCK_MS, TARGET, now,
                                  3600)


def test_honest_chain_gives_the_work_and_proves_a_record():
    g, hs = chain(4)
    tip = check(g, hs)
    assert tip.height == 4 and tip.hash == sha256(hs[-1]).digest()
    assert tip.work == 5 * regproof.work(TARGET) == 5 * 16
    for i in range(1, len(LEAVES)):
        v = regproof.check_record(tip, LEAVES[i], i, len(LEAVES), merkle.proof(LEVELS, i))
        assert v[5] == "S%d" % (i - 1)
    m = regproof.check_maker(tip, LEAVES[0], 0, len(LEAVES), merkle.proof(LEVELS, 0), b"M" * 16)
    assert m[3] == "Acme"


def test_a_checkpoint_continues_the_chain():
    g, hs = chain(4)
    mid = check(g, hs[:2])
    tip = regproof.check_headers(mid, hs[2:], 0, BLOCK_MS, TARGET)
    assert tip.hash == check(g, hs).hash and tip.work == 80


def test_header_chain_refusals():
    g, hs = chain(3)
    assert expect_error(errors.ProofError, check, g, hs[1:]).detail == "bad-link"
    assert expect_error(errors.ProofError, check, g, [hs[0], hs[0]]).detail == "bad-link"
    prev = sha256(g).digest()
    bad_pow = seal(fields(1, prev, T0 + 2, ROOT), good=False)
    assert expect_error(errors.ProofError, check, g, [bad_pow]).detail == "bad-pow"
    easy = seal(fields(1, prev, T0 + 2, ROOT, target=TARGET * 4))
    assert expect_error(errors.ProofError, check, g, [easy]).detail == "bad-target"
    early = seal(fields(1, prev, T0 - 1, ROOT))
    assert expect_error(errors.ProofError, check, g, [early]).detail == "time-backwards"
    late = seal(fields(1, prev, T0 + 10000, ROOT))
    assert expect_error(errors.ProofError, check, g, [late], T0).detail == "time-in-future"
    assert expect_error(errors.ProofError, check, g, [b"\xa0"]).detail == "bad-header"


def test_the_retarget_rule_is_checked():
    # every 2 blocks; blocks 2 s apart where 4 s are expected: the target halves
    g = cbor.dumps(fields(0, bytes(32), T0, merkle.EMPTY_ROOT))
    tip = regproof.genesis_tip(g)
    prev, hs = tip.hash, []
    target = TARGET
    for h in range(1, 5):
        if regproof.is_retarget_height(h, 2):
            target = regproof.retarget(target, 2 * 2000, 2 * 4000, TARGET)
        hb = seal(fields(h, prev, T0 + 2 * h, ROOT, target=target))
        hs.append(hb)
        prev = sha256(hb).digest()
    assert target == TARGET // 2
    got = regproof.check_headers(tip, hs, 2, 4000, TARGET)
    assert got.target == TARGET // 2 and got.work == 3 * 16 + 2 * 32
    # a header keeping the old (easier) target at the retarget height is refused
    prev = sha256(hs[1]).digest()
    keep = seal(fields(3, prev, T0 + 6, ROOT, target=TARGET))
    e = expect_error(errors.ProofError, regproof.check_headers, tip, hs[:2] + [keep], 2, 4000,
                     TARGET)
    assert e.detail == "bad-target"


def test_record_refusals():
    g, hs = chain(2)
    tip = check(g, hs)
    n = len(LEAVES)
    path = merkle.proof(LEVELS, 2)
    forged = LEAVES[2].replace(b"S1", b"S9")
    assert expect_error(errors.ProofError, regproof.check_record, tip, forged, 2, n,
                        path).detail == "bad-proof"
    assert expect_error(errors.ProofError, regproof.check_record, tip, LEAVES[2], 3, n,
                        path).detail == "bad-proof"
    other = cbor.loads(LEAVES[3])[1]
    assert expect_error(errors.ProofError, regproof.check_record, tip, LEAVES[2], 2, n, path,
                        other).detail == "other-device"
    assert expect_error(errors.ProofError, regproof.check_record, tip, LEAVES[0], 0, n,
                        merkle.proof(LEVELS, 0)).detail == "not-device"
    assert expect_error(errors.ProofError, regproof.check_maker, tip, LEAVES[2], 2, n, path,
                        b"M" * 16).detail == "not-manufacturer"


def test_a_trusted_checkpoint_starts_the_check():
    g, hs = chain(6)
    full = check(g, hs)
    # checkpoint block 3 (every 2: its header and the two before it come along)
    cp_hash = sha256(hs[2]).digest()
    tip, rest = regproof.checkpoint_tip(hs, 1, 3, cp_hash, 2)
    assert tip.height == 3 and tip.work == 0 and len(tip.times) == 3 and len(rest) == 3
    new = regproof.check_headers(tip, rest, 2, BLOCK_MS, TARGET)
    assert new.hash == full.hash and new.work == 3 * 16
    e = expect_error(errors.ProofError, regproof.checkpoint_tip, hs, 1, 3, bytes(32), 2)
    assert e.detail == "bad-checkpoint"
    e = expect_error(errors.ProofError, regproof.checkpoint_tip, hs[1:], 2, 3, cp_hash, 2)
    assert e.detail == "bad-checkpoint"  # the retarget window is missing
