"""The coordination node (tools/coordinator.py, `thingledger coordinator`,
issue 4 item 5) against a real broker (amqtt, anonymous) and an in-process
gateway: nodes join through the CLI, paho clients stand in for the full
nodes' status (retained online, last will offline), the coordinator assigns
every light node to an online full node and reassigns the light nodes of a
full node that drops off. Every wait is bounded."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.db import genesis_files as genesis
from gateway.db.store import Store
from gateway.node.config import DB_FILE
from shared import topics
from tests.support.brokers import unique, wait_until
from tests.support.e2e_devices import GatewayThread
from tests.support.waits import lines as output_lines
from tests.support.waits import retained, wait_line
from tools import cli
from tools.build import tool
from tools.coordinator import Assignment, Coordinator, plan
from tools.keys import KeyPair, load_key

DOMAIN = "demo"


# --------------------------------------------------------------------------- plan
def _ids(*names: str) -> dict[str, bytes]:
    return {n: bytes([i + 1]) * 16 for i, n in enumerate(names)}


def test_plan_least_loaded_tie_lowest_id() -> None:
    i = _ids("f1", "f2", "f3", "l1", "l2", "l3", "l4")
    fulls = [i["f1"], i["f2"], i["f3"]]
    # f1 serves l1 and is online; f2 is offline; f3 online with nothing
    lights = {i["l1"]: i["f1"], i["l2"]: i["f2"], i["l3"]: b"", i["l4"]: b"\x09" * 16}
    todo, waiting = plan(lights, fulls, {i["f1"], i["f3"], i["l1"]})
    assert waiting == []
    assert todo == [Assignment(i["l2"], i["f3"], i["f2"], "offline"),
                    Assignment(i["l3"], i["f1"], b"", "unassigned"),  # tie 1-1: lowest id
                    Assignment(i["l4"], i["f3"], b"\x09" * 16, "not-full")]
    # stable: nothing to do once every light node has an online full node
    after = {a.light: a.full for a in todo} | {i["l1"]: i["f1"]}
    assert plan(after, fulls, {i["f1"], i["f3"]}) == ([], [])
    # nobody online: everyone without a live full node waits
    assert plan(lights, fulls, set()) == ([], sorted([i["l1"], i["l2"], i["l3"], i["l4"]]))
    assert plan({}, fulls, set(fulls)) == ([], [])


# --------------------------------------------------------------------------- helpers
def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out + err


class StatusStandIn:
    """A full node's presence: a paho client with the last will "offline"
    (retained) that publishes "online" (retained) once connected; with a
    `login` (user, password) it logs in, its client id the node's id."""

    def __init__(self, broker, node_id: str, login: tuple[str, str] | None = None) -> None:
        self.topic = topics.status(DOMAIN, node_id)
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=node_id if login else unique(node_id[:8]),
                             protocol=mqtt.MQTTv311)
        if login:
            self.c.username_pw_set(*login)
        self.c.will_set(self.topic, b"offline", qos=1, retain=True)
        self.c.connect(broker.host, broker.port, keepalive=30)
        self.c.loop_start()
        self.c.publish(self.topic, b"online", qos=1, retain=True).wait_for_publish(5)

    def crash(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker sends the will."""
        self.c.loop_stop()
        self.c.socket().close()

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def assigned(data: Path) -> dict[str, str]:
    """light node id -> assigned full node id (hex, "" if none), committed."""
    with Store(data / DB_FILE, readonly=True) as s:
        return {i.hex(): r.assigned.hex() for i, r in s.devices() if r.node == "light"}


def new_keys(capsys: pytest.CaptureFixture[str], keys: Path,
             names: tuple[str, ...]) -> tuple[dict[str, str], dict[str, KeyPair]]:
    """`thingledger key new` for every name into `keys` (created): (name -> id hex,
    name -> loaded key)."""
    keys.mkdir()
    ids: dict[str, str] = {}
    for n in names:
        rc, out = run(capsys, "key", "new", "--out", str(keys / f"{n}.key"))
        assert rc == 0, out
        ids[n] = re.search(r"id\s+([0-9a-f]{32})", out)[1]
    return ids, {n: load_key(keys / f"{n}.key") for n in names}


def test_coordinator_assigns_and_reassigns(tmp_path: Path, amqtt_broker, capsys) -> None:
    keys, data = tmp_path / "keys", tmp_path / "gw"
    ids, k = new_keys(capsys, keys, ("owner", "coord", "full-a", "full-b", "light-1",
                                     "light-2", "light-3"))
    # an open domain with an owner (who certifies full nodes); the coordinator and
    # the light nodes are genesis accounts, the full nodes introduce themselves
    genesis.create_domain(data, DOMAIN, {k[n].public: 0 for n in
                                         ("coord", "light-1", "light-2", "light-3")},
                          admission="open", owner=k["owner"].public)
    gw = GatewayThread(data, amqtt_broker.url, DOMAIN, block_interval=0.1).start()
    net = ["--broker", amqtt_broker.url, "--data-dir", str(data)]
    stand_ins: list[StatusStandIn] = []
    coord: Coordinator | None = None
    proc: subprocess.Popen | None = None

    def join(name: str, *hw: str) -> None:
        rc, out = run(capsys, "node", "join", "--key", str(keys / f"{name}.key"), *hw, *net)
        assert rc == 0 and "(ok)" in out, out

    try:
        join("coord", "--power", "usb", "--ram-kib", "512", "--lifetime", "long")
        for n in ("full-a", "full-b"):
            rc, cert = run(capsys, "owner", "certify-node", "--key", str(keys / "owner.key"),
                           "--node", ids[n], "--data-dir", str(data))
            assert rc == 0, cert
            join(n, "--power", "mains", "--ram-kib", str(4 << 20), "--lifetime", "long",
                 "--certificate", cert.strip(), "--introduce")
        for n in ("light-1", "light-2"):
            join(n, "--power", "battery", "--ram-kib", "264", "--lifetime", "short")
        full_a, full_b = sorted((ids["full-a"], ids["full-b"]))  # a: the lower id
        lo, hi = sorted((ids["light-1"], ids["light-2"]))
        stand_ins = [StatusStandIn(amqtt_broker, full_a), StatusStandIn(amqtt_broker, full_b)]

        # 1. both light nodes assigned, one per full node (least loaded, lowest id)
        lines: list[str] = []

        def assigns() -> list[str]:  # (a "waiting" line may come first: statuses arrive)
            return [ln for ln in lines if ln.startswith("assign ")]

        coord = Coordinator(k["coord"], amqtt_broker.url, data, out=lines.append,
                            timeout=10).start()
        t = threading.Thread(target=coord.run, kwargs={"poll_s": 0.1}, daemon=True)
        t.start()
        wait_until(lambda: len(assigns()) >= 2 and assigned(data) == {lo: full_a, hi: full_b},
                   15, what=f"both light nodes assigned: {lines}")
        assert retained(amqtt_broker, topics.status(DOMAIN, ids["coord"])) == b"online"
        assert [ln.split(":")[0] for ln in assigns()] == [
            f"assign light node {lo} -> full node {full_a} (unassigned)",
            f"assign light node {hi} -> full node {full_b} (unassigned)"]
        assert all("committed at height" in ln and "(ok)" in ln for ln in assigns()), lines

        # 2. full node a drops off (its last will says offline): its light node moves to b
        stand_ins[0].crash()
        wait_until(lambda: len(assigns()) >= 3 and assigned(data) == {lo: full_b, hi: full_b},
                   15, what=f"reassignment: {lines}")
        assert assigns()[2].startswith(f"assign light node {lo} -> full node {full_b} "
                                       f"(was {full_a}: offline): committed at height")
        coord.request_stop()
        t.join(15)
        assert not t.is_alive()
        coord.close()
        # amqtt acknowledges a PUBLISH before its retained store has it: wait (bounded)
        wait_until(lambda: retained(amqtt_broker, topics.status(DOMAIN, ids["coord"]))
                   == b"offline", 10, what="coordinator's retained status offline")
        assert len(assigns()) == 3  # nothing moved twice
        rc, out = run(capsys, "nodes", "--data-dir", str(data))
        assert rc == 0
        for light in (lo, hi):
            assert re.search(rf"{light}\s+light\s+active\s+{full_b}", out), out

        # 3. the command: a returns, a third light node joins -> it goes to a (least
        # loaded); SIGINT stops the process cleanly
        stand_ins.append(StatusStandIn(amqtt_broker, full_a))
        proc = subprocess.Popen([tool("thingledger"), "coordinator", "--key",
                                 str(keys / "coord.key"), *net], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        q, seen = output_lines(proc), []
        wait_line(q, r"^coordinator [0-9a-f]{32} on .*: 2 light node\(s\), 2 full node\(s\)",
                  20, seen)
        join("light-3", "--power", "battery", "--ram-kib", "264", "--lifetime", "short")
        wait_line(q, rf"^assign light node {ids['light-3']} -> full node {full_a} "
                  r"\(unassigned\): committed at height \d+ \(ok\)", 15, seen)
        proc.send_signal(signal.SIGINT)
        wait_line(q, r"^coordinator stopped \(1 assignment\(s\) committed\)", 15, seen)
        assert proc.wait(15) == 0
        assert assigned(data) == {lo: full_b, hi: full_b, ids["light-3"]: full_a}
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if coord is not None:
            coord.request_stop()
            coord.close()
        for s in stand_ins:
            s.close()
        gw.stop()
