"""Which logins a machine exports when logins also come from other machines
(docs/CONSENSUS.md, "Admission on several machines"): the union of its own
credential store and the cluster's login bucket (gateway/cluster/login_bucket.py),
each login verified against the principal's CURRENT key on this machine's
chain (credentials.verify_password) before it is exported. A bucket entry
that does not verify (forged, another principal's signature, malformed, or
made by a key rotated away since) is left out and reported; it never reaches
the broker.

Per principal the candidates are, in this order: the local store's login,
the bucket's, and the last one that verified here (`remembered`: a writer of
the bucket who overwrites a good login with garbage does not log the device
out of the machines that had seen the good one; a key rotation does, since
the remembered login then no longer verifies). The first that verifies is
exported. When none does, the local one (if any) goes on to the export,
which leaves it out and says why (policy.admitted).

A machine publishes its local login of a principal when it verifies here and
the bucket holds none that does (absent, garbage, or stale after a rotation):
so a login claimed on one machine reaches the others, and a good bucket
entry is never overwritten. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.broker.credentials import parse_password, parse_principal, verify_password
from gateway.broker.policy import AccessView

NOT_A_PRINCIPAL = "not a principal of the domain"
MALFORMED = "malformed (want 32 and 128 lowercase hex characters)"
WRONG_KEY = "does not match the principal's current key"


@dataclass
class LoginChoice:
    """The logins to export (id -> password), the bucket entries left out
    ((key, value) as stored -> why) and the local logins to publish."""

    logins: dict[bytes, str] = field(default_factory=dict)
    left_out: dict[tuple[str, str], str] = field(default_factory=dict)
    publish: dict[bytes, str] = field(default_factory=dict)


def _text(value: bytes | str) -> str:
    if isinstance(value, str):
        return value
    return value.decode("ascii", errors="replace")


Verdicts = dict[tuple[bytes, bytes, str], bool]  # (id, key, password) -> verifies


def choose_logins(domain: str, access: AccessView, local: Mapping[bytes, str],
                  bucket: Mapping[str, bytes | str], remembered: dict[bytes, str],
                  gateway_id: str | None = None, verdicts: Verdicts | None = None
                  ) -> LoginChoice:
    """See the module's text. `bucket`: key -> value as stored (unchecked);
    `remembered` is updated in place (the logins that verified now).
    `verdicts`: the signature checks of the previous call, reused and replaced
    in place by this call's (a watch exports on every block: each login is
    verified once per key, not once per export)."""
    out = LoginChoice()
    before = dict(verdicts or {})
    now: Verdicts = {}

    def verifies(pid: bytes, pk: bytes, pw: str) -> bool:
        k = (pid, pk, pw)
        if k not in now:
            now[k] = before[k] if k in before else verify_password(pk, domain, pid, pw)
        return now[k]

    shared: dict[bytes, str] = {}
    for key, raw in sorted(bucket.items()):
        value = _text(raw)
        pid = parse_principal(key)
        if pid is None or parse_password(value) is None:
            out.left_out[(key, value)] = MALFORMED
        elif key != gateway_id:
            shared[pid] = value
    for pid in sorted(set(local) | set(shared) | set(remembered)):
        pk = access.key_of(pid)

        def ok(pw: str | None, pid: bytes = pid, pk: bytes | None = pk) -> bool:
            return pw is not None and pk is not None and verifies(pid, pk, pw)

        mine, theirs = local.get(pid), shared.get(pid)
        chosen = next((pw for pw in (mine, theirs, remembered.get(pid)) if ok(pw)), None)
        if chosen is not None:
            remembered[pid] = chosen
            out.logins[pid] = chosen
        else:
            remembered.pop(pid, None)
            if mine is not None:
                out.logins[pid] = mine  # the export says why it is left out
        if theirs is not None and theirs != chosen:
            out.left_out[(pid.hex(), theirs)] = NOT_A_PRINCIPAL if pk is None else WRONG_KEY
        if mine is not None and mine == chosen and not ok(theirs) and pid.hex() != gateway_id:
            out.publish[pid] = mine
    if verdicts is not None:
        verdicts.clear()
        verdicts.update(now)
    return out
