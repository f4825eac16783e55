"""Proof of work: targets, the mining loop, retargeting toward the block time
(deterministic fake clock and a hash-rate simulation), and verify() catching
tampered headers."""

from __future__ import annotations

import sqlite3
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest

from gateway.registry import PublicRegistry as Registry
from gateway.registry import chain, open_registry
from gateway.registry import pow as pw
from shared import cbor
from tests.support.registry_support import T0, FakeClock, Mfr

LIMIT = pw.MAX_TARGET


def fields(**kw: Any) -> dict[str, Any]:
    f = chain.header_fields(height=1, prev_hash=bytes(32), time=T0, tx_root=bytes(32),
                            receipts_root=bytes(32), state_root=bytes(32),
                            proposer=chain.ANONYMOUS_MINER, target=LIMIT)
    f.update(kw)
    return f


def test_target_and_meets() -> None:
    assert pw.target_from_bits(0) == LIMIT
    assert pw.target_from_bits(8) == 1 << 56
    assert pw.difficulty(1 << 56) == 256
    with pytest.raises(ValueError):
        pw.target_from_bits(64)
    t = 1 << 40
    assert pw.meets((t - 1).to_bytes(8, "big") + b"\xff" * 24, t)
    assert not pw.meets(t.to_bytes(8, "big") + bytes(24), t)
    # same as comparing the whole hash with target * 2^192
    for h in (sha256(bytes([i])).digest() for i in range(50)):
        assert pw.meets(h, t) == (int.from_bytes(h, "big") < t << 192)


@pytest.mark.parametrize("start", [0, 20, 250, 65530, (1 << 32) - 3])
def test_solve_header_bytes_are_canonical(start: int) -> None:
    f = fields()
    target = pw.target_from_bits(3)
    nonce, hb, h = pw.solve(f, target, start=start)
    assert nonce >= start
    assert hb == cbor.dumps(dict(f, nonce=nonce)) and h == sha256(hb).digest()
    assert pw.meets(h, target)
    assert chain.decode_header(hb)["nonce"] == nonce


def test_solve_finds_the_first_nonce_and_gives_up() -> None:
    f = fields()
    target = pw.target_from_bits(6)
    nonce, _, _ = pw.solve(f, target)
    for n in range(nonce):  # every smaller nonce fails
        assert not pw.meets(sha256(cbor.dumps(dict(f, nonce=n))).digest(), target)
    assert pw.solve(f, 1, max_tries=1000) is None
    with pytest.raises(ValueError):
        pw.solve(f, 0)


def test_retarget_rule() -> None:
    assert pw.retarget(1000, 8000, 8000, LIMIT) == 1000
    assert pw.retarget(1000, 4000, 8000, LIMIT) == 500     # blocks too fast: harder
    assert pw.retarget(1000, 16000, 8000, LIMIT) == 2000   # too slow: easier
    assert pw.retarget(1000, 0, 8000, LIMIT) == 250        # clamped /4
    assert pw.retarget(1000, 10**9, 8000, LIMIT) == 4000   # clamped x4
    assert pw.retarget(1000, 10**9, 8000, 1500) == 1500    # never easier than the limit
    assert pw.retarget(1, 0, 8000, LIMIT) == 1             # never 0
    heights = [h for h in range(1, 20) if pw.is_retarget_height(h, 4)]
    assert heights == [5, 9, 13, 17]
    assert not any(pw.is_retarget_height(h, 0) for h in range(100))
    times = {0: 0, 4: 4}
    assert pw.next_target(5, 1000, times.__getitem__, 4, 2000, LIMIT) == 500
    assert pw.next_target(6, 1000, times.__getitem__, 4, 2000, LIMIT) == 1000


def test_retarget_converges_on_a_simulated_pi() -> None:
    """A miner doing 300k hashes/s (CPython on a Raspberry Pi) starting far
    too easy: within a few windows blocks take the configured 2 s."""
    rate, block_time, every = 300_000, 2.0, 8
    limit = pw.target_from_bits(8)
    target, clock, times = limit, float(T0), [T0]
    for h in range(1, 30 * every + 1):
        target = pw.next_target(h, target, times.__getitem__, every, 2000, limit)
        clock += pw.difficulty(target) / rate  # expected mining time
        times.append(int(clock))
    ideal = rate * block_time  # hashes per block
    assert ideal / 1.5 < pw.difficulty(target) < ideal * 1.5
    last = times[-1] - times[-1 - 4 * every]
    assert abs(last / (4 * every) - block_time) < 0.5


def open_fast(tmp_path: Path, clock: FakeClock, **kw: Any) -> Registry:
    kw.setdefault("difficulty_bits", 0)
    return open_registry(tmp_path / "r", create=True, retarget_blocks=4, block_time_s=2.0,
                         clock=clock, **kw)


def targets(reg: Registry) -> list[int]:
    return [b.target for b in reg._store.iter_blocks()]


def test_registry_retargets_with_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock(step=1)  # 1 s per block where 2 s are wanted
    with open_fast(tmp_path, clock) as reg:
        assert reg.mine(8, empty=True) == list(range(1, 9))
        clock.step = 0  # frozen clock: blocks "instant" -> clamped x4 harder
        reg.mine(4, empty=True)
        clock.step = 4  # twice too slow -> easier, but never past genesis
        reg.mine(21, empty=True)
        t = targets(reg)
        assert len(t) == 34
        assert t[:5] == [LIMIT] * 5
        assert t[5] == LIMIT * 4000 // 8000           # 4 blocks took 4 s, not 8: x2 harder
        assert t[6:9] == [t[5]] * 3                   # only every 4 blocks
        assert t[9] == t[5] * 4000 // 8000
        assert t[13] == t[9] // 4                     # 1 s for 4 blocks: clamped to x4
        assert t[17] == t[13] * 12000 // 8000         # 12 s (first block still at 9 s)
        assert t[21] == t[17] * 2 and t[25] == t[21] * 2 and t[29] == t[25] * 2
        assert t[33] == LIMIT                         # capped at the genesis target
        for b in reg._store.iter_blocks(1):
            assert pw.meets(b.hash, b.target) and b.hash == sha256(b.header_bytes).digest()
        assert reg.verify().ok


def test_every_block_meets_its_target(tmp_path: Path) -> None:
    acme = Mfr("acme")
    with open_fast(tmp_path, FakeClock(step=1), difficulty_bits=8) as reg:
        reg.submit(acme.register())
        reg.mine()
        for i in range(6):
            reg.submit(acme.record("d%d" % i, "S%d" % i))
            reg.mine()
        blocks = list(reg._store.iter_blocks(1))
        assert len(blocks) == 7
        for b in blocks:
            assert int.from_bytes(b.hash, "big") < b.target << 192
            assert b.target <= pw.target_from_bits(8)
        rep = reg.verify()
        assert rep.ok and rep.blocks == 8 and rep.devices == 6


# ---- tampering ------------------------------------------------------------------


@pytest.fixture
def mined(tmp_path: Path) -> Registry:
    acme = Mfr("acme")
    reg = open_fast(tmp_path, FakeClock(step=1), difficulty_bits=8)
    reg.submit(acme.register())
    reg.mine()
    for i in range(3):
        reg.submit(acme.record("d%d" % i, "S%d" % i))
        reg.mine()
    assert reg.verify().ok
    yield reg
    reg.close()


def rewrite(reg: Registry, height: int, f: dict[str, Any], *, fix_hash: bool = True) -> None:
    hb = cbor.dumps(f)
    db = sqlite3.connect(reg._store.path)
    with db:
        if fix_hash:
            db.execute("UPDATE blocks SET header = ?, hash = ?, time = ? WHERE height = ?",
                       (hb, sha256(hb).digest(), f["time"], height))
        else:
            db.execute("UPDATE blocks SET header = ? WHERE height = ?", (hb, height))
    db.close()


def header_of(reg: Registry, height: int) -> dict[str, Any]:
    b = reg._store.get_block(height)
    return dict(b.fields)


def failing_nonce(f: dict[str, Any]) -> int:
    n = f["nonce"] + 1
    while pw.meets(sha256(cbor.dumps(dict(f, nonce=n))).digest(), f["target"]):
        n += 1
    return n


def error(reg: Registry) -> tuple[int, str]:
    rep = reg.verify()
    assert not rep.ok and rep.error is not None
    return rep.error.height, rep.error.reason


def test_tampered_nonce_without_rehash(mined: Registry) -> None:
    f = header_of(mined, 2)
    rewrite(mined, 2, dict(f, nonce=f["nonce"] + 1), fix_hash=False)
    assert error(mined) == (2, "header-mismatch")


def test_tampered_nonce_fails_the_work(mined: Registry) -> None:
    f = header_of(mined, 2)
    rewrite(mined, 2, dict(f, nonce=failing_nonce(f)))
    assert error(mined) == (2, "bad-pow")


def test_easier_target_is_refused(mined: Registry) -> None:
    f = dict(header_of(mined, 3), target=LIMIT)
    f["nonce"], _, _ = pw.solve(f, LIMIT)
    rewrite(mined, 3, f)
    assert error(mined) == (3, "bad-target")


def test_remined_header_breaks_the_next_link(mined: Registry) -> None:
    """Valid work on a changed header: the next block no longer links."""
    f = dict(header_of(mined, 2), time=header_of(mined, 2)["time"] + 1)
    f["nonce"], _, _ = pw.solve(f, f["target"])
    rewrite(mined, 2, f)
    assert error(mined) == (3, "bad-prev-hash")


def test_remined_state_root_is_caught(mined: Registry) -> None:
    f = dict(header_of(mined, 4), state_root=bytes(32))
    f["nonce"], _, _ = pw.solve(f, f["target"])
    rewrite(mined, 4, f)
    assert error(mined) == (4, "state-root-mismatch")


def test_time_rules(mined: Registry) -> None:
    f = dict(header_of(mined, 4), time=header_of(mined, 3)["time"] - 1)
    f["nonce"], _, _ = pw.solve(f, f["target"])
    rewrite(mined, 4, f)
    assert error(mined) == (4, "time-backwards")
    f = dict(f, time=T0 + 10**6)
    f["nonce"], _, _ = pw.solve(f, f["target"])
    rewrite(mined, 4, f)
    assert error(mined) == (4, "time-in-future")
