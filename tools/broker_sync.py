"""Keep a mosquitto's passwd and acl in step with the chain
(`thingledger broker export --watch`, docs/IDENTITY.md §3).

mosquitto reads its files only at start and on SIGHUP, so an export is a
snapshot: a device claimed, a right granted or revoked, a stream bought
(docs/MARKET.md) after it is not enforced until the next export. The watch
exports again whenever the chain's head changes and, when what mosquitto
would enforce changed (broker_auth.Export.digest), sends SIGHUP to the pid
in mosquitto's pid_file. It reads the chain read-only, next to the running
gateway: polling the store's head once per `poll` seconds costs one SQLite
read. Whatever else an export reads (`changes`: the NATS export's login
bucket and the credential store) is compared at each look too, and a
`wake` event set on such a change cuts the wait short."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def reload_by_pid_file(pid_file: Path, name: str = "mosquitto") -> str:
    """SIGHUP the process whose pid `pid_file` holds (mosquitto's or a NATS
    node's pid_file, read each time: a restarted broker has a new pid); what
    was done, or why not, as a log line naming the broker `name`."""
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError) as e:
        return f"{name} not reloaded ({pid_file}: {e})"
    return f"reloaded {name} (pid {pid})"


@dataclass
class Watch:
    """export() writes the files and returns (Export, height); head() is the
    chain head's hash (None before genesis); reload() signals the broker
    and returns a log line (None: nobody to tell)."""

    export: Callable[[], tuple[Any, int]]
    head: Callable[[], bytes | None]
    reload: Callable[[], str | None]
    log: Callable[[str], None]
    digest: str | None = None  # of an export the broker has already loaded (no reload for it)
    # what else the export reads, compared between looks (e.g. the login bucket's
    # version and the credential store's mtime); None: the head alone
    changes: Callable[[], object] | None = None
    # set on such a change: look at once, not after `poll` (waited on instead of
    # `stop`: whoever sets `stop` sets it too)
    wake: threading.Event | None = None

    def run(self, stop: threading.Event, poll: float = 1.0) -> None:
        """Until `stop` is set: export on every new head (or other change),
        reload on a change of what the broker enforces."""
        head: bytes | None = None
        seen: object = None
        digest = self.digest
        first = True
        while True:
            if self.wake is not None:
                self.wake.clear()  # before the look: a change after it wakes the next
            if stop.is_set():  # (after the clear: a stop that sets `wake` too is seen)
                break
            try:
                h = self.head()
                c = self.changes() if self.changes is not None else None
                if first or h != head or c != seen:
                    ex, height = self.export()
                    if ex.digest != digest:
                        done = self.reload()
                        self.log(f"height {height}: {len(ex.users)} users exported"
                                 + (f"; {done}" if done else ""))
                    head, seen, digest, first = h, c, ex.digest, False
            except Exception as e:  # noqa: BLE001 - a daemon: say it, try again next poll
                # (a credential store being rewritten, a chain database being
                # replaced); mosquitto keeps the files of the last export
                self.log(f"export failed: {e!r}; trying again in {poll:g} s")
            (self.wake or stop).wait(poll)
