"""`thingledger doctor`: one line per check, ok or FAIL with a hint, exit 0 only
when every check passes (tools/doctor.py, tools/cli/doctor.py)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.brokers import AmqttBroker, free_port
from tests.support.gwtest import Device, Node
from tools import cli, doctor

ROOT = Path(__file__).resolve().parent.parent.parent
NAMES = ["broker", "data-dir", "key-files", "chain", "clock", "disk"]


@pytest.fixture
def data(node: Node, alice: Device, bob: Device) -> Node:
    node.submit_all([alice.reading(2150, -2), alice.transfer(bob, 10)])
    node.produce()
    return node


def lines_of(out: str) -> dict[str, str]:
    """check name -> its line; every line is `ok|FAIL name ...`."""
    got = {}
    for line in out.splitlines():
        status, name = line.split()[:2]
        assert status in ("ok", "FAIL"), line
        got[name] = line
    assert list(got) == NAMES, out
    return got


def doctor_cli(capsys: pytest.CaptureFixture[str], data_dir: Path, url: str,
               *extra: str) -> tuple[int, dict[str, str]]:
    rc = cli.main(["doctor", "--data-dir", str(data_dir), "--broker", url, "--timeout", "2",
                   "--min-free-mb", "1", *extra])
    out, _ = capsys.readouterr()
    return rc, lines_of(out)


def failing(lines: dict[str, str]) -> list[str]:
    return [n for n, line in lines.items() if line.startswith("FAIL")]


def test_healthy_machine_all_ok(data: Node, amqtt_broker: AmqttBroker,
                                capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = doctor_cli(capsys, data.data_dir, amqtt_broker.url)
    assert rc == 0 and failing(lines) == [], lines
    assert f"{amqtt_broker.url} answers" in lines["broker"]
    assert "1 key file(s), all 0600" in lines["key-files"]
    assert "2 blocks" in lines["chain"] and "head 1" in lines["chain"]


def test_broker_down(data: Node, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"  # nobody listens
    rc, lines = doctor_cli(capsys, data.data_dir, url)
    assert rc == 1 and failing(lines) == ["broker"], lines
    assert "Connection refused" in lines["broker"]
    assert "systemctl start mosquitto" in lines["broker"]


def test_not_an_mqtt_port(data: Node, capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def answer_http() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(64)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    t = threading.Thread(target=answer_http, daemon=True)
    t.start()
    try:
        rc, lines = doctor_cli(capsys, data.data_dir, f"mqtt://127.0.0.1:{port}")
    finally:
        t.join(5)
        srv.close()
    assert rc == 1 and failing(lines) == ["broker"], lines
    assert "no CONNACK" in lines["broker"] and "an MQTT broker?" in lines["broker"]


def test_key_file_readable_by_others(data: Node, amqtt_broker: AmqttBroker,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    key = data.data_dir / "authority.key"
    key.chmod(0o644)
    rc, lines = doctor_cli(capsys, data.data_dir, amqtt_broker.url)
    assert rc == 1 and failing(lines) == ["key-files"], lines
    assert "authority.key 0644" in lines["key-files"]
    assert f"chmod 600 {key}" in lines["key-files"]


def test_tampered_chain(data: Node, alice: Device, amqtt_broker: AmqttBroker,
                        capsys: pytest.CaptureFixture[str]) -> None:
    db = sqlite3.connect(data.store.path)
    with db:
        db.execute("UPDATE devices SET balance = 1 WHERE id = ?", (alice.id,))
    db.close()
    rc, lines = doctor_cli(capsys, data.data_dir, amqtt_broker.url)
    assert rc == 1 and failing(lines) == ["chain"], lines
    assert "does not verify" in lines["chain"] and "state-mismatch" in lines["chain"]
    assert "thingledger chain verify" in lines["chain"]


def test_missing_data_dir(tmp_path: Path, amqtt_broker: AmqttBroker,
                          capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = doctor_cli(capsys, tmp_path / "nowhere", amqtt_broker.url)
    assert rc == 1
    assert failing(lines) == ["data-dir", "key-files", "chain", "clock"], lines
    assert "install -d" in lines["data-dir"]


def test_read_only_data_dir(data: Node, amqtt_broker: AmqttBroker,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """As a user: a 0555 folder. As root (who writes anyway): the folder
    bind-mounted read-only in a mount namespace of the doctor's own."""
    data.close()
    d = data.data_dir
    argv = ["doctor", "--data-dir", str(d), "--broker", amqtt_broker.url, "--timeout", "2",
            "--min-free-mb", "1"]
    if os.geteuid() != 0:
        d.chmod(0o555)
        try:
            rc = cli.main(argv)
            out = capsys.readouterr().out
        finally:
            d.chmod(0o755)
    else:
        unshare = shutil.which("unshare")
        if unshare is None:
            pytest.skip("running as root and no unshare(1) to mount the data dir read-only")
        script = (f"mount --bind {d} {d} && mount -o remount,bind,ro {d} && "
                  f"exec {sys.executable} -m tools.cli " + " ".join(argv))
        p = subprocess.run([unshare, "-m", "sh", "-c", script], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        if "mount" in p.stderr and not p.stdout:
            pytest.skip(f"cannot mount read-only here (root without CAP_SYS_ADMIN): {p.stderr}")
        rc, out = p.returncode, p.stdout
    lines = lines_of(out)
    assert rc == 1 and "data-dir" in failing(lines), out
    assert "not writable" in lines["data-dir"] and "chown" in lines["data-dir"]
    if lines["chain"].startswith("FAIL"):  # a WAL database cannot be opened read-only
        assert "see data-dir" in lines["chain"], out


def test_clock_before_head_block() -> None:
    c = doctor.check_clock(head_time=2_000_000_000, now=1_999_999_000)
    assert not c.ok and "1000 s before the head block" in c.line()
    assert "timesyncd" in c.line()
    assert doctor.check_clock(head_time=1_000, now=1_060).ok


def test_disk_under_threshold(data: Node, amqtt_broker: AmqttBroker,
                              capsys: pytest.CaptureFixture[str]) -> None:
    free_mb = shutil.disk_usage(data.data_dir).free // (1024 * 1024)
    rc = cli.main(["doctor", "--data-dir", str(data.data_dir), "--broker", amqtt_broker.url,
                   "--min-free-mb", str(free_mb + 10_000)])
    lines = lines_of(capsys.readouterr().out)
    assert rc == 1 and failing(lines) == ["disk"], lines
    assert "MiB free, under" in lines["disk"]
