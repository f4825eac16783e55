"""Reading gateway -> device replies on a host (CPython clients: the
command line's submit, tests, benches). Boards never load it (tools/build.py
HOST_ONLY): a board checks a rejection's seal in firmware/node.py, on views
into the message."""
from shared import cose, errors
from shared.messages import KIND_RECEIPT, M_KIND, parse


def open_reply(data, authority_public_key):
    """A reply as a host client reads one from a device's rx topic: a receipt
    (a plain map, which the caller checks with messages.check_receipt), or a
    rejection or market notice, which counts only sealed by the authority:
    its signature is checked here. Raises SignatureError / CoseError for a
    forged seal, ProofError("unsigned") for an unsealed rejection or notice."""
    if data[:1] == b"\xd2":  # CBOR tag 18: a COSE_Sign1 (shared/notice.py NOTICE_BYTE)
        s1 = cose.parse1(data)
        cose.check1(authority_public_key, s1)
        m = parse(s1.payload)
        if m[M_KIND] == KIND_RECEIPT:
            raise errors.ProofError("sealed-receipt")
        return m
    m = parse(data)
    if m[M_KIND] != KIND_RECEIPT:
        raise errors.ProofError("unsigned")
    return m
