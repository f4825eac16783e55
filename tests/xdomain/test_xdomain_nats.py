"""Cross-domain exchange with a quorum domain on a real NATS cluster: domain
A is three replicated gateways (3 validators, k = 2, gateway/cluster/replica.py)
on a 3-node NATS cluster, domain B an authority gateway (`thingledger run`)
on its own embedded broker. A `thingledger relay` process reads A with no
data folder, by chain queries the replicated gateways answer through a NATS
node's MQTT listener, and submits to A through that listener too: it
brings B's client of A up to A's head with quorum certificates, B credits
the transfer after checking the packet proof against a quorum-certified
header of A, and the acknowledgement settles the escrow on all three
gateways of A, on one head. A second transfer whose timeout height in B
passes while no relayer runs is refunded on all three once the relayer
proves its absence in B. Then the refusals across the two modes: headers of
A with one vote of k = 2, with a vote by a key outside A's set, or with a
signer index past the set, submitted to B's client of A; the packet's proof
relayed to B again and the acknowledgement relayed to A again; headers of B
forged for A's client of B at A's replicated gateways (a key other than B's
authority, no vote, another domain's id); each refused with its reason,
nothing committed, nothing credited twice, A's client of B unchanged on all
three gateways. Packet proofs forged at A's replicated gateways (an ack
proven with another packet's receipt, a tampered ack value, altered packet
bytes, a timeout whose absence B's state denies, a height A's client of B
does not trust) and altered packet bytes relayed into B: each refused with
its reason, nothing changed on all three. The relayer is given two NATS
nodes of A: when the first one's machine goes down (gw1 stopped, its node
killed), it relays through the second."""

from __future__ import annotations

import asyncio
import queue
import re
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.cluster.log import retry
from gateway.db.genesis_files import write_key
from gateway.node.config import KEY_FILE
from gateway.xdomain import client as lc
from gateway.xdomain import rules
from shared import cbor, commit, commit_gateway, errors, header, reasons, txdecode
from shared import tx as txm
from shared import xpacket as xp
from tests.cluster.quorum import (
    AUTHORITY,
    DOMAIN,
    OUTSIDER,
    SPARE,
    VALIDATORS,
    Running,
    config,
    make_dirs,
    until,
)
from tests.support.gwtest import Device, key
from tests.support.nats import run
from tests.support.waits import drain, lines, wait_line
from tests.xdomain.test_xdomain_e2e import Gateway, cli
from tools.build import tool
from tools.submit import next_seq, submit, validators_of

B = "dom-b"


def balance(r: Running, who: bytes) -> int:
    rec = r.gw.led.state.get(who)
    return 0 if rec is None else rec.balance


def kv(r: Running, k: bytes) -> bytes | None:
    rows = r.store.kv_range(k, 1)
    return rows[0][1] if rows and rows[0][0] == k else None


def client_of_a(b: Gateway) -> lc.Client:
    raw = b.kv(xp.client_key(DOMAIN))
    assert raw is not None
    return lc.Client.decode(DOMAIN, raw)


def wait_all(q: queue.Queue[str], patterns: list[str], timeout: float, seen: list[str]) -> None:
    """Wait for a line matching each of `patterns`, in any order."""
    left = list(patterns)
    while left:
        got = wait_line(q, "|".join("(?:%s)" % p for p in left), timeout, seen)
        left = [p for p in left if not re.search(p, got)]


def relayed(store: Any, kind: str, seq: int) -> txm.Tx:
    """The committed RELAY transaction of `kind` for packet `seq`."""
    (t,) = [t for t in (txm.decode(r.message) for r in store.txs_of_type(txdecode.TYPE_RELAY))
            if t.body[1] == kind and xp.decode(t.body[2])[3] == seq]
    return t


def test_a_transfer_from_a_quorum_domain_on_nats_is_credited_acknowledged_and_refunded(
        tmp_path: Path, nats_cluster) -> None:
    alice, bob = Device("alice", DOMAIN), Device("bob", B)
    authority = Device("quorum-authority", DOMAIN)
    assert authority.pub == AUTHORITY[1]
    write_key(tmp_path / "relayer.key", key("relayer")[0])
    b = Gateway(tmp_path, B, {bob.pub: 500})
    dirs = make_dirs(tmp_path / "a", [alice])
    # the relayer reads and submits to A through two of its NATS nodes (node 1 first)
    a_urls = ",".join("mqtt://127.0.0.1:%d" % n.mqtt_port for n in nats_cluster.nodes[1:])

    async def body() -> None:
        gws = [Running(config(d, i, nats_cluster)) for i, d in enumerate(dirs)]
        for r in gws:
            await r.start()
        rel: subprocess.Popen | None = None
        down: set[int] = set()  # gateways stopped by the test

        def relay(*extra: str) -> subprocess.Popen:
            return subprocess.Popen(
                # A read over NATS nodes' MQTT listeners (no data folder): each of
                # the three replicated gateways answers its chain queries
                [tool("thingledger"), "relay", "--from", DOMAIN, "--to", B,
                 "--to-dir", str(b.dir), "--from-broker", a_urls,
                 "--to-broker", b.url, "--key", str(tmp_path / "relayer.key"),
                 "--interval", "0.5", *extra],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        try:
            intake = gws[0].rep.intake
            # A's owner creates A's client of B at B's head (block 1 of A, final)
            with b.store() as s:
                bh = s.head()
                assert bh is not None
                bcert = s.certificate(bh.height)
            await intake.submit(authority.make(txdecode.TYPE_CLIENT_CREATE, {
                1: B, 2: 1, 3: [b.auth_pub], 4: 3600, 5: bh.header_bytes, 6: bcert}))
            await until(lambda: all(r.rep.head_final() and r.gw.led.head.height >= 1
                                    for r in gws), gws, 30, "A's block 1 final")
            # B's owner creates B's client of A from gw0's store (a quorum set, k = 2)
            made = await asyncio.to_thread(
                cli, "xdomain", "create", "--data-dir", str(b.dir), "--broker", b.url,
                "--of-dir", str(dirs[0]), "--key", str(b.dir / KEY_FILE), "--period", "3600")
            assert made.returncode == 0, made.stdout + made.stderr
            created = client_of_a(b)
            g = gws[0].gw.led.genesis
            assert (created.threshold, sorted(created.pubkeys)) == (2, sorted(g.validators))
            # alice sends 100 to bob: held in A's escrow once final
            send = alice.make(txdecode.TYPE_SEND, {1: B, 2: bob.id, 3: 100, 4: 0,
                                                   5: 2_000_000_000})
            await intake.submit(send)
            await until(lambda: all(r.rep.head_final() and balance(r, rules.ESCROW) == 100
                                    for r in gws), gws, 30, "the send final on all three")
            sent_at = gws[0].gw.led.head.height
            assert all(balance(r, alice.id) == 900 for r in gws)
            # alice sends 50 more, due by B's next height, while no relayer runs
            due = b.head()[0] + 1
            await intake.submit(alice.make(txdecode.TYPE_SEND, {1: B, 2: bob.id, 3: 50,
                                                                4: due, 5: 0}))
            await until(lambda: all(r.rep.head_final() and balance(r, rules.ESCROW) == 150
                                    for r in gws), gws, 30, "the second send final")
            assert all(balance(r, alice.id) == 850 for r in gws)
            # B passes that height (bob pays 1 to B's authority)
            paid = await asyncio.to_thread(b.send, bob.transfer(txm.device_id(b.auth_pub), 1))
            assert paid.ok and b.head()[0] >= due, paid
            rel = relay()
            q, seen = lines(rel), []
            await asyncio.to_thread(wait_all, q, [
                r"relay: recv +in %s packet 1 ok" % B, r"relay: ack +in %s packet 1 ok" % DOMAIN,
                r"relay: timeout +in %s packet 2 ok" % DOMAIN], 60, seen)
            await until(lambda: all(r.rep.head_final() and balance(r, rules.ESCROW) == 0
                                    for r in gws)
                        and len({r.gw.led.head.hash for r in gws}) == 1,
                        gws, 30, "the escrow settled on all three, one head")
            assert b.balance(bob.id) == 599  # 100 credited, the 50 never; 1 paid
            # every replicated gateway answered the relayer's queries from its own store
            assert all(r.gw.queries is not None and r.gw.queries.answered > 0 for r in gws)
            assert b.kv(xp.receipt_key(DOMAIN, 2)) is None
            for r in gws:  # both packets closed in each state: 100 gone, 50 back to alice
                assert balance(r, alice.id) == 900
                assert kv(r, xp.packet_key(B, 1)) is None
                assert kv(r, xp.packet_key(B, 2)) is None
            # B's client of A followed A past the send, under A's quorum set
            client = client_of_a(b)
            assert client.latest >= sent_at > created.latest and not client.frozen
            # the packet was proven against a header of A that k = 2 of A's set certified
            hdr = gws[0].store.get_block(client.latest)
            cert = gws[0].store.certificate(client.latest)
            assert hdr is not None and cert is not None and len(cert) >= 2
            commit.final_header(hdr.header_bytes, cert, (2, sorted(g.validators), None))
            with b.store() as s:
                got = s.prove_kv(xp.receipt_key(DOMAIN, 1))
            assert got is not None and cbor.loads(got[1]) == [xp.ACK_OK, ""]
            rel.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(rel.wait, 30) == 0, seen
            rel = None

            async def failover() -> None:
                """A relayer again, on two NATS nodes of A: the machine of the
                one it uses goes down (gw1, then its node), the relayer goes on
                through the other with the two gateways left (k = 2)."""
                nonlocal rel
                rel = relay()
                q, seen = lines(rel), []
                # packet 4, left open by forged_proofs, relayed through node 1 of A
                await asyncio.to_thread(wait_all, q, [
                    r"relay: recv +in %s packet 4 ok" % B,
                    r"relay: ack +in %s packet 4 ok" % DOMAIN], 60, seen)
                dead = nats_cluster.nodes[1]
                await gws[1].stop()  # says it is offline: the others answer its senders
                down.add(1)
                dead.kill()
                live = [gws[0], gws[2]]
                bob_before = b.balance(bob.id)
                alice.seq = (1 << 40) + 100  # past forged_proofs' seqs of alice
                fifth = alice.make(txdecode.TYPE_SEND, {1: B, 2: bob.id, 3: 40, 4: 0,
                                                        5: 2_000_000_000})
                # (the intake's stream may be electing a leader: retried until stored)
                await retry(lambda: intake.submit(fifth, timeout=2.0), 30, "submit packet 5")
                await asyncio.to_thread(
                    wait_line, q, r"relay: %s broker passed over: mqtt://127.0.0.1:%d: the "
                    r"connection dropped" % (DOMAIN, dead.mqtt_port), 30, seen)
                # packet 5 credited in B and settled in A, node 1 dead throughout: its
                # proofs read and its ack submitted through node 2
                try:
                    await until(lambda: all(r.rep.head_final()
                                            and kv(r, xp.packet_key(B, 5)) is None
                                            and balance(r, rules.ESCROW) == 0 for r in live)
                                and xp.ack(xp.ACK_OK) == b.kv(xp.receipt_key(DOMAIN, 5)),
                                live, 60, "packet 5 relayed and settled on the two left")
                except AssertionError as e:
                    raise AssertionError("%s\nrelayer: %s" % (e, "\n".join(
                        drain(q, seen, 1.0)[-30:]))) from None
                assert b.balance(bob.id) == bob_before + 40
                assert all(balance(r, alice.id) == 900 - 30 - 20 - 40 for r in live)
                assert not [x for x in seen if "passed over" in x and str(dead.mqtt_port) not in x]
                rel.send_signal(signal.SIGINT)
                assert await asyncio.to_thread(rel.wait, 30) == 0, seen

            await refusals(gws, b, failover)
        finally:
            if rel is not None and rel.poll() is None:
                rel.send_signal(signal.SIGINT)
                await asyncio.to_thread(rel.wait, 30)
            for i, r in enumerate(gws):
                if i not in down:
                    await r.stop()

    try:
        run(body, 120)
    finally:
        b.stop()


async def refusals(gws: list[Running], b: Gateway,
                   before_freeze: Callable[[], Awaitable[None]]) -> None:
    """With the relayer stopped: forged headers of A at B, the packet relayed
    to B again and its acknowledgement relayed to A again, all refused; then
    two of A's validators equivocate and B's client of A freezes."""
    pubs = sorted(gws[0].gw.led.genesis.validators)
    a_head = gws[0].store.head()
    assert a_head is not None
    hb = header.encode(dict(a_head.fields, height=a_head.height + 1))

    def vote(kp: tuple[bytes, bytes], hdr: bytes = hb) -> bytes:
        return commit_gateway.vote(kp[0], kp[1], header.block_hash(hdr))

    v0, v1 = sorted(VALIDATORS[:2], key=lambda kp: pubs.index(kp[1]))
    i0, i1 = pubs.index(v0[1]), pubs.index(v1[1])
    relayer = Device("relayer", B)
    relayer.seq = next_seq()  # ms since the epoch: a relayer process later goes on from there
    client_before, head_before = b.kv(xp.client_key(DOMAIN)), b.head()

    async def update(cert: list[Any], hdr: bytes = hb) -> Any:
        msg = relayer.make(txdecode.TYPE_CLIENT_UPDATE, {1: DOMAIN, 2: [[hdr, cert, None]]})
        return await asyncio.to_thread(b.send, msg)

    rep = await update([[i0, vote(v0)]])  # one validator's vote of k = 2
    assert (rep.ok, rep.reason, rep.detail) == (False, errors.BAD_PROOF,
                                                "too-few-signatures"), rep
    rep = await update([[i0, vote(v0)], [i1, vote(OUTSIDER)]])  # a key outside A's set
    assert (rep.ok, rep.reason) == (False, errors.BAD_SIGNATURE), rep
    rep = await update([[i0, vote(v0)], [len(pubs), vote(SPARE)]])  # an index past the set
    assert (rep.ok, rep.reason, rep.detail) == (False, errors.BAD_PROOF,
                                                "signer-outside-set"), rep
    assert b.kv(xp.client_key(DOMAIN)) == client_before and b.head() == head_before
    # the packet relayed to B again: refused, bob credited once
    with b.store() as s:
        first = relayed(s, "recv", 1)
    bob_before = b.balance(Device("bob", B).id)
    rep = await asyncio.to_thread(b.send, relayer.make(txdecode.TYPE_RELAY, first.body))
    assert (rep.ok, rep.reason, rep.detail) == (False, reasons.DUPLICATE, "received"), rep
    assert b.balance(Device("bob", B).id) == bob_before and b.head() == head_before
    # the acknowledgement relayed to A again: refused by the quorum, nothing moves
    ack = relayed(gws[0].store, "ack", 1)
    a_relayer = Device("relayer", DOMAIN)
    a_relayer.seq = next_seq()
    a_url = gws[1].gw.cfg.broker_url
    msg = a_relayer.make(txdecode.TYPE_RELAY, ack.body)
    rep = await asyncio.to_thread(lambda: submit(
        a_url, DOMAIN, msg, AUTHORITY[1], timeout=20,
        validators=validators_of(gws[0].gw.led.genesis)))
    assert (rep.ok, rep.reason, rep.detail) == (False, reasons.DUPLICATE, "packet-closed"), rep
    alice = Device("alice", DOMAIN).id
    assert all((balance(r, rules.ESCROW), balance(r, alice)) == (0, 900) for r in gws)
    await forged_headers_of_b(gws, b, a_relayer, a_url)
    await forged_proofs(gws, b, relayer, a_relayer, a_url)
    await before_freeze()
    relayer.seq = next_seq()  # past the relayer process's seqs
    # two of A's validators certify a twin of a header B trusts: B's client of A freezes
    latest = client_of_a(b).latest
    trusted = gws[0].store.get_block(latest)
    assert trusted is not None
    tb = header.encode(dict(trusted.fields, state_root=b"\x66" * 32))
    rep = await update([[i0, vote(v0, tb)], [i1, vote(v1, tb)]], tb)
    assert rep.ok and rep.status == 0, rep
    frozen = client_of_a(b)
    assert frozen.frozen and frozen.latest == latest
    rep = await asyncio.to_thread(b.send, relayer.make(txdecode.TYPE_RELAY, first.body))
    assert (rep.ok, rep.reason) == (False, reasons.CLIENT_FROZEN), rep


async def forged_headers_of_b(gws: list[Running], b: Gateway, sender: Device, a_url: str) -> None:
    """Headers of B (an authority domain: a set of one key, k = 1) forged and
    sent to A's client of B through a NATS node's MQTT listener: signed by a
    key other than B's authority, with no vote, or naming another domain
    (signed by B's own authority key). Each refused by A's quorum with its
    reason; A's client of B, its trusted headers and its committed updates
    stay as they were on all three gateways."""
    with b.store() as s:
        bh = s.head()
    assert bh is not None

    def forged(**fields: Any) -> bytes:
        return header.encode(dict(bh.fields, height=bh.height + 1, **fields))

    def state(r: Running) -> tuple[Any, ...]:
        return (kv(r, xp.client_key(B)), r.store.kv_range(xp.headers_of(B)),
                sum(1 for _ in r.store.txs_of_type(txdecode.TYPE_CLIENT_UPDATE)))

    before = [state(r) for r in gws]
    assert before[0][0] is not None and all(x == before[0] for x in before)
    hb = forged()
    other = forged(domain="dom-c")
    mallory = key("mallory")
    cases = [
        (hb, [[0, commit_gateway.vote(mallory[0], mallory[1], header.block_hash(hb))]],
         errors.BAD_SIGNATURE, None),
        (hb, [], errors.BAD_PROOF, "too-few-signatures"),
        (other, [[0, commit_gateway.vote(b.auth_priv, b.auth_pub, header.block_hash(other))]],
         reasons.WRONG_DOMAIN, "header-domain"),
    ]
    validators = validators_of(gws[0].gw.led.genesis)
    for hdr, cert, reason, detail in cases:
        msg = sender.make(txdecode.TYPE_CLIENT_UPDATE, {1: B, 2: [[hdr, cert, None]]})
        rep = await asyncio.to_thread(lambda m=msg: submit(
            a_url, DOMAIN, m, AUTHORITY[1], timeout=20, validators=validators))
        assert (rep.ok, rep.reason) == (False, reason), rep
        if detail is not None:
            assert rep.detail == detail, rep
    await until(lambda: all(r.rep.head_final() for r in gws), gws, 30, "A's heads final")
    assert [state(r) for r in gws] == before


async def forged_proofs(gws: list[Running], b: Gateway, relayer: Device, a_relayer: Device,
                        a_url: str) -> None:
    """Packet proofs forged against a quorum domain. Alice sends packet n (due
    at a height of B) and m; B's client of A is brought to a header of A
    committing n, whose bytes altered are refused by B (`packet-proof`) and
    then received as they are. B passes n's timeout; A's client of B is
    brought to B's head, which holds n's receipt. Sent to A's replicated
    gateways through a NATS node: an ack of m with n's proof, n's ack with
    its value tampered (a failed ack would refund what B credited), n's
    bytes altered, a timeout of n (B holds its receipt) and n's ack against
    a height A's client of B does not trust: each refused with its reason,
    escrow, balances, packets and client unchanged on all three gateways, on
    one head; n's genuine ack then settles it."""
    alice, bob = Device("alice", DOMAIN), Device("bob", B)
    alice.seq = bob.seq = 1 << 40
    intake = gws[0].rep.intake
    n = cbor.loads(kv(gws[0], xp.next_seq_key(B)) or b"") + 1
    m = n + 1
    due = b.head()[0] + 4
    await intake.submit(alice.make(txdecode.TYPE_SEND, {1: B, 2: bob.id, 3: 30, 4: due, 5: 0}))
    await intake.submit(alice.make(txdecode.TYPE_SEND, {1: B, 2: bob.id, 3: 20, 4: 0,
                                                        5: 2_000_000_000}))
    await until(lambda: all(r.rep.head_final() and kv(r, xp.packet_key(B, m)) is not None
                            for r in gws), gws, 30, "packets n and m open on all three")
    got = gws[0].store.prove_kv(xp.packet_key(B, n))
    assert got is not None and got[1] is not None
    blk, packet_n, proof_n = got
    await until(lambda: gws[0].store.certificate(blk.height) is not None, gws, 30,
                "A's header committing n final")
    cert = gws[0].store.certificate(blk.height)
    rep = await asyncio.to_thread(b.send, relayer.make(txdecode.TYPE_CLIENT_UPDATE, {
        1: DOMAIN, 2: [[blk.header_bytes, cert, None]]}))
    assert rep.ok and rep.status == 0, rep
    # n's bytes altered (a larger amount, another recipient), n's genuine proof: B refuses
    p = xp.decode(packet_n)
    bob_before = b.balance(bob.id)
    b_before = b.head()
    for altered in (xp.encode(p[1], p[2], p[3], p[4], p[5], p[6] * 10, p[7], p[8]),
                    xp.encode(p[1], p[2], p[3], p[4], Device("mallory", B).id, p[6], p[7],
                              p[8])):
        rep = await asyncio.to_thread(b.send, relayer.make(txdecode.TYPE_RELAY, {
            1: "recv", 2: altered, 3: blk.height, 4: proof_n}))
        assert (rep.ok, rep.reason, rep.detail) == (False, errors.BAD_PROOF, "packet-proof"), rep
    assert b.head() == b_before and b.kv(xp.receipt_key(DOMAIN, n)) is None
    assert b.balance(bob.id) == bob_before
    rep = await asyncio.to_thread(b.send, relayer.make(txdecode.TYPE_RELAY, {
        1: "recv", 2: packet_n, 3: blk.height, 4: proof_n}))
    assert rep.ok and rep.status == 0, rep
    assert b.balance(bob.id) == bob_before + 30
    while b.head()[0] < due:  # B passes n's timeout height (bob pays 1 to B's authority)
        paid = await asyncio.to_thread(b.send, bob.transfer(txm.device_id(b.auth_pub), 1))
        assert paid.ok, paid
    # A's client of B brought to B's head, which holds n's receipt
    with b.store() as s:
        bgot = s.prove_kv(xp.receipt_key(DOMAIN, n))
        assert bgot is not None
        bcert = s.certificate(bgot[0].height)
    bblk, ack_n, proof_ack = bgot
    assert ack_n == xp.ack(xp.ACK_OK) and bblk.height >= due and bcert is not None
    validators = validators_of(gws[0].gw.led.genesis)

    async def to_a(kind: int, body: dict[int, Any]) -> Any:
        msg = a_relayer.make(kind, body)
        return await asyncio.to_thread(lambda: submit(
            a_url, DOMAIN, msg, AUTHORITY[1], timeout=20, validators=validators))

    rep = await to_a(txdecode.TYPE_CLIENT_UPDATE, {1: B, 2: [[bblk.header_bytes, bcert, None]]})
    assert rep.ok and rep.status == 0, rep
    untrusted = bblk.height - 1  # a height of B never sent to A's client
    assert kv(gws[0], xp.header_key(B, bblk.height)) is not None
    assert kv(gws[0], xp.header_key(B, untrusted)) is None
    packet_m = kv(gws[0], xp.packet_key(B, m))
    assert packet_m is not None

    def state(r: Running) -> tuple[Any, ...]:
        return (balance(r, rules.ESCROW), balance(r, alice.id), balance(r, a_relayer.id),
                kv(r, xp.packet_key(B, n)), kv(r, xp.packet_key(B, m)), kv(r, xp.client_key(B)),
                r.store.kv_range(xp.headers_of(B)))

    await until(lambda: all(r.rep.head_final() for r in gws)
                and len({r.gw.led.head.hash for r in gws}) == 1, gws, 30, "one final head")
    before = [state(r) for r in gws]
    assert before[0][0] == 50 and before[0][3] == packet_n and all(x == before[0] for x in before)
    altered_n = xp.encode(p[1], p[2], p[3], p[4], p[5], p[6] + 1, p[7], p[8])
    cases = [
        ({1: "ack", 2: packet_m, 3: bblk.height, 4: proof_ack, 5: ack_n}, "ack-proof"),
        ({1: "ack", 2: packet_n, 3: bblk.height, 4: proof_ack,
          5: xp.ack(xp.ACK_FAILED, "unknown-device")}, "ack-proof"),
        ({1: "ack", 2: altered_n, 3: bblk.height, 4: proof_ack, 5: ack_n}, "packet-mismatch"),
        ({1: "timeout", 2: packet_n, 3: bblk.height, 4: proof_ack}, "absence-proof"),
        ({1: "ack", 2: packet_n, 3: untrusted, 4: proof_ack, 5: ack_n}, "untrusted-height"),
    ]
    for body, detail in cases:
        rep = await to_a(txdecode.TYPE_RELAY, body)
        assert (rep.ok, rep.reason, rep.detail) == (False, errors.BAD_PROOF, detail), (detail, rep)
    await until(lambda: all(r.rep.head_final() for r in gws)
                and len({r.gw.led.head.hash for r in gws}) == 1, gws, 30, "one final head")
    assert [state(r) for r in gws] == before
    # the genuine ack: n closed, its 30 burnt (it exists in B); m still open
    rep = await to_a(txdecode.TYPE_RELAY, {1: "ack", 2: packet_n, 3: bblk.height, 4: proof_ack,
                                           5: ack_n})
    assert rep.ok and rep.status == 0, rep
    await until(lambda: all(r.rep.head_final() and balance(r, rules.ESCROW) == 20
                            and kv(r, xp.packet_key(B, n)) is None for r in gws),
                gws, 30, "n settled on all three")
    assert all(balance(r, alice.id) == before[0][1] for r in gws)
