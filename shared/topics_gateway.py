"""The gateway's MQTT topics and the domain name rule (the gateway's side of
shared/topics.py, also reachable as topics.blocks, topics.is_domain_name, ...)."""
from shared.topics import PREFIX


def blocks(domain):
    return PREFIX + domain + "/blocks"


def offers(domain):
    return PREFIX + domain + "/offers"


def data(domain, service_id):
    return PREFIX + domain + "/data/" + service_id


def bridged(domain, relayer_hex, source, rest):
    """What a relayer republishes in `domain` of domain `source`'s topics
    (docs/CROSSDOMAIN.md, "Cross-domain service purchase"): under its own data subtree,
    tl/<domain>/data/<relayer id>/x/<source>/<rest> (`rest`: "offers", or
    "data/<supplier id>/<agreement id>")."""
    return data(domain, relayer_hex + "/x/" + source + "/" + rest)


def rejects(domain):
    """Rejections of messages whose sender cannot be read (garbage, too large)."""
    return PREFIX + domain + "/rejects"


def is_domain_name(domain):
    """Domain names travel in topics: 1-32 chars of a-z, 0-9 and '-'."""
    if not isinstance(domain, str) or not 0 < len(domain) <= 32:
        return False
    for c in domain:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
            return False
    return True
