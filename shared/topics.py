"""MQTT topic names (MQTT 3.1.1) shared by firmware and gateway.

device_hex is the device id as 32 lowercase hex characters."""

PREFIX = "tl/"


def tx(domain):
    return PREFIX + domain + "/tx"


def rx(domain, device_hex):
    return PREFIX + domain + "/dev/" + device_hex + "/rx"


def status(domain, device_hex):
    return PREFIX + domain + "/dev/" + device_hex + "/status"


def blocks(domain):
    return PREFIX + domain + "/blocks"


def offers(domain):
    return PREFIX + domain + "/offers"


def data(domain, service_id):
    return PREFIX + domain + "/data/" + service_id




def is_domain_name(domain):
    """Domain names travel in topics: 1-32 chars of a-z, 0-9 and '-'."""
    if not isinstance(domain, str) or not 0 < len(domain) <= 32:
        return False
    for c in domain:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
            return False
    return True


def rejects(domain):
    """Rejections of messages whose sender cannot be read (garbage, too large)."""
    return PREFIX + domain + "/rejects"
