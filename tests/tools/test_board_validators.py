"""`board flash` puts a quorum domain's validator set and threshold in the
board's config (tools/board.validators_of, read from the genesis in the data
folder); an authority domain's boards keep only the authority key."""

from pathlib import Path

from gateway.db import genesis_files as genesis
from shared import p256
from tools import board as tb


def test_validators_of_a_quorum_domain(tmp_path: Path) -> None:
    pubs = [p256.public_key(bytes([i + 1]) * 32) for i in range(3)]
    genesis.create_domain(tmp_path / "q", "demo", consensus="quorum", validators=pubs)
    assert tb.validators_of(tmp_path / "q", "demo") == {
        "validators": sorted(p.hex() for p in pubs), "threshold": 2}
    assert tb.validators_of(tmp_path / "q", "other") == {}
    genesis.create_domain(tmp_path / "a", "demo")
    assert tb.validators_of(tmp_path / "a", "demo") == {}
    assert tb.validators_of(tmp_path / "none", "demo") == {}
