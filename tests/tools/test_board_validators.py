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


def test_domain_init_with_a_quorum(tmp_path: Path, capsys) -> None:
    from tools.cli.app import main

    pubs = [p256.public_key(bytes([i + 1]) * 32).hex() for i in range(3)]
    argv = ["domain", "init", "--data-dir", str(tmp_path / "d"), "--domain", "demo",
            "--consensus", "quorum"]
    for p in pubs:
        argv += ["--validator", p]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "consensus quorum: 2 of 3 validators" in out
    g = genesis.load(tmp_path / "d" / "genesis.toml")
    assert g.consensus == "quorum" and sorted(p.hex() for p in g.validators) == sorted(pubs)
    # a threshold a minority could reach is refused, naming the problem
    assert main(argv[:3] + [str(tmp_path / "e")] + argv[4:] + ["--threshold", "1"]) != 0
    assert "valset-threshold" in capsys.readouterr().err
    assert main(["domain", "init", "--data-dir", str(tmp_path / "f"), "--domain", "demo",
                 "--validator", pubs[0]]) != 0  # a validator without quorum mode
