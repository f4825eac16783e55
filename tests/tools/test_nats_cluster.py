"""tools/nats_cluster.py: the NATS nodes of a replicated domain as `thingledger
run --gateways 3` starts them: config files (JetStream with sync_interval
always, cluster routes, MQTT on 1883-1885 by default), one pid file per node,
Ctrl-C stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support.brokers import ROOT, free_run_of_ports, port_open, wait_until
from tests.support.nats import have_nats
from tests.support.waits import lines, wait_line
from tools.nats_cluster import MQTT_BASE_PORT, NatsCluster, nats_server_exe


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too (reaped by its parent soon)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_default_config_is_the_run_layout(tmp_path):
    c = NatsCluster(tmp_path, 3, mqtt_base=MQTT_BASE_PORT, pid_dir=tmp_path / "run")
    texts = [n.config_text() for n in c.nodes]
    for i, t in enumerate(texts):
        assert f'listen: "127.0.0.1:{1883 + i}"' in t.split("mqtt {")[1]
        assert "stream_replicas: 3" in t.split("mqtt {")[1]  # MQTT logins outlive a node
        assert "sync_interval: always" in t and f'server_name: "nats{i + 1}"' in t
        others = [n.cluster_port for j, n in enumerate(c.nodes) if j != i]
        assert all(f"nats-route://127.0.0.1:{p}" in t for p in others)
    assert [n.pid_file for n in c.nodes] == [tmp_path / "run" / f"nats{i}.pid"
                                             for i in (1, 2, 3)]


def test_cluster_process_writes_pids_and_stops_on_ctrl_c(tmp_path):
    if not have_nats():
        pytest.skip("nats-server not installed")
    assert os.access(nats_server_exe(), os.X_OK)
    base = free_run_of_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "tools.nats_cluster", str(tmp_path),
                             "--mqtt-base", str(base)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    q = lines(proc)
    try:
        pids = {}
        for i in (1, 2, 3):
            line = wait_line(q, rf"^nats{i}: .* pid (\d+)", 30, seen)
            pids[f"nats{i}"] = int(line.rsplit(" ", 1)[1])
        for name, pid in pids.items():
            assert (tmp_path / "run" / f"{name}.pid").read_text().strip() == str(pid)
            assert _alive(pid)
        assert all(port_open("127.0.0.1", base + i) for i in range(3))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        for name, pid in pids.items():
            assert not _alive(pid), name
            assert not (tmp_path / "run" / f"{name}.pid").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_nodes_die_with_a_killed_cluster_process(tmp_path):
    """SIGKILL of the process that started the nodes (a run killed outright)
    takes them with it: no NATS server left holding the ports."""
    if not have_nats():
        pytest.skip("nats-server not installed")
    base = free_run_of_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "tools.nats_cluster", str(tmp_path),
                             "--mqtt-base", str(base)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    q = lines(proc)
    try:
        pids = [int(wait_line(q, rf"^nats{i}: .* pid (\d+)", 30, seen).rsplit(" ", 1)[1])
                for i in (1, 2, 3)]
    finally:
        proc.kill()
        proc.wait(10)
    wait_until(lambda: not any(_alive(p) for p in pids), 20,
               what="the NATS nodes to end with their killed parent")
