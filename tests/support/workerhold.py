"""A validation worker task that holds one batch until it is killed, for the
worker-crash tests of gateway/node/verifier.py.

`HeldBatch(tmp)` sets the environment a spawned worker inherits: the first
batch any worker of the pool takes (claimed with an exclusive file create)
makes that worker write its pid to a FIFO the test reads (`pid()`, a bounded
wait on the FIFO, no polling) and then hold the batch (at most HOLD_S) so the
test can SIGKILL it with the batch in flight; every other batch is checked at
once by verifier.check_batch.
"""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

from gateway.node.verifier import check_batch

ENV = "THINGLEDGER_TEST_WORKER_HOLD"
HOLD_S = 30.0


def hold_first_batch(domain: str, jobs: list[tuple[bytes, bytes | None]]):
    d = Path(os.environ[ENV])
    try:
        os.close(os.open(d / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return check_batch(domain, jobs)
    fd = os.open(d / "pid", os.O_WRONLY)
    os.write(fd, b"%d\n" % os.getpid())
    os.close(fd)
    time.sleep(HOLD_S)  # killed before this ends (the test fails otherwise)
    return check_batch(domain, jobs)


class HeldBatch:
    def __init__(self, tmp: Path, monkeypatch) -> None:
        self.dir = Path(tmp)
        fifo = self.dir / "pid"
        os.mkfifo(fifo)
        self._fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        monkeypatch.setenv(ENV, str(self.dir))

    def pid(self, timeout: float = 20.0) -> int:
        """The pid of the worker holding its batch (waits for it)."""
        r, _, _ = select.select([self._fd], [], [], timeout)
        assert r, f"no worker took a batch within {timeout} s"
        data = b""
        while not data.endswith(b"\n"):
            data += os.read(self._fd, 32)
        return int(data)

    def close(self) -> None:
        os.close(self._fd)
