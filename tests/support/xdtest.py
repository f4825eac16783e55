"""Helpers for the cross-domain tests: an in-process domain of any name (the
ledger core wired like the service, minus MQTT, as tests.support.gwtest.Node
but for a given domain), the owner's client creation, and an in-process
relayer submit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.db import store
from gateway.db.genesis_files import create_domain
from gateway.ledger import blocks, consensus, validate
from gateway.node import config, mempool
from gateway.xdomain import relayer
from shared import commit_gateway, errors, txdecode
from shared import tx as txm
from tests.support.gwtest import T0, Device, key

PERIOD = 3600


class Domain:
    """One domain, in-process: submit (ingress checks), produce (a block)."""

    def __init__(self, data_dir: Path, domain: str, accounts: dict[bytes, int],
                 voters: list[str] = (), **genesis: Any) -> None:  # type: ignore[assignment]
        """`voters`: names of validator keys (tests.support.gwtest.key) of a
        quorum domain: each block gets the certificate of the first k members
        of its height's set among them (the votes its gateways would gather)."""
        self.domain = domain
        self.voters = {key(n)[1]: key(n)[0] for n in voters}
        create_domain(data_dir, domain, accounts, time=T0,
                      authority_key=key("authority-" + domain)[0], **genesis)
        self.cfg = config.GatewayConfig(domain=domain, data_dir=Path(data_dir))
        self.ledger = store.open_ledger(self.cfg, create=False)
        self.pool = mempool.Mempool()
        self.time = T0
        self.authority = Device("authority-" + domain, domain)
        self.authority.seq = 0
        self._devices: dict[str, Device] = {}

    def device(self, name: str) -> Device:
        """The test device `name` of this domain (one object: its seqs go on)."""
        if name not in self._devices:
            self._devices[name] = Device(name, self.domain)
        return self._devices[name]

    @property
    def store(self) -> store.Store:
        return self.ledger.store

    @property
    def state(self):  # -> State
        return self.ledger.state

    def submit(self, message: bytes) -> None:
        """Ingress: raises TLError on refusal."""
        t = validate.check_stateless(message, self.domain)
        self.pool.admit(t, self.state, self.ledger.rules)

    def produce(self, step: int = 1) -> blocks.Block:
        txs = self.pool.take(2000)
        self.time += step
        led = self.ledger
        b = blocks.build_block(led.head, txs, led.state, self.time, led.authority_priv,
                               led.genesis.authority_id, domain=self.domain, rules=led.rules)
        self.store.commit_block(b)
        led.state.apply_diff(b.diff, b.kv_diff)
        led.head = self.store.head()  # type: ignore[assignment]
        self.pool.done(txs)
        if b.cert is None and self.voters:
            self.vote(b)
        return b

    def vote(self, b: blocks.Block) -> None:
        sets = consensus.current_and_next(self.state, b.height)
        assert sets is not None
        vs = sets[0]
        votes = {i: commit_gateway.vote(self.voters[p], p, b.hash)
                 for i, p in enumerate(vs.pubkeys) if p in self.voters}
        cert = commit_gateway.certificate(dict(sorted(votes.items())[:vs.threshold]))
        self.store.set_certificate(b.height, cert)

    def run(self, message: bytes, step: int = 1) -> tuple[int, str, list[Any]]:
        """Submit and commit one tx: (status, reason, events) of its receipt;
        a refusal at ingress or at execution raises TLError (nothing changed)."""
        self.submit(message)
        b = self.produce(step)
        if b.dropped:
            raise b.dropped[0][1]
        r = b.receipts[0]
        return r.status, r.reason, r.events

    def total(self) -> int:
        return self.state.total_balance()

    def balance(self, who: bytes) -> int:
        rec = self.state.get(who)
        return 0 if rec is None else rec.balance

    def head_entry(self) -> tuple[bytes, list[Any]]:
        h = self.store.head()
        assert h is not None
        cert = self.store.certificate(h.height)
        assert cert is not None
        return h.header_bytes, cert

    def valset(self) -> tuple[int, list[bytes]]:
        return 1, [self.authority_pub]

    @property
    def authority_pub(self) -> bytes:
        return self.authority.pub

    def close(self) -> None:
        self.store.close()


def create_client(at: Domain, of: Domain, period: int = PERIOD) -> tuple[int, str, list[Any]]:
    """`at`'s owner (its authority) creates its client of `of` at `of`'s head."""
    hb, cert = of.head_entry()
    k, pubs = of.valset()
    return at.run(at.authority.make(txdecode.TYPE_CLIENT_CREATE,
                                    {1: of.domain, 2: k, 3: pubs, 4: period, 5: hb, 6: cert}))


def in_process_submit(domains: dict[str, Domain]) -> relayer.Submit:
    def submit(domain: str, message: bytes) -> tuple[bool, str]:
        try:
            status, reason, _ = domains[domain].run(message)
        except errors.TLError as e:
            return False, e.reason
        return status == 0, reason
    return submit


def relayer_of(a: Domain, b: Domain, name: str = "relayer") -> relayer.Relayer:
    """A relayer registered in both domains (open admission)."""
    dev = Device(name)
    for d in (a, b):
        d.run(txm.make(dev.priv, dev.id, txm.TYPE_REGISTER, d.domain, 1, 0, {1: dev.pub}))
    seq = iter(range(2, 1 << 30))
    signer = relayer.RelayKey(dev.priv, dev.id, lambda: next(seq))
    return relayer.Relayer(relayer.Chain(a.domain, a.store), relayer.Chain(b.domain, b.store),
                           signer, in_process_submit({a.domain: a, b.domain: b}))
