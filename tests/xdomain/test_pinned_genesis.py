"""A domain's genesis pinned by a client that reads it over its broker
(docs/CROSSDOMAIN.md, "Relayer"): chain-query answers are not signed, so a
gateway could state a genesis with another authority key, whose receipts
the relayer or the buyer would then believe. With the domain's genesis file
given (`relay --from-genesis/--to-genesis`, `xdomain buy` and `xdomain
resell --genesis/--of-genesis`), its keys are the file's, and a gateway (or a data
folder) stating another genesis is refused: genesis-mismatch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.db import genesis_files
from gateway.db.genesis_files import create_domain, write_key
from gateway.db.store import Store, open_ledger
from gateway.node.config import DB_FILE, GatewayConfig
from gateway.node.queries import QueryLink, QueryServer
from shared import reasons
from tests.support.gwtest import Device
from tools import cli, relay
from tools.cli.common import EXIT_USAGE
from tools.keys import new_key
from tools.remote_store import RemoteError

A, B = "dom-a", "dom-b"


def test_a_genesis_answer_with_another_key_is_refused_when_the_genesis_is_pinned(
        amqtt_broker: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = amqtt_broker.url
    create_domain(tmp_path / "a", A, {Device("alice", A).pub: 10})
    open_ledger(GatewayConfig(domain=A, data_dir=tmp_path / "a")).store.close()
    real = genesis_files.load(tmp_path / "a" / "genesis.toml")
    # a gateway of A that states a genesis of A under a key of its own
    create_domain(tmp_path / "liar", A, {Device("alice", A).pub: 10})
    lie = (tmp_path / "liar" / "genesis.toml").read_bytes()
    liar = genesis_files.load(tmp_path / "liar" / "genesis.toml")
    assert liar.authority != real.authority and liar.domain == real.domain
    srv = QueryLink(QueryServer(A, lambda: Store(tmp_path / "a" / DB_FILE, readonly=True),
                                print, genesis=lie), url, "liar")
    srv.start()
    assert srv.ready.wait(10)
    key = new_key(tmp_path / "relayer.key")
    try:
        # unpinned, the stated key is taken: what the pin is for
        side = relay.remote_side(A, url, key, 5.0)
        assert side.authority == liar.authority
        side.store.close()
        # pinned: refused, naming the key
        with pytest.raises(RemoteError) as e:
            relay.remote_side(A, url, key, 5.0, pinned=real)
        assert e.value.reason == reasons.GENESIS_MISMATCH == "genesis-mismatch"
        assert "authority" in e.value.detail, e.value
        # the same genesis pinned: its keys are used
        side = relay.remote_side(A, url, key, 5.0, pinned=liar)
        assert side.authority == liar.authority
        side.store.close()
        # a data folder holding another genesis than the pinned one
        with pytest.raises(RemoteError) as e:
            relay.open_side(tmp_path / "a", url, pinned=liar)
        assert e.value.reason == reasons.GENESIS_MISMATCH
        # the commands: refused before anything is read or sent
        capsys.readouterr()
        rc = cli.main(["relay", "--from", A, "--to", B, "--from-broker", url, "--to-broker",
                       url, "--from-genesis", str(tmp_path / "a" / "genesis.toml"), "--key",
                       str(tmp_path / "relayer.key"), "--once", "--timeout", "5"])
        err = capsys.readouterr().err
        assert rc == EXIT_USAGE and "genesis-mismatch" in err and "authority" in err, err
        write_key(tmp_path / "bob.key", Device("bob", B).priv)
        rc = cli.main(["xdomain", "buy", "--data-dir", str(tmp_path / "a"), "--broker", url,
                       "--of", A, "--of-broker", url, "--of-genesis",
                       str(tmp_path / "a" / "genesis.toml"), "--service", "temperature",
                       "--quantity", "1", "--key", str(tmp_path / "bob.key"), "--timeout", "5"])
        err = capsys.readouterr().err
        assert rc == EXIT_USAGE and "genesis-mismatch" in err, err
        rc = cli.main(["xdomain", "resell", "--data-dir", str(tmp_path / "a"), "--broker", url,
                       "--of", A, "--of-broker", url, "--of-genesis",
                       str(tmp_path / "a" / "genesis.toml"), "--service", "temperature",
                       "--price", "5", "--key", str(tmp_path / "bob.key"), "--timeout", "5"])
        err = capsys.readouterr().err
        assert rc == EXIT_USAGE and "genesis-mismatch" in err, err
    finally:
        srv.stop()
