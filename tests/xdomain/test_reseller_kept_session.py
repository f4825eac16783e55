"""A reseller SIGKILLed mid-delivery loses nothing A's supplier streamed while
it was down (docs/CROSSDOMAIN.md, "A restarted reseller"): its connection to
A keeps its MQTT session (clean_session False, its login as client id,
tools/mqtt_ask.Line `keep`), so A's broker, a mosquitto, holds its
subscription to the agreement's stream and queues the readings (QoS 1) until
it connects again.

The shape of tests/xdomain/test_xdomain_board.py's kill test, with dom-a's
gateway on a mosquitto and A's stream read on A's broker (no bridge): rex
is SIGKILLed once batch 0 is committed in B; sam then streams readings 2
and 3 and commits batch 1 in A while rex is down; started again, rex takes
the agreement up and gets readings 2 and 3 from its kept session: the board
buys all 4. (Without the kept session they are gone and rex waits for them
in vain.)"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.db.genesis_files import create_domain
from gateway.market.ledger import rules as market
from gateway.xdomain import purchase
from shared import tx as txm
from tests.support.gwtest import Device, key
from tests.support.waits import lines, wait_line
from tests.xdomain.test_xdomain_board import (
    QUANTITY,
    REX_FUNDS,
    agreement_in,
    board_demands,
    clients_and_held_back_sam,
    delivered_after_restart,
    deploy_agreement,
    start_relay,
    start_reseller,
    wait_for,
)
from tests.xdomain.test_xdomain_e2e import A, B, Gateway
from tools.build import tool
from tools.xdomain_demo import interrupt

pytestmark = pytest.mark.mosquitto


class OnMosquitto(Gateway):
    """A `thingledger run` gateway of `domain` on a mosquitto (anonymous:
    Debian's defaults, which keep a persistent session's queue)."""

    def __init__(self, root: Path, domain: str, accounts: dict[bytes, int], mq) -> None:
        self.domain = domain
        self.dir = root / domain
        self.url = mq.url
        self.auth_priv, self.auth_pub = key("authority-" + domain)
        create_domain(self.dir, domain, accounts, authority_key=self.auth_priv)
        self.proc = subprocess.Popen(
            [tool("thingledger"), "run", "--no-boards", "--no-http", "--data-dir", str(self.dir),
             "--domain", domain, "--broker", self.url, "--block-interval", "0.2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.out = lines(self.proc)
        self.seen: list[str] = []
        wait_line(self.out, r"chain %s at height" % domain, 60, self.seen)


@pytest.fixture
def domains(tmp_path: Path, mosquitto_factory) -> Iterator[tuple[Gateway, Gateway]]:
    """dom-a on a mosquitto, dom-b on its embedded broker (bob holds 500,
    rex the reseller 100), each with its agreement contract."""
    gws: list[Gateway] = []
    try:
        gws.append(OnMosquitto(tmp_path, A, {}, mosquitto_factory()))
        gws.append(Gateway(tmp_path, B, {Device("bob", B).pub: 500,
                                         Device("rex", B).pub: REX_FUNDS}))
        for g in gws:
            deploy_agreement(g)
        yield gws[0], gws[1]
    finally:
        for g in gws:
            g.stop()


def committed_in_a(a: Gateway, aid: bytes) -> set[int]:
    """The batches of agreement `aid` its supplier committed in A."""
    with a.store() as s:
        return {e[3] for t in s.txs_of_type(txm.TYPE_CONTRACT_CALL) for e in t.events
                if len(e) == 7 and e[:3] == [market.AGREEMENT, purchase.COMMITTED, aid]}


def test_readings_streamed_while_the_reseller_is_down_reach_it_at_its_restart(
        domains: tuple[Gateway, Gateway], tmp_path: Path) -> None:
    a, b = domains
    sam_key, sam, stop, go_on = clients_and_held_back_sam(a, b)
    rex = Device("rex", B)
    procs = [start_relay(tmp_path, a, b, "relayer"), start_relay(tmp_path, b, a, "relayer-ba")]
    rp = start_reseller(tmp_path, a, b)  # A's directory and stream read on A's mosquitto
    procs.append(rp)
    rseen: list[str] = []
    rq = lines(rp)
    board = None
    try:
        board, bq, bseen, board_id, line = board_demands(tmp_path, b, rq, rseen, procs)
        aid_b = bytes.fromhex(line.split()[2])
        h = aid_b.hex()[:8]
        got = wait_line(rq, r"^resell: bought in dom-a: agreement \w{32} of %s"
                        % sam_key.id.hex(), 60, rseen)
        aid_a = bytes.fromhex(got.split("agreement ")[1][:32])
        for i in range(2):
            wait_line(bq, r"^bought agreement=%s index=%d value=%d scale=-2$"
                      % (h, i, 2150 + 7 * i), 60, bseen)
        wait_line(rq, r"^resell: %s commits readings 0..1 of %s in dom-b \(batch 0\)"
                  % (rex.id.hex()[:8], h), 30, rseen)
        rp.send_signal(signal.SIGKILL)
        rp.wait(10)
        # rex is down: sam streams readings 2 and 3 (each acknowledged by A's
        # mosquitto) and commits batch 1 in A
        go_on.set()
        wait_for(lambda: committed_in_a(a, aid_a) == {0, 1}, 60,
                 "sam's batch 1 committed in dom-a while rex is down")
        rp = start_reseller(tmp_path, a, b)
        procs.append(rp)
        rq = lines(rp)
        wait_line(rq, r"^resell: agreement %s in dom-b: taken up again, served by agreement "
                  r"%s in dom-a, 2 of 4 readings committed$" % (aid_b.hex(), aid_a.hex()),
                  60, rseen)
        delivered_after_restart(b, aid_b, bq, bseen, rq, rseen)
    finally:
        go_on.set()
        stop.set()
        sam.stop()
        if board is not None:
            board.terminate()
            board.wait(10)
        interrupt(procs)
    ag = agreement_in(b, aid_b)
    assert (ag["paid"], ag["failed"], ag["remaining"]) == (QUANTITY, 0, 0), ag
