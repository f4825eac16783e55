"""The seal of a market notice (docs/MARKET.md, firmware/market.py): loaded
by Market.run for one notice's check and dropped after it, before
firmware/notices.py acts on the notice, so the signature check runs with no
other market code in the heap than the resident part. Checked as
shared/notice.py's open_notice checks it (that module, with the gateway's
`seal`, stays off the board), with shared/cose.py and shared/messages.py,
which every board loads anyway.
"""
import gc

from shared import cose, errors, messages


def check(mk, msg):
    """The notice `msg` parsed (views into it) if the domain authority sealed
    it; else None, logged as bad-notice."""
    try:
        s1 = cose.parse1(msg, False)  # views into msg
        gc.collect()  # the check's big ints fill the small holes first
        cose.check1(mk.node.authority, s1)  # before the payload is parsed: its
        return messages.parse(s1.payload, False)  # dict is not alive during the check
    except errors.TLError as e:
        mk.node.log("bad-notice reason=%s" % e.reason)
    return None
