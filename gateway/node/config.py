"""Gateway configuration: the `GatewayConfig` dataclass and its TOML file.

A config file is flat TOML; every key is optional except `domain`:

    domain = "demo"                      # chain id, 1-32 chars [a-z0-9-]
    data_dir = "var/gateway"             # relative to the config file's folder
    broker_url = "mqtt://127.0.0.1:1883"
    block_interval_s = 1.0               # cut a block every N seconds ...
    block_max_txs = 2000                 # ... or at M transactions
    mempool_capacity = 100000
    rate_limit_tps = 100.0               # per-sender limit: transactions/s sustained ...
    rate_limit_burst = 300               # ... and at once; 0 tps switches it off
                                         # (refused: rate-limited, retryable)
    genesis_path = "genesis.toml"        # default <data_dir>/genesis.toml
    authority_key_path = "authority.key" # default <data_dir>/authority.key
    genesis_supply = 0                   # the authority's balance in a domain this node creates
    market_fee_bps = 200                 # deploy the agreement contract at start with this
                                         # operator fee (absent, or a domain with an
                                         # owner: the admin, its owner, deploys it)
    market_grant = 0                     # the operator gives each newly registered device this
    ha_discovery = false                 # Home Assistant MQTT discovery of verified values
                                         # (gateway/node/homeassistant.py, docs/API.md)
    http = "127.0.0.1:8080"              # the web dashboard (gateway/web/); "" for none
    cluster = "nats://127.0.0.1:4222,nats://127.0.0.1:4223"  # a quorum domain: its NATS
                                         # cluster (docs/CONSENSUS.md); "" for none
    gateway_name = "gw1"                 # this gateway in the cluster ([a-z0-9-])
    validator_key_path = "validator.key" # this gateway's validator key (quorum)
    workers = 2                          # processes checking received batches' signatures
                                         # (gateway/node/verifier.py); 0: all in the gateway's
                                         # process; absent: cores - 2, 1 to 4 (0 on 1 core)
    [[derived]]                          # edge analytics: a derived service (docs/MARKET.md)
    name = "temperature-mean"
    source = "temperature"
    window = 8                           # readings of the bought source stream
    unit = "cC"
    price = 3
    interval_s = 10

Unknown keys and wrong types raise `ConfigError`, whose `key` attribute (and
message) names the offending key. The data directory holds the files named by
GENESIS_FILE, KEY_FILE and DB_FILE.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError, FieldError
from shared import topics

if TYPE_CHECKING:
    from gateway.market.node.analytics import DerivedService

GENESIS_FILE = "genesis.toml"
KEY_FILE = "authority.key"
VALIDATOR_KEY_FILE = "validator.key"
DB_FILE = "chain.db"
STREAMS_FILE = "streams.db"  # the market's off-chain readings (gateway/market/node/streams.py)
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_DATA_DIR = "var/gateway"
# A sender's share: far above a board's pace (a reading every few seconds) and
# the bench's devices (100 readings at once each), a small part of the ~2,000
# tx/s a gateway commits (docs/PROTOCOL.md, "Rate limit").
DEFAULT_RATE_LIMIT_TPS = 100.0
DEFAULT_RATE_LIMIT_BURST = 300
MAX_WORKERS = 64


@dataclass(frozen=True)
class GatewayConfig:
    domain: str
    data_dir: Path
    broker_url: str = DEFAULT_BROKER
    block_interval_s: float = 1.0
    block_max_txs: int = 2000
    genesis_path: Path | None = None
    mempool_capacity: int = 100_000
    # per-sender token bucket (gateway/node/ratelimit.py); rate 0: no limit
    rate_limit_tps: float = DEFAULT_RATE_LIMIT_TPS
    rate_limit_burst: int = DEFAULT_RATE_LIMIT_BURST
    authority_key_path: Path | None = None
    # public registry checked by claims (docs/IDENTITY.md); None: claims refused
    registry_dir: Path | None = None
    # registry nodes behind this broker answer the claim check instead of the
    # folder, which then needs only registry.toml (gateway/registry/client.py)
    registry_url: str | None = None
    registry_confirmations: int = 1
    genesis_supply: int = 0
    market_fee_bps: int | None = None
    market_grant: int = 0
    derived: tuple[DerivedService, ...] = ()
    ha_discovery: bool = False
    # the web dashboard's HOST:PORT (gateway/web/, `thingledger run`); "" for none
    http: str = "127.0.0.1:8080"
    # a chain this node creates keeps trust levels (genesis `trust = true`, docs/TRUST.md)
    trust: bool = False
    # stricter per-sender limit for ids on probation (docs/TRUST.md); the lower
    # of this and rate_limit_tps / rate_limit_burst applies to them
    probation_rate_tps: float = 2.0
    probation_rate_burst: int = 20
    # a quorum domain replicated over NATS JetStream (gateway/cluster/replica.py):
    # the cluster's client URLs, comma-separated ("" : a gateway alone), this
    # gateway's name there and its validator key (default <data_dir>/validator.key)
    cluster: str = ""
    gateway_name: str = "gw"
    validator_key_path: Path | None = None
    # worker processes for stateless checks and signatures (gateway/node/verifier.py);
    # None: verifier.default_workers() (cores - 2, 1 to 4; 0 on 1 core)
    workers: int | None = None

    def __post_init__(self) -> None:
        _check(self)

    @property
    def genesis_file(self) -> Path:
        return self.genesis_path or self.data_dir / GENESIS_FILE

    @property
    def key_file(self) -> Path:
        return self.authority_key_path or self.data_dir / KEY_FILE

    @property
    def validator_key_file(self) -> Path:
        return self.validator_key_path or self.data_dir / VALIDATOR_KEY_FILE

    @property
    def cluster_urls(self) -> list[str]:
        return [u.strip() for u in self.cluster.split(",") if u.strip()]

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE


_TYPES: dict[str, tuple[type, ...]] = {
    "domain": (str,),
    "data_dir": (str,),
    "broker_url": (str,),
    "block_interval_s": (int, float),
    "block_max_txs": (int,),
    "genesis_path": (str,),
    "mempool_capacity": (int,),
    "rate_limit_tps": (int, float),
    "rate_limit_burst": (int,),
    "authority_key_path": (str,),
    "registry_dir": (str,),
    "registry_url": (str,),
    "registry_confirmations": (int,),
    "genesis_supply": (int,),
    "market_fee_bps": (int,),
    "market_grant": (int,),
    "derived": (list,),
    "ha_discovery": (bool,),
    "http": (str,),
    "trust": (bool,),
    "probation_rate_tps": (int, float),
    "probation_rate_burst": (int,),
    "cluster": (str,),
    "gateway_name": (str,),
    "validator_key_path": (str,),
    "workers": (int,),
}
_PATHS = ("data_dir", "genesis_path", "authority_key_path", "registry_dir",
          "validator_key_path")


def _check(c: GatewayConfig) -> None:
    if not topics.is_domain_name(c.domain):
        raise ConfigError("domain", "must be 1-32 characters of a-z, 0-9 and '-'")
    if not c.broker_url.startswith("mqtt://"):
        raise ConfigError("broker_url", "must look like mqtt://host:port")
    if not c.block_interval_s > 0:
        raise ConfigError("block_interval_s", "must be > 0")
    if c.block_max_txs < 1:
        raise ConfigError("block_max_txs", "must be >= 1")
    if c.mempool_capacity < 1:
        raise ConfigError("mempool_capacity", "must be >= 1")
    if not c.rate_limit_tps >= 0:
        raise ConfigError("rate_limit_tps", "must be >= 0 (0: no limit)")
    if c.rate_limit_burst < 1:
        raise ConfigError("rate_limit_burst", "must be >= 1")
    if c.genesis_supply < 0 or c.market_grant < 0:
        raise ConfigError("genesis_supply" if c.genesis_supply < 0 else "market_grant",
                          "must be >= 0")
    if c.http and not _host_port(c.http):
        raise ConfigError("http", "must look like HOST:PORT, or \"\" for no dashboard")
    if c.registry_url is not None and (not c.registry_url.startswith("mqtt://")
                                       or c.registry_dir is None):
        raise ConfigError("registry_url", "must look like mqtt://host:port, with "
                          "registry_dir holding the registry's registry.toml")
    if c.registry_confirmations < 1:
        raise ConfigError("registry_confirmations", "must be >= 1")
    if not topics.is_domain_name(c.gateway_name):
        raise ConfigError("gateway_name", "must be 1-32 characters of a-z, 0-9 and '-'")
    if any(not u.startswith(("nats://", "tls://")) for u in c.cluster_urls):
        raise ConfigError("cluster", "must be nats://host:port URLs separated by commas")
    if c.workers is not None and not 0 <= c.workers <= MAX_WORKERS:
        raise ConfigError("workers", f"must be 0 .. {MAX_WORKERS} (0: none)")
    if c.market_fee_bps is not None and not 0 <= c.market_fee_bps <= 10_000:
        raise ConfigError("market_fee_bps", "must be 0 .. 10000")


def _host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) <= 65535)


def from_dict(values: dict[str, Any], base_dir: Path | None = None) -> GatewayConfig:
    """GatewayConfig from a mapping (e.g. parsed TOML). Relative paths are
    resolved against `base_dir` (default: current directory)."""
    base = base_dir or Path.cwd()
    kw: dict[str, Any] = {}
    for key, value in values.items():
        types = _TYPES.get(key)
        if types is None:
            raise ConfigError(key, "unknown key")
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise ConfigError(key, f"must be {names}, got {type(value).__name__}")
        if key in _PATHS:
            p = Path(value).expanduser()
            value = p if p.is_absolute() else base / p
        elif key in ("block_interval_s", "rate_limit_tps"):
            value = float(value)
        elif key == "derived":
            value = _derived(value)
        kw[key] = value
    if "domain" not in kw:
        raise ConfigError("domain", "missing")
    kw.setdefault("data_dir", base / DEFAULT_DATA_DIR)
    return GatewayConfig(**kw)


def _derived(items: list[Any]) -> tuple[DerivedService, ...]:
    from gateway.market.node.analytics import DerivedService  # it imports this module

    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"derived[{n}]", "must be a table")
        try:
            out.append(DerivedService(**item))
        except TypeError as e:
            raise ConfigError(f"derived[{n}]", str(e)) from None
        except FieldError as e:
            raise ConfigError(f"derived[{n}].{e.key}", e.problem) from None
    return tuple(out)


def load(path: Path | str) -> GatewayConfig:
    """Read a TOML config file. Raises ConfigError (key "<file>" when the
    file itself cannot be read or parsed)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            values = tomllib.load(f)
    except OSError as e:
        raise ConfigError("<file>", f"cannot read {p}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("<file>", f"{p} is not valid TOML: {e}") from e
    return from_dict(values, p.resolve().parent)
