"""`thingledger` commands for the broker area (docs/IDENTITY.md §3).

    thingledger broker export (--out DIR | --nats FILE) [--data-dir D] [--credentials FILE]
                              [--authority-key FILE] [--key FILE ...]
                              [--group G] [--owner U]
                              [--watch [--reload-pid-file FILE] [--poll S]]
                              [--cluster URLS]

writes DIR/passwd (mosquitto 2 `$7$` PBKDF2-SHA512 hashes) and DIR/acl from the
chain (the domain's identities in the stored state) and the owner's local
credential store (default DATA_DIR/credentials.json, written by `board claim`).
The gateway's own user comes from the authority key. Revoked and
decommissioned principals are left out; the operator then reloads mosquitto
(`kill -HUP <pid>` or `systemctl reload mosquitto`). The files are mode 0600
for whoever runs the export; a mosquitto that runs as its own user (Debian:
`mosquitto`) needs `--group mosquitto` (mode 0640, that group) or `--owner
mosquitto`, else it cannot read them and a reload refuses every login.
An export is a snapshot;
`--watch` keeps the files in step with the chain and reloads mosquitto
itself (tools/broker_sync.py).

`--nats FILE` writes, instead, a NATS `authorization` block (bcrypt hashes,
publish/subscribe allow lists of the MQTT-derived subjects: topic a/b is subject
a.b) for a NATS cluster's MQTT listeners (gateway/broker/nats_export.py); each
node's config includes it, and SIGHUP (or `--watch --reload-pid-file`) reloads it.
With `--cluster URLS` (the NATS cluster's client URLs) the logins of this
machine's credential store are shared with the other machines through the
cluster's login bucket (gateway/cluster/login_bucket.py), and the export is
the union of local and bucket logins, each verified against its principal's
current key on this chain (gateway/broker/shared_logins.py); `--watch` then
exports again when the bucket or the credential store changes, not only on
a new head (docs/CONSENSUS.md, "Admission on several machines").
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.cli.common import EXIT_FAILED, EXIT_OK, Subparsers, UsageError, load_key_file


def access_from_state(state: Any, domain: str) -> Any:
    """The domain's identity state machine over a stored state (tests swap it)."""
    from gateway.identity.access import Access

    return Access.from_state(state, domain)


@dataclass
class Exporter:
    """One export of the domain's mosquitto files, repeatable (--watch): the
    chain and the credential store are read again on every call."""

    data: Path
    out: Path | None  # mosquitto's folder, or None with `nats`
    domain: str
    gateway: tuple[str, str]  # the gateway's user and password
    creds_path: Path
    persons: dict[bytes, str]  # people's logins from --key
    files: Any = None  # broker_auth.FileAccess from --owner / --group (None: 0600, mine)
    nats: Path | None = None  # --nats FILE: the NATS authorization block instead
    digest: str | None = None  # of the NATS file as last written (kept if unchanged)
    cluster: list[str] = field(default_factory=list)  # --cluster: the login bucket's NATS
    bucket: Any = None  # gateway.cluster.login_bucket.SharedLogins, once started
    remembered: dict[bytes, str] = field(default_factory=dict)  # logins that verified here
    reported: set[tuple[str, str]] = field(default_factory=set)  # bucket entries left out
    verdicts: dict = field(default_factory=dict)  # signature checks of the last export
    say: Callable[[str], None] = field(default=lambda t: print(t, file=sys.stderr))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Exporter:
        from gateway import broker as broker_auth
        from gateway.db import genesis_files as genesis
        from gateway.node.config import DB_FILE, GENESIS_FILE, KEY_FILE

        data = Path(args.data_dir)
        if (args.out is None) == (getattr(args, "nats", None) is None):
            raise UsageError("say where to export: --out DIR (mosquitto) or --nats FILE")
        if not (data / DB_FILE).exists():
            raise UsageError(f"no chain database at {data / DB_FILE} (use --data-dir)")
        try:
            g = genesis.load(data / GENESIS_FILE)
            priv = genesis.load_authority_key(Path(args.authority_key or data / KEY_FILE), g)
        except genesis.GenesisError as e:
            raise UsageError(str(e)) from None
        persons: dict[bytes, str] = {}
        for path in args.key or ():  # people's own logins (owner CLI, dashboards)
            from tools.submit import login_for

            user, pw = login_for(load_key_file(path), g.domain)
            persons[bytes.fromhex(user)] = pw
        creds = Path(args.credentials) if args.credentials else data / broker_auth.CREDENTIALS_FILE
        try:
            files = broker_auth.file_access(args.owner, args.group)
        except broker_auth.FileAccessError as e:
            raise UsageError(str(e)) from None
        nats = Path(args.nats) if getattr(args, "nats", None) else None
        cluster = [u.strip() for u in (getattr(args, "cluster", None) or "").split(",")
                   if u.strip()]
        if cluster and nats is None:
            raise UsageError("--cluster shares logins through a NATS cluster: use it with --nats")
        if any(not u.startswith(("nats://", "tls://")) for u in cluster):
            raise UsageError("--cluster: comma-separated nats:// (or tls://) URLs")
        ex = cls(data, Path(args.out) if args.out else None, g.domain,
                 broker_auth.gateway_credentials(priv, g.domain), creds, persons, files, nats,
                 cluster=cluster)
        ex.credentials()  # a broken store is a usage error now, not in the watch
        return ex

    def credentials(self) -> dict[bytes, str]:
        from gateway import broker as broker_auth

        try:
            creds = broker_auth.load_credentials(self.creds_path)
        except ValueError as e:
            raise UsageError(str(e)) from None
        return {**creds, **self.persons}

    def start_bucket(self, say: Callable[[str], None],
                     wake: threading.Event | None = None) -> Any:
        """Follow the cluster's login bucket (gateway/cluster/login_bucket.py);
        `wake` is set on each change of it."""
        from gateway.cluster.login_bucket import SharedLogins

        self.bucket = SharedLogins(self.cluster, self.domain, self.gateway, say=say,
                                   wake=wake).start()
        return self.bucket

    def changes(self) -> object:
        """What an export reads besides the chain: the bucket's version and the
        credential store's (mtime, size), so that --watch exports again when
        either changes, not only on a new head."""
        try:
            st = self.creds_path.stat()
            local: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            local = None
        return (self.bucket.version if self.bucket is not None else None, local)

    def shared(self, access: Any, creds: dict[bytes, str]) -> dict[bytes, str]:
        """The logins to export: this machine's and the bucket's, each verified
        against its principal's current key on this chain
        (gateway/broker/shared_logins.py); the bucket entries left out are
        reported once, this machine's verified logins the bucket lacks published."""
        from gateway.broker.shared_logins import choose_logins

        c = choose_logins(self.domain, access, creds, self.bucket.entries(), self.remembered,
                          self.gateway[0], self.verdicts)
        for (key, value), why in sorted(c.left_out.items()):
            if (key, value) not in self.reported:
                self.say(f"login bucket: {key} left out ({why}): {value[:16]}...")
        self.reported = set(c.left_out)
        self.bucket.publish(c.publish)
        return c.logins

    def head(self) -> bytes | None:
        from gateway.db.store import Store
        from gateway.node.config import DB_FILE

        with Store(self.data / DB_FILE, readonly=True) as store:
            h = store.head()
        return h.hash if h is not None else None

    def __call__(self) -> tuple[Any, int]:
        """Write passwd and acl: (broker_auth.Export, the chain's height)."""
        from gateway import broker as broker_auth
        from gateway.db.store import Store
        from gateway.node.config import DB_FILE

        creds = self.credentials()
        with Store(self.data / DB_FILE, readonly=True) as store:
            state = store.load_state()
            head = store.head()
        access = access_from_state(state, self.domain)
        if self.bucket is not None:
            creds = self.shared(access, creds)
        if self.nats is not None:
            from gateway.broker.nats_export import export_nats

            # on every head of a watch: rewritten (bcrypt, each user) only on a change
            ex = export_nats(self.nats, self.domain, access, creds, self.gateway,
                             self.files or broker_auth.PRIVATE, unchanged=self.digest)
            self.digest = ex.digest
        else:
            assert self.out is not None
            ex = broker_auth.export_mosquitto(self.out, self.domain, access, creds,
                                              self.gateway, self.files or broker_auth.PRIVATE)
        return ex, head.height if head is not None else 0


BUCKET_WAIT_S = 15.0  # s an export waits for the login bucket's content


def cmd_export(args: argparse.Namespace) -> int:
    from gateway import broker as broker_auth

    job = Exporter.from_args(args)
    if args.watch:
        return watch(job, args)
    if job.cluster:
        bucket = job.start_bucket(job.say)
        try:
            if not bucket.wait_loaded(BUCKET_WAIT_S):
                print(f"the login bucket on {','.join(job.cluster)} was not read in "
                      f"{BUCKET_WAIT_S:g} s (no node reachable, or none admits the gateways' "
                      "user yet: a first export goes without --cluster, or use --watch): "
                      "nothing exported", file=sys.stderr)
                return EXIT_FAILED
            code = _export_once(job, broker_auth)
            if not bucket.flush(BUCKET_WAIT_S):
                print("some of this machine's logins were not written to the login bucket",
                      file=sys.stderr)
            return code
        finally:
            bucket.stop()
    return _export_once(job, broker_auth)


def _export_once(job: Exporter, broker_auth: Any) -> int:
    try:
        ex, height = job()
    except broker_auth.FileAccessError as e:
        raise UsageError(str(e)) from None
    where = (str(job.nats) if job.nats is not None else
             f"{job.out / broker_auth.PASSWD_FILE}, {job.out / broker_auth.ACL_FILE}")
    print(f"domain {job.domain} at height {height}: {len(ex.users)} users "
          f"(gateway {ex.users[0]}) -> {where}")
    for pid, why in sorted(ex.skipped.items()):
        print(f"skipped {pid}: {why}", file=sys.stderr)
    if job.nats is not None:
        print(f"each NATS node's config needs: include \"{job.nats}\" (MQTT on NATS also "
              "needs server_name and jetstream); reload them with SIGHUP")
        return EXIT_OK
    print("mosquitto needs: password_file, acl_file, allow_anonymous false, "
          "use_username_as_clientid true; reload it with SIGHUP")
    return EXIT_OK


def watch(job: Exporter, args: argparse.Namespace) -> int:
    """--watch: export on every new block, SIGHUP mosquitto when what it
    enforces changed (tools/broker_sync.py); stops on Ctrl-C or SIGTERM."""
    from tools.broker_sync import Watch, reload_by_pid_file

    if args.poll <= 0:
        raise UsageError("--poll must be a positive number of seconds")
    pid_file = Path(args.reload_pid_file) if args.reload_pid_file else None

    def log(line: str) -> None:
        print(line, flush=True)

    stop, wake = threading.Event(), threading.Event()

    def halt(*_: Any) -> None:
        stop.set()
        wake.set()  # (a watch waiting on the login bucket's changes: it sees `stop` now)

    signal.signal(signal.SIGTERM, halt)
    log(f"watching the chain of {job.domain} in {job.data}: exports to {job.nats or job.out}"
        + (f", reloads the pid in {pid_file}" if pid_file else " (no --reload-pid-file)")
        + (f"; logins shared through the bucket on {','.join(job.cluster)}"
           if job.cluster else ""))
    job.say = log
    try:
        if job.cluster:
            job.start_bucket(log, wake)
            # a restarted watch does not drop the other machines' logins for a moment
            if not job.bucket.wait_loaded(BUCKET_WAIT_S):
                log("login bucket not read yet: exporting this machine's logins; the "
                    "bucket's follow when it answers")
        name = "the NATS node" if job.nats is not None else "mosquitto"
        Watch(job, job.head, (lambda: reload_by_pid_file(pid_file, name)) if pid_file else
              (lambda: None), log, changes=job.changes,
              wake=wake if job.cluster else None).run(stop, args.poll)
    except KeyboardInterrupt:
        pass
    finally:
        if job.bucket is not None:
            job.bucket.stop()
    log("stopped")
    return EXIT_OK


def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    """Add this area's subcommands; `data` is the parent parser with --data-dir."""
    b = sub.add_parser("broker", help="broker access control (mosquitto files)")
    bsub = b.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    e = bsub.add_parser("export", parents=[data],
                        help="write mosquitto passwd and acl files from the chain")
    e.add_argument("--out", metavar="DIR", help="folder for mosquitto's passwd and acl")
    e.add_argument("--nats", metavar="FILE",
                   help="write a NATS authorization block (users, allow lists) to FILE "
                        "instead, for a NATS cluster's MQTT listeners")
    e.add_argument("--key", action="append", metavar="FILE",
                   help="a person's key file whose login to include (repeatable)")
    e.add_argument("--credentials", metavar="FILE",
                   help="owner's credential store (default DATA_DIR/credentials.json)")
    e.add_argument("--authority-key", metavar="FILE",
                   help="authority key for the gateway's user (default DATA_DIR/authority.key)")
    e.add_argument("--group", metavar="G",
                   help="give passwd and acl to group G, mode 0640 (e.g. --group mosquitto: "
                        "the broker's user reads them after dropping root)")
    e.add_argument("--owner", metavar="U",
                   help="make user U the files' owner (e.g. --owner mosquitto; needs root)")
    e.add_argument("--watch", action="store_true",
                   help="keep running: export again on every new block and reload mosquitto "
                        "when its rules changed (Ctrl-C stops)")
    e.add_argument("--cluster", metavar="URLS",
                   help="with --nats: the NATS cluster's client URLs, comma-separated; "
                        "logins are shared with the other machines through its login "
                        "bucket, each verified against this chain before it is exported")
    e.add_argument("--reload-pid-file", metavar="FILE",
                   help="with --watch: mosquitto's pid_file, to send it SIGHUP")
    e.add_argument("--poll", type=float, default=1.0, metavar="S",
                   help="with --watch: seconds between looks at the chain's head (default 1)")
    e.set_defaults(func=cmd_export)
