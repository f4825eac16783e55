"""Registry nodes as real processes (`thingledger registry serve`) on a real
broker (mosquitto): sync, submit through any node, a network split and its
healing, refusals of bad blocks, restart after SIGKILL, light lookups."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.errors import RegistryError
from gateway.registry import chain, wire
from gateway.registry.client import RegistryClient, RemoteRegistry
from gateway.registry.params import MAX_BLOCK_BYTES, load_genesis
from gateway.registry.view import RegistryView, registry_lookup
from shared import cbor, merkle, regproof
from shared import tx as txm
from tests.support.brokers import wait_until
from tests.support.registry_net import (
    Forge,
    NodeProc,
    Publisher,
    TcpProxy,
    announce,
    cli,
    head,
    init_genesis,
    join,
    tx_height,
    tx_of,
    wait_same_head,
)
from tests.support.registry_support import Mfr, device_pub


def key_file(tmp_path: Path, m: Mfr) -> Path:
    from gateway.db.genesis_files import write_key

    p = tmp_path / (m.name + ".key")
    write_key(p, m.priv)
    return p


def record_args(key: Path, dev: str, serial: str) -> list[str]:
    return ["registry", "record", "--key", str(key), "--pubkey", device_pub(dev).hex(),
            "--model", "TH-1", "--serial", serial, "--manufactured", "2026-01-01",
            "--warranty-end", "2028-01-01"]


@pytest.fixture
def nodes(tmp_path, mosquitto_broker):
    started: list[NodeProc] = []

    def start(name: str, url: str | None = None, *extra: str, mine: bool = False) -> NodeProc:
        n = NodeProc(tmp_path / name, url or mosquitto_broker.url, name, *extra, mine=mine)
        started.append(n)
        return n
    yield start
    for n in started:
        n.stop()


def test_three_nodes_share_records_and_converge_on_the_heavier_branch_after_a_split(
        tmp_path, mosquitto_broker, nodes):
    url = mosquitto_broker.url
    g = init_genesis(tmp_path / "a")
    for d in "bc":
        join(tmp_path / d, g)
    proxy = TcpProxy(mosquitto_broker.port)
    a = nodes("a", proxy.url, mine=True)
    b = nodes("b", None, mine=True)
    c = nodes("c")
    acme = Mfr("acme")
    key = key_file(tmp_path, acme)

    # submitted through the brokers' nodes, mined by one, seen by all
    r = cli("registry", "manufacturer", "--key", str(key), "--name", "Acme", "--to", url,
            "--genesis", str(g))
    assert r.returncode == 0, r.stdout + r.stderr
    # queued in c's own folder only: c (not a miner) relays it, a or b mines it
    r = cli(*record_args(key, "one", "S1"), "--registry-dir", str(tmp_path / "c"), "--no-mine")
    assert r.returncode == 0, r.stdout + r.stderr
    one = tx_of(r.stdout)
    wait_until(lambda: all(tx_height(n.dir, one) for n in (a, b, c)), 30, 0.1,
               "record one on every node")
    for n in (a, b, c):
        with RegistryView(n.dir) as v:
            rec = v.lookup(device_pub("one"))
            assert rec is not None and rec.serial == "S1" and rec.manufacturer_name == "Acme"
    fork_height, fork_hash = wait_same_head(a, b, c)

    # split: a loses the broker; both sides mine
    proxy.cut()
    a.expect("^disconnected$")
    r = cli(*record_args(key, "split-a", "SA"), "--registry-dir", str(a.dir), "--no-mine")
    lost = tx_of(r.stdout)
    wait_until(lambda: tx_height(a.dir, lost) == fork_height + 1, 30, 0.1, "a mines its branch")
    globex = Mfr("globex")
    gkey = key_file(tmp_path, globex)
    for args in (["registry", "manufacturer", "--key", str(gkey), "--name", "Globex"],
                 record_args(gkey, "split-b", "SB")):
        r = cli(*args, "--to", url, "--genesis", str(g))
        assert r.returncode == 0, r.stdout + r.stderr
    wait_same_head(b, c, height=fork_height + 2)
    assert head(a.dir)[0] == fork_height + 1 and tx_height(b.dir, lost) is None

    # healed: everyone on the heavier branch, a's tx mined again on it
    proxy.restore()
    a.expect(r"^reorg depth 1, ", 30)
    wait_until(lambda: all(tx_height(n.dir, lost) for n in (a, b, c))
               and len({head(n.dir) for n in (a, b, c)}) == 1, 30, 0.1, "convergence")
    final = head(a.dir)
    assert final[0] >= fork_height + 3
    assert tx_height(a.dir, lost) > fork_height + 2  # re-mined above the heavier branch
    for n in (a, b, c):
        assert RegistryView(n.dir).lookup(device_pub("split-b")) is not None
        r = cli("registry", "verify", "--registry-dir", str(n.dir))
        assert r.returncode == 0, r.stdout
        assert all(n.alive for n in (a, b, c))

    # light lookups through the broker: checked here, not trusted
    r = cli("registry", "show", device_pub("split-a").hex(), "--from", url, "--genesis", str(g),
            "--confirmations", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "serial        SA" in r.stdout and "checked       %d headers" % final[0] in r.stdout
    r = cli("registry", "show", device_pub("split-a").hex(), "--from", url, "--genesis", str(g),
            "--confirmations", "99")
    assert r.returncode == 1 and "NOT confirmed" in r.stdout
    # from a checkpoint the caller trusts: only the headers after it (and the
    # retarget window before it) travel; a wrong checkpoint hash is refused
    r = cli("registry", "show", device_pub("split-a").hex(), "--from", url, "--genesis", str(g),
            "--checkpoint", "%d:%s" % (fork_height, fork_hash.hex()))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "headers from checkpoint %d to height %d" % (fork_height, final[0]) in r.stdout
    r = cli("registry", "show", device_pub("split-a").hex(), "--from", url, "--genesis", str(g),
            "--checkpoint", "%d:%s" % (fork_height, bytes(32).hex()))
    assert r.returncode == 1 and "bad-checkpoint" in r.stderr

    # the domain gateway's claim check over MQTT (registry_url)
    look = registry_lookup(tmp_path / "c", url)
    assert look is not None
    found = look(device_pub("one"))
    assert found is not None and found.serial == "S1"
    assert look(device_pub("nobody")) is None
    look.__self__.close()


def test_a_node_refuses_bad_blocks_with_a_reason_and_keeps_its_chain(
        tmp_path, mosquitto_broker, nodes):
    g = init_genesis(tmp_path / "origin")
    join(tmp_path / "n", g)
    n = nodes("n", None, "--max-drift", "600", "--reorg-window", "3")
    forge = Forge(tmp_path / "forge", g)
    other = Forge(tmp_path / "other", init_genesis(tmp_path / "elsewhere", bits=3))
    acme = Mfr("acme")
    pub = Publisher(mosquitto_broker.port)
    digest = forge.digest
    try:
        good = forge.good([acme.register()])
        pub.send(wire.TOPIC_BLOCKS, announce(good, digest))
        n.expect(r"^head 1 " + good.hash.hex())
        txs = [acme.record("dev", "S1")]
        forged_tx = Mfr("forger").make(txm.TYPE_DEVICE_RECORD,
                                       {1: device_pub("x"), 2: "M", 3: "S", 4: 1, 5: 2},
                                       sender=acme.id, seq=7)
        bad = {
            "bad-target": forge.seal(forge.fields(txs, target=forge.tree.targets[-1] * 2), txs),
            "bad-pow": forge.seal(forge.fields(txs), txs, good_pow=False),
            "state-root-mismatch": forge.seal(forge.fields(txs, state_root=bytes(32)), txs),
            "bad-tx": forge.seal(dict(forge.fields([]), tx_root=merkle.root([forged_tx])),
                                 [forged_tx]),
            "time-in-future": forge.seal(forge.fields(txs, time=int(time.time()) + 3 * 3600),
                                         txs),
        }
        for reason, blk in bad.items():
            pub.send(wire.TOPIC_BLOCKS, announce(blk, digest))
            n.expect(r"^refused block %s from evil: %s " % (blk.hash.hex(), reason))
        # replayed old block, wrong genesis, oversized, malformed
        pub.send(wire.TOPIC_BLOCKS, announce(good, digest))
        n.expect(r"^refused block %s from evil: known-block" % good.hash.hex())
        alien = other.good([Mfr("alien").register()])
        pub.send(wire.TOPIC_BLOCKS, announce(alien, other.digest))
        n.expect(r"^refused block from evil: genesis-mismatch")
        pub.send(wire.TOPIC_BLOCKS, b"\x00" * (MAX_BLOCK_BYTES + 2048))
        n.expect(r"^refused message on tl/registry/blocks: too-large")
        pub.send(wire.TOPIC_BLOCKS, b"\xa1\x61")
        n.expect(r"^refused message on tl/registry/blocks: bad-message")
        pub.send(wire.TOPIC_TX, b"\x01\x02")
        n.expect(r"^refused message on tl/registry/tx: bad-cbor")
        for req in ({"op": "blocks", "locator": [[1]]}, {"op": "nope"},
                    {"op": "lookup", "key": b"short"}, {"op": "status", "tx": 5}):
            pub.send(wire.TOPIC_REQ, cbor.dumps(dict(req, id=b"", genesis=digest,
                                                     reply=wire.rsp_topic("evil"))))
            n.expect(r"^refused message on tl/registry/req: bad-message")
        assert head(n.dir) == (1, good.hash)

        # the chain goes on: good blocks are taken, then a flood of cheap
        # side blocks from far below is refused (low-work), memory bounded
        for i in range(4):
            blk = forge.good([acme.record("d%d" % i, "S%d" % i)] if i else txs)
            pub.send(wire.TOPIC_BLOCKS, announce(blk, digest))
            n.expect(r"^head %d %s" % (blk.height, blk.hash.hex()))
        cheap_forge = Forge(tmp_path / "cheap", g)
        cheap = cheap_forge.good([Mfr("cheap").register()])
        pub.send(wire.TOPIC_BLOCKS, announce(cheap, digest))
        n.expect(r"^refused block %s from evil: low-work" % cheap.hash.hex())
        for i in range(20):  # its descendants: orphans in a bounded pool, never the head
            blk = cheap_forge.good([Mfr("c%d" % i).register()])
            pub.send(wire.TOPIC_BLOCKS, announce(blk, digest))
        pub.send(wire.TOPIC_BLOCKS, announce(good, digest))  # a marker after the flood
        n.expect(r"^refused block %s from evil: known-block" % good.hash.hex())
        assert head(n.dir) == (5, forge.tree.head_hash) and n.alive
    finally:
        pub.close()
        forge.close()
        other.close()


def test_a_node_restarted_after_sigkill_catches_up(tmp_path, mosquitto_broker, nodes):
    url = mosquitto_broker.url
    g = init_genesis(tmp_path / "a")
    join(tmp_path / "b", g)
    a = nodes("a", None, mine=True)
    b = nodes("b")
    acme = Mfr("acme")
    key = key_file(tmp_path, acme)
    assert cli("registry", "manufacturer", "--key", str(key), "--name", "Acme", "--to", url,
               "--genesis", str(g)).returncode == 0
    wait_same_head(a, b, height=1)
    b.kill()
    for i in range(5):
        r = cli(*record_args(key, "k%d" % i, "K%d" % i), "--to", url, "--genesis", str(g))
        assert r.returncode == 0, r.stdout + r.stderr
    assert head(b.dir)[0] == 1 and head(a.dir)[0] == 6
    b.start()
    h, _ = wait_same_head(a, b, height=6)
    assert h == 6
    assert cli("registry", "verify", "--registry-dir", str(b.dir)).returncode == 0


def test_light_lookup_refuses_a_lying_nodes_answers(tmp_path):
    """What a node could send instead of the truth (client.check_answer)."""
    from gateway.registry.client import check_answer, genesis_tip

    g_file = init_genesis(tmp_path / "origin")
    forge = Forge(tmp_path / "f", g_file)
    g = load_genesis(tmp_path / "origin")
    acme = Mfr("acme")
    forge.good([acme.register()])
    forge.good([acme.record("dev", "S1")])
    did = txm.device_id(device_pub("dev"))
    p = forge.reg.prove(did)
    headers = [forge.reg.store.get_block(h).header_bytes for h in (1, 2)]
    honest = {"headers": headers, "record": [p.leaf, p.index, p.size, p.path]}
    tip, rec, _ = check_answer(g, genesis_tip(g), honest, did)
    assert rec is not None and rec.serial == "S1" and tip.height == 2

    forged_leaf = p.leaf.replace(b"S1", b"S2")
    lies = {
        "bad-proof": dict(honest, record=[forged_leaf, p.index, p.size, p.path]),
        "bad-link": dict(honest, headers=headers[1:]),
    }
    # an easy header chain: targets the rule does not allow
    f = chain.header_fields(height=1, prev_hash=genesis_tip(g).hash, time=g.time,
                            tx_root=merkle.EMPTY_ROOT, receipts_root=merkle.EMPTY_ROOT,
                            state_root=bytes(32), proposer=chain.ANONYMOUS_MINER,
                            target=regproof.MAX_TARGET)
    easy = forge.seal(f, [])
    lies["bad-target"] = dict(honest, headers=[easy.header_bytes])
    for detail, m in lies.items():
        with pytest.raises(Exception) as e:
            check_answer(g, genesis_tip(g), m, did)
        assert e.value.detail == detail, detail
    forge.close()


def test_client_without_nodes_is_unavailable(tmp_path, mosquitto_broker):
    init_genesis(tmp_path / "r")
    g = load_genesis(tmp_path / "r")
    with RegistryClient(mosquitto_broker.url, g, timeout_s=1, settle_s=0.1) as c:
        with pytest.raises(Exception) as e:
            c.lookup(device_pub("x"))
        assert e.value.reason == "registry-unavailable"
    r = RemoteRegistry(mosquitto_broker.url, g, timeout_s=1)
    with pytest.raises(RegistryError) as e:
        r.lookup(device_pub("x"))
    assert e.value.reason == "registry-unavailable"
    r.close()


def test_a_domain_claims_against_registry_nodes_over_mqtt(tmp_path, mosquitto_broker, nodes):
    """GatewayConfig.registry_url: the claim check asks the nodes (and checks)."""
    from gateway.errors import ConfigError
    from gateway.node.config import from_dict
    from shared import errors
    from tests.support.idtest import World

    url = mosquitto_broker.url
    g = init_genesis(tmp_path / "a")
    nodes("a", None, mine=True)
    joined = tmp_path / "gateway-registry"  # the domain's folder: registry.toml only
    joined.mkdir()
    (joined / g.name).write_bytes(g.read_bytes())
    acme = Mfr("acme")
    key = key_file(tmp_path, acme)
    look = registry_lookup(joined, url, 1)
    assert look is not None
    world = World(tmp_path / "domain", registry=look)
    try:
        assert cli("registry", "manufacturer", "--key", str(key), "--name", "Acme", "--to",
                   url, "--genesis", str(g)).returncode == 0
        r = cli("registry", "record", "--key", str(key), "--pubkey", world.sensor.pub.hex(),
                "--model", "TH-1", "--serial", "S1", "--manufactured", "2026-01-01",
                "--warranty-end", "2028-01-01", "--to", url, "--genesis", str(g))
        assert r.returncode == 0, r.stdout + r.stderr
        world.commit(world.claim(world.sensor))
        assert world.rec(world.sensor).owner == world.owner.id
        assert world.refused(world.claim(world.stranger)) == (errors.NOT_IN_REGISTRY,
                                                              errors.NOT_IN_REGISTRY)
    finally:
        world.close()
        look.__self__.close()
    cfg = from_dict({"domain": "d", "registry_dir": str(joined), "registry_url": url,
                     "registry_confirmations": 2})
    assert cfg.registry_url == url and cfg.registry_confirmations == 2
    with pytest.raises(ConfigError) as e:
        from_dict({"domain": "d", "registry_url": url})
    assert e.value.key == "registry_url"


def test_a_heavier_branch_longer_than_one_reply_is_fetched_batch_after_batch(
        tmp_path, mosquitto_broker, nodes):
    """x holds 550 blocks, y a branch of 600 forking at genesis: y's first
    reply (500 blocks) is lighter than x's chain, the next batch continues
    after its last block, and x reorganises onto y's branch."""
    from gateway.registry.node import BATCH_BLOCKS

    g = init_genesis(tmp_path / "origin")
    fx, fy = Forge(tmp_path / "x", g), Forge(tmp_path / "y", g, miner=b"y" * 16)
    for _ in range(550):
        fx.good([])
    for _ in range(600):
        fy.good([])
    assert BATCH_BLOCKS < 550
    want = fy.tree.head_hash
    fx.close()
    fy.close()
    x = nodes("x")
    nodes("y")
    x.expect(r"^reorg depth 550, 0 txs back to the mempool", 60)
    wait_until(lambda: head(x.dir) == (600, want), 30, 0.1, "x on y's branch")
