"""The connection of a gateway to its domain's NATS cluster, and the names of
what a domain keeps there (streams, subjects, consumers): one place spells them.

Subjects of the cluster side live under `tlc.<domain>.` (no MQTT client has a
right there); the transaction intake captures the MQTT-derived subject of
`tl/<domain>/tx` (NATS maps MQTT topic a/b to subject a.b)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import nats
from nats.aio.client import Client

from shared import topics

log = logging.getLogger("thingledger.cluster")

RECONNECT_WAIT = 0.2  # s between attempts to reach another node of the cluster


def check_domain(domain: str) -> str:
    if not topics.is_domain_name(domain):
        raise ValueError(f"bad domain name {domain!r}")
    return domain


def log_stream(domain: str) -> str:
    """The stream of a domain's block proposals (stream names: no dots)."""
    return "TL_LOG_" + check_domain(domain)


def log_subject(domain: str) -> str:
    return f"tlc.{check_domain(domain)}.log"


def sig_subject(domain: str) -> str:
    """Core NATS subject of the gateways' header signatures."""
    return f"tlc.{check_domain(domain)}.sigs"


def intake_stream(domain: str) -> str:
    """The stream of the transactions devices publish."""
    return "TL_TX_" + check_domain(domain)


def intake_subject(domain: str) -> str:
    """tl/<domain>/tx as NATS's MQTT listener publishes it."""
    return f"tl.{check_domain(domain)}.tx"


def status_subject(domain: str) -> str:
    """Every tl/<domain>/dev/+/status as NATS's MQTT listener publishes it
    (the gateways' statuses and last wills among them)."""
    return f"tl.{check_domain(domain)}.dev.*.status"


def intake_consumer(gateway: str) -> str:
    """A gateway's durable consumer of the intake stream (consumer names: no dots)."""
    if not topics.is_domain_name(gateway):
        raise ValueError(f"bad gateway name {gateway!r} (a-z, 0-9, '-')")
    return "gw-" + gateway


async def connect(servers: Sequence[str], name: str = "thingledger-gateway",
                  user: str | None = None, password: str | None = None,
                  connect_timeout: float = 2.0,
                  errors: Callable[[Exception], None] | None = None,
                  notes: Callable[[str], None] | None = None) -> Client:
    """A client of the cluster that fails over to any node in `servers` and
    keeps trying to reconnect for ever (a node may be down for minutes; so
    does the first connect). `errors`: told of each failed attempt too;
    `notes`: a line when the connection drops and when it is back (to which
    node)."""
    async def on_error(e: Exception) -> None:  # a node going away: the client fails over
        log.info("nats: %r", e)
        if errors is not None:
            errors(e)

    nc: Client | None = None

    async def on_down() -> None:
        if notes is not None:
            notes("cluster connection lost")

    async def on_back() -> None:
        if notes is not None and nc is not None:
            url = nc.connected_url
            notes(f"cluster connection back, to {url.netloc if url else '?'}")

    kw: dict = {}
    if user is not None:
        kw = {"user": user, "password": password}
    if notes is not None:
        kw |= {"disconnected_cb": on_down, "reconnected_cb": on_back}
    nc = await nats.connect(servers=list(servers), name=name,
                            connect_timeout=connect_timeout,
                            reconnect_time_wait=RECONNECT_WAIT,
                            max_reconnect_attempts=-1, allow_reconnect=True,
                            dont_randomize=False, error_cb=on_error, **kw)
    return nc


def operator_subject(domain: str) -> str:
    """The market operator's transactions in the intake stream (gateway/cluster/issuer.py)."""
    return f"tlc.{check_domain(domain)}.op"


def operator_bucket(domain: str) -> str:
    """The key-value bucket of the operator's lease (bucket names: no dots)."""
    return "TL_OP_" + check_domain(domain)


def logins_bucket(domain: str) -> str:
    """The key-value bucket of the devices' broker logins, shared by every
    machine's admission watch (gateway/cluster/login_bucket.py)."""
    return "TL_LOGINS_" + check_domain(domain)
