"""`thingledger` commands for trust levels (docs/TRUST.md).

    thingledger trust ID [--data-dir D]        level, score, figures and history of one id
    thingledger trust --list [--data-dir D]    the domain's table
    thingledger report ID --kind KIND [--evidence FILE] --key FILE [network options]
    thingledger proof A B [--header] --key FILE [network options]
                                               two signed messages (files) proving equivocation

Readers open the database read-only and work while the gateway writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tools.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    UsageError,
    key_parent,
    load_state,
    network_parent,
    parse_id,
    send_tx,
)


def _figures(state: Any, pid: bytes) -> dict[str, Any] | None:
    from gateway.trust import standing as st

    rec = st.get(state, pid)
    if rec is None:
        return None
    return {"level": st.level_of(state, pid), "score": rec.score, "activity": rec.activity,
            "penalty": rec.penalty, "since": rec.since, "banned_key": rec.banned_key}


def cmd_trust(args: argparse.Namespace) -> int:
    from gateway.trust import standing as st

    state = load_state(args)
    if args.list:
        rows = st.records(state)
        print("%-32s  %-9s  %6s  %8s  %7s" % ("id", "level", "score", "activity", "penalty"))
        for pid, rec in rows:
            print("%-32s  %-9s  %6d  %8d  %7d" % (pid.hex(), st.level_of(state, pid), rec.score,
                                                  rec.activity, rec.penalty))
        print("%d principal(s) with trust figures" % len(rows))
        return EXIT_OK
    if not args.id:
        raise UsageError("give an id (32 hex chars) or --list")
    pid = parse_id(args.id, "id")
    f = _figures(state, pid)
    if f is None:
        known = state.get(pid) is not None
        print("%s: %s (no trust figures yet: a new id starts on %s)"
              % (pid.hex(), "known" if known else "unknown", st.PROBATION))
        return EXIT_OK if known else EXIT_FAILED
    print("id        %s" % pid.hex())
    print("level     %s" % f["level"])
    print("score     %d" % f["score"])
    print("activity  %d committed txs since %d" % (f["activity"], f["since"]))
    print("penalty   %d (proofs and reports, forgiven %d per hour)"
          % (f["penalty"], st.DECAY_PER_HOUR))
    if f["banned_key"]:
        print("banned key %s" % f["banned_key"].hex())
    print("history")
    for height, time, tx_id, reason, score, level in st.history(state, pid):
        print("  height %-6d time %-10d %-34s score %-5d -> %-9s tx %s"
              % (height, time, reason, score, level, tx_id.hex()[:16]))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from shared import tx as txm

    body: dict[int, Any] = {1: parse_id(args.target, "target"), 2: args.kind}
    if args.evidence:
        body[3] = Path(args.evidence).read_bytes()
    return send_tx(args, "report", txm.TYPE_REPORT, body)


def cmd_proof(args: argparse.Namespace) -> int:
    from gateway.trust.rules import HEADER_EQUIVOCATION, TX_EQUIVOCATION
    from shared import tx as txm

    try:
        a, b = Path(args.a).read_bytes(), Path(args.b).read_bytes()
    except OSError as e:
        print("proof: %s" % e, file=sys.stderr)
        return EXIT_FAILED
    kind = HEADER_EQUIVOCATION if args.header else TX_EQUIVOCATION
    return send_tx(args, "proof", txm.TYPE_PROOF, {1: kind, 2: a, 3: b})


def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    from gateway.trust.rules import REPORT_KINDS

    p = sub.add_parser("trust", parents=[data], help="trust levels (docs/TRUST.md)")
    p.add_argument("id", nargs="?", help="principal id (32 hex chars)")
    p.add_argument("--list", action="store_true", help="every principal's level and score")
    p.set_defaults(func=cmd_trust)
    net = network_parent(data)
    key = key_parent()
    r = sub.add_parser("report", parents=[net, key],
                       help="report another principal's misbehaviour (REPORT tx)")
    r.add_argument("target", help="the reported principal's id (32 hex chars)")
    r.add_argument("--kind", required=True, choices=REPORT_KINDS)
    r.add_argument("--evidence", metavar="FILE", help="the offending message (at most 1 KiB)")
    r.set_defaults(func=cmd_report)
    pr = sub.add_parser("proof", parents=[net, key],
                        help="submit a proof of equivocation (PROOF tx)")
    pr.add_argument("a", metavar="A", help="file: the first signed message")
    pr.add_argument("b", metavar="B", help="file: the second signed message")
    pr.add_argument("--header", action="store_true",
                    help="A and B are signed block headers (default: transactions)")
    pr.set_defaults(func=cmd_proof)
