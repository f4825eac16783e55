"""Gateway config and genesis files: loading, defaults, errors naming the key."""

from __future__ import annotations

import dataclasses
import stat
import tomllib
from pathlib import Path

import pytest

from gateway.db import genesis_files as gen
from gateway.node import config
from gateway.node.config import ConfigError, GatewayConfig
from tests.support.gwtest import Device, key


def write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_config_defaults_and_paths(tmp_path: Path) -> None:
    c = config.load(write(tmp_path / "gw.toml", 'domain = "demo"\n'))
    assert c == GatewayConfig(domain="demo", data_dir=tmp_path / "var/gateway")
    assert (c.broker_url, c.block_interval_s, c.block_max_txs) == (
        "mqtt://127.0.0.1:1883", 1.0, 2000)
    assert c.genesis_file == tmp_path / "var/gateway/genesis.toml"
    assert c.key_file == tmp_path / "var/gateway/authority.key"
    assert c.db_path == tmp_path / "var/gateway/chain.db"
    c = config.load(write(tmp_path / "gw.toml", """
domain = "lab-2"
data_dir = "d"
broker_url = "mqtt://10.0.0.2:1884"
block_interval_s = 2
block_max_txs = 500
genesis_path = "/etc/tl/genesis.toml"
mempool_capacity = 10
"""))
    assert c.data_dir == tmp_path / "d" and c.block_interval_s == 2.0
    assert c.genesis_file == Path("/etc/tl/genesis.toml") and c.block_max_txs == 500


@pytest.mark.parametrize("text,key_", [
    ('domain = "Demo"', "domain"),
    ('data_dir = "x"', "domain"),
    ('domain = "d"\nblock_interval_s = 0', "block_interval_s"),
    ('domain = "d"\nblock_interval_s = "1"', "block_interval_s"),
    ('domain = "d"\nblock_max_txs = 0', "block_max_txs"),
    ('domain = "d"\nblock_max_txs = 1.5', "block_max_txs"),
    ('domain = "d"\nblock_max_txs = true', "block_max_txs"),
    ('domain = "d"\nbroker_url = "tcp://x"', "broker_url"),
    ('domain = "d"\nblock_intervall_s = 1', "block_intervall_s"),
    ('domain = "d"\nmempool_capacity = -1', "mempool_capacity"),
    ('domain = "d"\ndata_dir = 3', "data_dir"),
    ('domain = "d"\nrate_limit_tps = -1', "rate_limit_tps"),
    ('domain = "d"\nrate_limit_tps = "fast"', "rate_limit_tps"),
    ('domain = "d"\nrate_limit_burst = 0', "rate_limit_burst"),
    ('domain = "d"\nrate_limit_burst = 2.5', "rate_limit_burst"),
    ('domain = "d"\nha_discovery = 1', "ha_discovery"),
    ('domain = "d"\nha_discovery = "yes"', "ha_discovery"),
    ('domain = "d"\nworkers = -1', "workers"),
    ('domain = "d"\nworkers = 65', "workers"),
    ('domain = "d"\nworkers = 2.0', "workers"),
    ('domain = ', "<file>"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, key_: str) -> None:
    with pytest.raises(ConfigError) as ei:
        config.load(write(tmp_path / "gw.toml", text + "\n"))
    assert ei.value.key == key_ and repr(key_) in str(ei.value)


def test_config_rate_limit(tmp_path: Path) -> None:
    """The per-sender limit is on by default, set in the file, 0 switches it off."""
    c = config.load(write(tmp_path / "gw.toml", 'domain = "demo"\n'))
    assert (c.rate_limit_tps, c.rate_limit_burst) == (config.DEFAULT_RATE_LIMIT_TPS,
                                                      config.DEFAULT_RATE_LIMIT_BURST)
    assert c.rate_limit_tps > 0
    c = config.load(write(tmp_path / "gw.toml",
                          'domain = "demo"\nrate_limit_tps = 20\nrate_limit_burst = 50\n'))
    assert (c.rate_limit_tps, c.rate_limit_burst) == (20.0, 50)
    assert isinstance(c.rate_limit_tps, float)
    c = config.load(write(tmp_path / "gw.toml", 'domain = "demo"\nrate_limit_tps = 0\n'))
    assert c.rate_limit_tps == 0


def test_config_ha_discovery(tmp_path: Path) -> None:
    """Home Assistant discovery is off unless the file says `ha_discovery = true`."""
    assert not config.load(write(tmp_path / "gw.toml", 'domain = "demo"\n')).ha_discovery
    c = config.load(write(tmp_path / "gw.toml", 'domain = "demo"\nha_discovery = true\n'))
    assert c.ha_discovery is True


def test_config_workers(tmp_path: Path) -> None:
    """Absent: None (the gateway takes verifier.default_workers()); else the number."""
    assert config.load(write(tmp_path / "gw.toml", 'domain = "demo"\n')).workers is None
    c = config.load(write(tmp_path / "gw.toml", 'domain = "demo"\nworkers = 0\n'))
    assert c.workers == 0
    assert config.load(write(tmp_path / "gw.toml", 'domain = "demo"\nworkers = 3\n')).workers == 3


def test_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        config.load(tmp_path / "nope.toml")
    assert ei.value.key == "<file>"


def test_create_domain_roundtrip_and_key_permissions(tmp_path: Path) -> None:
    a, b = Device("alice"), Device("bob")
    gpath, kpath = gen.create_domain(tmp_path / "d", "demo", {a.pub: 10, b.pub: 0}, time=5)
    assert stat.S_IMODE(kpath.stat().st_mode) == 0o600
    g = gen.load(gpath)
    assert (g.domain, g.time, g.admission, g.min_fee) == ("demo", 5, "open", 0)
    assert g.accounts == {a.id: gen.Account(a.pub, 10), b.id: gen.Account(b.pub, 0)}
    assert gen.from_dict(tomllib.loads(gen.dumps(g))) == g
    priv = gen.load_authority_key(kpath, g)
    st = g.state()
    assert st.get(g.authority_id).balance == 0 and st.total_balance() == 10
    with pytest.raises(FileExistsError):
        gen.create_domain(tmp_path / "d", "demo")
    # deterministic genesis header, signed by the authority key
    assert gen.genesis_header(g, priv) == gen.genesis_header(g, priv)
    other = dataclasses.replace(g, authority=key("mallory")[1])
    with pytest.raises(gen.GenesisError) as ei:
        gen.load_authority_key(kpath, other)
    assert ei.value.key == "authority"


def test_authority_listed_in_accounts_keeps_its_balance(tmp_path: Path) -> None:
    gpath, kpath = gen.create_domain(tmp_path / "d", "demo", time=1)
    g = gen.load(gpath)
    g2 = dataclasses.replace(g, accounts={g.authority_id: gen.Account(g.authority, 77)})
    assert g2.state().get(g.authority_id).balance == 77


A = Device("alice")
GOOD = {"domain": "demo", "authority": key("auth")[1].hex(), "time": 1}


@pytest.mark.parametrize("change,key_", [
    ({"domain": "DEMO"}, "domain"),
    ({"domain": 5}, "domain"),
    ({"authority": "zz"}, "authority"),
    ({"authority": "02" + "ff" * 32}, "authority"),
    ({"authority": None}, "authority"),
    ({"time": -1}, "time"),
    ({"time": "now"}, "time"),
    ({"time": None}, "time"),
    ({"admission": "invite"}, "admission"),
    ({"min_fee": -1}, "min_fee"),
    ({"colour": "red"}, "colour"),
    ({"accounts": []}, "accounts"),
    ({"accounts": {"xyz": {"pubkey": A.pub.hex(), "balance": 1}}}, "accounts.xyz"),
    ({"accounts": {"00" * 16: {"pubkey": A.pub.hex(), "balance": 1}}}, "accounts." + "00" * 16),
    ({"accounts": {A.id.hex(): {"pubkey": A.pub.hex()}}}, "accounts.%s.balance" % A.id.hex()),
    ({"accounts": {A.id.hex(): {"pubkey": A.pub.hex(), "balance": -1}}},
     "accounts.%s.balance" % A.id.hex()),
    ({"accounts": {A.id.hex(): {"pubkey": "02", "balance": 1}}},
     "accounts.%s.pubkey" % A.id.hex()),
    ({"accounts": {A.id.hex(): {"pubkey": A.pub.hex(), "balance": 1, "x": 1}}},
     "accounts.%s.x" % A.id.hex()),
    ({"accounts": {A.id.hex(): {"pubkey": A.pub.hex(), "balance": 1 << 63}}}, "accounts"),
])
def test_genesis_errors_name_the_key(change: dict, key_: str) -> None:
    d = {**GOOD, **change}
    d = {k: v for k, v in d.items() if v is not None}
    with pytest.raises(gen.GenesisError) as ei:
        gen.from_dict(d)
    assert ei.value.key == key_


def test_genesis_file_errors(tmp_path: Path) -> None:
    with pytest.raises(gen.GenesisError):
        gen.load(tmp_path / "missing.toml")
    with pytest.raises(gen.GenesisError):
        gen.load(write(tmp_path / "bad.toml", "domain = = 1"))
