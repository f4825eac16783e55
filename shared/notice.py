"""Market notices as they travel (docs/MARKET.md): MATCH, ACCOUNT and ENDED
on a device's rx topic are each a COSE_Sign1 by the domain authority whose
payload is the notice map (built by shared/messages_gateway.py). A board
acts on a notice only once open_notice has checked it, so nobody else who
can write its rx topic (a broker misconfigured, a stolen broker login) can
hand it a supplier key, a balance or an ended agreement.

A market board loads this module (firmware/market.py); a plain board never
does: the node tells a sealed message from a receipt by its first byte,
NOTICE_BYTE, and a notice from a rejection (sealed the same way, by the
gateway's reject()) by the payload's kind, and leaves a notice alone."""
from shared import cose, errors, messages

NOTICE_BYTE = 0xD2  # CBOR tag 18 (COSE_Sign1): notices and rejections; receipts are plain maps


def seal(authority_private_key, authority_id, notice):
    """The notice bytes as sent: `notice` (a CBOR map) signed by the authority."""
    return cose.sign1(authority_private_key, notice, authority_id)


def open_notice(message, authority_public_key, copy=True):
    """The notice map of a sealed notice; raises CoseError / SignatureError if
    it is not signed by the authority, DecodeError / ProofError if its
    payload is not a notice."""
    s1 = cose.parse1(message, copy)
    cose.check1(authority_public_key, s1)
    m = messages.parse(s1.payload, copy)
    if m[messages.M_KIND] <= messages.KIND_REJECT:
        raise errors.ProofError("not-notice")
    return m
