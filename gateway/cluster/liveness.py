"""Whether a gateway of a replicated domain is live: the one rule
(docs/CONSENSUS.md, "Liveness of a gateway") used for whose turn it is to
propose (Replica.proposers_at), which gateway answers a device
(Replica.serves), when another gateway takes the market operator's lease
(gateway/cluster/issuer.py IssuerLease), and by the coordinator
(tools/coordinator.py) for moving light nodes.

A gateway is live unless
- its last status said "offline" (its last will, published by the NATS node
  holding its MQTT connection when that connection drops, or its clean stop), or
- nothing was heard from it for SILENCE_S: a machine that dies whole (power
  cut: its NATS node with its gateway) leaves no last will, because the node
  that would publish it is gone.

What counts as hearing from it: its retained "online" status, which every
gateway announces again each STATUS_S, and each valid vote it signs (the
signature channel; a gateway votes on every block). Both are seen by every
gateway on the cluster itself (core NATS subjects, not held back by the
JetStream elections that follow a node's death). The coordinator sees the
statuses only, over MQTT: it judges silence after COORDINATOR_SILENCE_S, so
that when its move is committed the gateways have judged the dead one gone
too (its last vote can follow its last status by up to STATUS_S).

A node never heard of counts as live (`unknown_live`, the gateways: the
silence clock runs from this object's creation) or as offline (the
coordinator: a full node it has no status of)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

STATUS_S = 5.0  # s between a gateway's retained "online" announcements
SILENCE_S = 3 * STATUS_S + 1  # 16 s: a gateway not heard this long is offline
# the coordinator's threshold: the gateways' one, plus a status interval (the
# last vote may come that much after the last status) and a few seconds for
# its NODE_ASSIGN to be committed
COORDINATOR_SILENCE_S = SILENCE_S + STATUS_S + 4.0  # 25 s


class Liveness:
    """The live/offline view of a set of nodes from their statuses and other
    signs of life. `clock` is monotonic seconds (injectable for tests)."""

    def __init__(self, silence_s: float = SILENCE_S, unknown_live: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.silence_s = silence_s
        self.unknown_live = unknown_live
        self.clock = clock
        self.since = clock()
        self._status: dict[bytes, bool] = {}  # last status: True online, False offline
        self._heard: dict[bytes, float] = {}  # last sign of life (clock s)
        self._said: dict[bytes, bool] = {}  # liveness as last reported by changes()

    def status(self, node: bytes, online: bool) -> bool:
        """A status message of `node`; whether it changed its status."""
        was = self._status.get(node)
        self._status[node] = online
        if online:
            self._heard[node] = self.clock()
        return was != online

    def heard(self, node: bytes) -> None:
        """A sign of life of `node` other than its status (a valid vote)."""
        self._heard[node] = self.clock()

    def known(self) -> list[bytes]:
        """The nodes a status was seen of."""
        return list(self._status)

    def silent_for(self, node: bytes) -> float:
        return self.clock() - self._heard.get(node, self.since)

    def live(self, node: bytes, beats: bool = True) -> bool:
        """The rule. `beats`: `node` announces itself every STATUS_S (a gateway
        of the domain), so silence counts; other nodes go by their status only."""
        st = self._status.get(node)
        if st is False:
            return False
        if st is None and not self.unknown_live:
            return False
        return not beats or self.silent_for(node) <= self.silence_s

    def live_of(self, ids: Iterable[bytes], me: bytes | None = None) -> list[bytes]:
        """Those of `ids` that are live, in their order (`me`: always)."""
        return [i for i in ids if i == me or self.live(i)]

    def changes(self, ids: Iterable[bytes]) -> list[tuple[bytes, bool, str]]:
        """(node, live now, why) for each of `ids` whose liveness changed since
        the last call (a console line each; the first call reports only the
        offline ones)."""
        out = []
        for i in ids:
            now = self.live(i)
            if self._said.get(i, True) != now:
                why = "online" if now else (
                    "offline (last will)" if self._status.get(i) is False
                    else f"offline (silent for {self.silent_for(i):.0f} s)")
                out.append((i, now, why))
            self._said[i] = now
        return out
