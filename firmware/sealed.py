"""The seal of a market notice (docs/MARKET.md, firmware/market.py): loaded
by the market's run for one notice and dropped after it, before
firmware/notices.py or firmware/matched.py acts on the notice. Checked as
shared/notice.py's open_notice checks it (that module, with the gateway's
`seal`, stays off the board), with shared/cose.py and shared/messages.py,
which every board loads anyway; the signature is checked as a job
(firmware/market.py's run: with no market code loaded but the resident
part), and its payload parsed only after it.
"""
from micropython import const

from shared import cose, errors, messages

_SEALED = const(7)  # a job's kind (firmware/reading.py ... bought.py: 1 to 6)


def check(mk, msg):
    """The notice `msg` parsed (views into it) once the domain authority's
    seal checked (a job: (what, cose.check1, its arguments)); else None,
    logged as bad-notice."""
    o = mk.out
    try:
        if o and o[0][0] == _SEALED:  # checked: the payload, or the check's refusal
            mk.out = None
            if isinstance(o[1], errors.TLError):
                raise o[1]
            return messages.parse(o[1], False)
        return (_SEALED,), cose.check1, (mk.node.authority, cose.parse1(msg, False))
    except errors.TLError as e:
        mk.node.log("bad-notice reason=%s" % e.reason)
    return None
