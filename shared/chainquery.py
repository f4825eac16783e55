"""Read-only chain queries over MQTT (docs/PROTOCOL.md, "Chain queries"):
the wire format, spelled once for the gateway that answers
(gateway/node/queries.py) and the clients that ask (tools/remote_store.py).

Topics, under the requester's own subtree (a registered principal's id hex on
an enforcing broker, which lets it publish only its own `req` and read only
its own `res`):

    tl/<domain>/q/<requester>/req    request   (requester -> gateways)
    tl/<domain>/q/<requester>/res    answer    (every gateway of the domain)

A request is the canonical CBOR map {1: op, 2: request id (1..16 bytes),
3?: argument, 4?: page limit, 5?: cursor}; an answer is
{1: request id, 2: reason ("" = ok), 3: result, 4?: detail, 5?: more}.
Replicated gateways each answer from their own store: a client takes the
first answer to its id. Answers are not trusted: what a relayer or a buyer
submits is proven against a header and certificate the receiving chain
checks (docs/CROSSDOMAIN.md).

    op        argument           limit / cursor        result
    genesis   -                  -                     the domain's genesis file (bytes)
    head      -                  -                     [block, certificate | null] | null
    block     height             -                     [block, certificate | null] | null
    kv_range  prefix (1..64 B)   n / last key          [[key, value], ...]       (paged)
    prove_kv  key (1..128 B)     -                     [block, value | null, proof] | null
    prove_account id (16 B)      -                     [block, leaf | null, proof] | null
    receipt   tx id (32 B)       -                     receipt reply bytes | null
    txs       tx type            n / [height, idx]     [tx row, ...]             (paged)
    devices   -                  n / last id           [state leaf, ...]         (paged)
    valsets   -                  -                     [[k, [pubkeys]], ...] every set the
                                                       domain has had
`block` = [height, hash, time, n_txs, header bytes, signed header];
a tx row = [id, height, idx, sender, seq, type, status, reason, events, message].
A paged answer holds at most `limit` items (at most MAX_PAGE) and stays under
MAX_ANSWER bytes; `more` says whether the cursor of its last item has more.
"""

from shared import cbor, errors, reasons, topics

PREFIX = topics.PREFIX
OPS = ("genesis", "head", "block", "kv_range", "prove_kv", "prove_account", "receipt", "txs",
       "devices", "valsets")
PAGED = ("kv_range", "txs", "devices")
MAX_REQUEST = 512  # bytes: a bigger request is refused unread (too-large)
MAX_ANSWER = 12 * 1024  # bytes: under the brokers' 16 KiB packet limit
MAX_PAGE = 100  # items in one paged answer
MAX_ID = 16  # bytes of a request id
MAX_PREFIX = 64
MAX_KEY = 128

# request / answer map keys
Q_OP, Q_ID, Q_ARG, Q_LIMIT, Q_AFTER = 1, 2, 3, 4, 5
A_ID, A_REASON, A_RESULT, A_DETAIL, A_MORE = 1, 2, 3, 4, 5


class QueryError(errors.TLError):
    """A request the gateways refuse to answer (detail: unknown-op, bad-id,
    bad-argument, bad-limit, bad-cursor, not-a-map)."""

    reason = reasons.BAD_QUERY


def is_requester(name):
    """A requester's topic level: 1..64 chars of a-z, 0-9 and '-' (an id in hex)."""
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        return False
    for c in name:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
            return False
    return True


def subtree(domain):
    """The prefix of every chain-query topic of `domain`."""
    return PREFIX + domain + "/q/"


def request_topic(domain, requester):
    return subtree(domain) + requester + "/req"


def answer_topic(domain, requester):
    return subtree(domain) + requester + "/res"


def requests_filter(domain):
    """What a gateway subscribes to: every requester's requests."""
    return subtree(domain) + "+/req"


def requester_of(domain, topic):
    """The requester named by a request topic, or None."""
    head = subtree(domain)
    if not topic.startswith(head) or not topic.endswith("/req"):
        return None
    name = topic[len(head):-len("/req")]
    return name if is_requester(name) else None


def request(op, rid, arg=None, limit=None, after=None):
    m = {Q_OP: op, Q_ID: rid}
    if arg is not None:
        m[Q_ARG] = arg
    if limit is not None:
        m[Q_LIMIT] = limit
    if after is not None:
        m[Q_AFTER] = after
    return cbor.dumps(m)


def _bytes(v, lo, hi, what):
    if not isinstance(v, bytes) or not lo <= len(v) <= hi:
        raise QueryError(what)
    return v


def parse_request(payload):
    """(op, id, argument, limit, cursor) of a request; TooLarge (unread) or
    DecodeError for bytes that are not one, QueryError for a map that is
    not a request this protocol answers."""
    if len(payload) > MAX_REQUEST:
        raise errors.TooLarge("%d bytes, at most %d" % (len(payload), MAX_REQUEST))
    m = cbor.loads(bytes(payload), max_size=MAX_REQUEST)
    if not isinstance(m, dict):
        raise QueryError("not-a-map")
    rid = _bytes(m.get(Q_ID), 1, MAX_ID, "bad-id")
    op = m.get(Q_OP)
    if op not in OPS:
        raise QueryError("unknown-op")
    if set(m) - {Q_OP, Q_ID, Q_ARG, Q_LIMIT, Q_AFTER}:
        raise QueryError("bad-argument")
    arg, limit, after = m.get(Q_ARG), m.get(Q_LIMIT, MAX_PAGE), m.get(Q_AFTER)
    if op == "block":
        if not isinstance(arg, int) or isinstance(arg, bool) or arg < 0:
            raise QueryError("bad-argument")
    elif op == "kv_range":
        _bytes(arg, 1, MAX_PREFIX, "bad-argument")
        if arg[-1] == 0xFF:
            raise QueryError("bad-argument")
    elif op == "prove_kv":
        _bytes(arg, 1, MAX_KEY, "bad-argument")
    elif op == "receipt":
        _bytes(arg, 32, 32, "bad-argument")
    elif op == "prove_account":
        _bytes(arg, 16, 16, "bad-argument")
    elif op == "txs":
        if not isinstance(arg, int) or isinstance(arg, bool) or not 0 <= arg < 1 << 16:
            raise QueryError("bad-argument")
    elif arg is not None:
        raise QueryError("bad-argument")
    if op in PAGED:
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_PAGE:
            raise QueryError("bad-limit")
        if after is not None:
            if op == "txs":
                ok = (isinstance(after, list) and len(after) == 2
                      and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                              for x in after))
            else:
                ok = isinstance(after, bytes) and len(after) <= MAX_KEY
            if not ok:
                raise QueryError("bad-cursor")
    elif Q_LIMIT in m or after is not None:
        raise QueryError("bad-limit")
    return op, rid, arg, limit, after


def answer(rid, result, more=None):
    m = {A_ID: rid, A_REASON: "", A_RESULT: result}
    if more is not None:
        m[A_MORE] = more
    return cbor.dumps(m)


def refusal(rid, reason, detail=""):
    """The answer to a refused request (`rid` None when it could not be read)."""
    m = {A_ID: rid, A_REASON: reason, A_RESULT: None}
    if detail:
        m[A_DETAIL] = detail
    return cbor.dumps(m)


def parse_answer(payload):
    """(id, reason, detail, result, more) of an answer; DecodeError or
    QueryError('bad-answer') for anything else."""
    m = cbor.loads(bytes(payload), max_size=MAX_ANSWER + 1024)
    if not isinstance(m, dict) or not isinstance(m.get(A_REASON), str) or A_RESULT not in m:
        raise QueryError("bad-answer")
    rid = m.get(A_ID)
    if rid is not None and not isinstance(rid, bytes):
        raise QueryError("bad-answer")
    return rid, m[A_REASON], m.get(A_DETAIL, ""), m[A_RESULT], bool(m.get(A_MORE, False))
