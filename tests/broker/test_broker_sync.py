"""tools/broker_sync.Watch: export on every new head, reload the broker only
when what it enforces changed (fakes for the chain and the broker; the real
thing against mosquitto is in test_broker_auth_mosquitto.py)."""

from __future__ import annotations

import signal
import subprocess
import threading
from dataclasses import dataclass, field

import pytest

from gateway.db.store import open_ledger
from gateway.node.config import GatewayConfig
from tests.support.ba_world import DOMAIN
from tests.support.waits import lines, wait_line, wait_on
from tools.broker_sync import Watch, reload_by_pid_file
from tools.build import tool


@dataclass
class Ex:
    digest: str
    users: list[str] = field(default_factory=lambda: ["gw", "a"])


class FakeChain:
    """A head and the digest its export would have; counts exports and reloads."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.head_hash = b"h0"
        self.digest = "d0"
        self.exports = 0
        self.reloads = 0
        self.lines: list[str] = []

    def set(self, head: bytes, digest: str) -> None:
        with self.cond:
            self.head_hash, self.digest = head, digest

    def head(self) -> bytes:
        with self.cond:
            return self.head_hash

    def export(self) -> tuple[Ex, int]:
        with self.cond:
            self.exports += 1
            self.cond.notify_all()
            return Ex(self.digest), self.exports

    def reload(self) -> str:
        with self.cond:
            self.reloads += 1
            return "reloaded"

    def log(self, line: str) -> None:
        with self.cond:
            self.lines.append(line)

    def wait_exports(self, n: int) -> None:
        wait_on(self.cond, lambda: self.exports >= n, 10,
                lambda: f"{n} exports expected, {self.exports} made")


def test_exports_on_each_new_head_and_reloads_only_on_a_change():
    chain = FakeChain()
    stop = threading.Event()
    w = Watch(chain.export, chain.head, chain.reload, chain.log)
    t = threading.Thread(target=w.run, args=(stop, 0.01), daemon=True)
    t.start()
    try:
        chain.wait_exports(1)  # the first export always reloads
        chain.set(b"h1", "d0")  # a block that changes no right
        chain.wait_exports(2)
        with chain.cond:
            assert chain.reloads == 1
        chain.set(b"h2", "d1")  # a block that does
        chain.wait_exports(3)
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()
    assert chain.exports == 3 and chain.reloads == 2  # the same head is not exported twice
    assert chain.lines == ["height 1: 2 users exported; reloaded",
                           "height 3: 2 users exported; reloaded"]


def test_a_failed_export_is_logged_and_tried_again():
    chain = FakeChain()
    export, failures = chain.export, [OSError("credentials.json: being rewritten")]

    def flaky() -> tuple[Ex, int]:
        if failures:
            raise failures.pop()
        return export()

    stop = threading.Event()
    t = threading.Thread(target=Watch(flaky, chain.head, chain.reload, chain.log).run,
                         args=(stop, 0.01), daemon=True)
    t.start()
    try:
        chain.wait_exports(1)
    finally:
        stop.set()
        t.join(10)
    assert chain.lines[0].startswith("export failed: OSError(") and chain.reloads == 1
    assert chain.lines[1] == "height 1: 2 users exported; reloaded"


def test_reload_by_pid_file_says_why_it_could_not(tmp_path):
    missing = tmp_path / "mosquitto.pid"
    assert "not reloaded" in reload_by_pid_file(missing)
    missing.write_text("not-a-pid\n")
    assert "not reloaded" in reload_by_pid_file(missing)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_the_command_watches_until_stopped(tmp_path, how):
    """`thingledger broker export --watch` exports at once, then stops cleanly
    on Ctrl-C or SIGTERM."""
    data, out = tmp_path / "gw", tmp_path / "mq"
    open_ledger(GatewayConfig(domain=DOMAIN, data_dir=data)).store.close()
    proc = subprocess.Popen([tool("thingledger"), "broker", "export", "--watch", "--out",
                             str(out), "--data-dir", str(data), "--poll", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    q, seen = lines(proc), []
    try:
        wait_line(q, r"^height 0: 1 users exported$", 30, seen)  # the gateway's user
        assert (out / "acl").exists() and (out / "passwd").exists()
        proc.send_signal(how)
        wait_line(q, r"^stopped$", 10, seen)
        assert proc.wait(10) == 0, "\n".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_other_changes_wake_an_export_with_the_head_unchanged():
    """`changes` (the NATS export's login bucket, the credential store): an
    export when it changes, at once when `wake` is set (the poll here is 60 s)."""
    chain = FakeChain()
    stop, wake = threading.Event(), threading.Event()
    version = [0]
    w = Watch(chain.export, chain.head, chain.reload, chain.log,
              changes=lambda: version[0], wake=wake)
    t = threading.Thread(target=w.run, args=(stop, 60.0), daemon=True)
    t.start()
    try:
        chain.wait_exports(1)
        chain.set(b"h0", "d1")  # the bucket brought a login: same head, new digest
        version[0] += 1
        wake.set()
        chain.wait_exports(2)
        with chain.cond:
            assert chain.reloads == 2
    finally:
        stop.set()
        wake.set()
        t.join(10)
    assert not t.is_alive()


def test_sigterm_stops_a_watch_that_waits_on_the_login_bucket(tmp_path):
    """With `--cluster` the watch waits on the login bucket's changes as well
    as the poll; SIGTERM still stops it at once, not after `--poll` (600 s
    here). No NATS node listens on the cluster's URL: the bucket is never read."""
    from tests.support.brokers import free_port

    data, auth = tmp_path / "gw", tmp_path / "auth.conf"
    open_ledger(GatewayConfig(domain=DOMAIN, data_dir=data)).store.close()
    proc = subprocess.Popen([tool("thingledger"), "broker", "export", "--watch", "--nats",
                             str(auth), "--data-dir", str(data), "--poll", "600",
                             "--cluster", f"nats://127.0.0.1:{free_port()}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    q, seen = lines(proc), []
    try:
        wait_line(q, r"^height 0: 1 users exported$", 30, seen)
        proc.send_signal(signal.SIGTERM)
        wait_line(q, r"^stopped$", 20, seen)
        assert proc.wait(10) == 0, "\n".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
