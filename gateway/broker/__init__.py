"""The broker side of a domain (docs/IDENTITY.md §3): credentials
(credentials.py), the access policy (policy.py), the amqtt plugins (plugins.py),
the mosquitto export (mosquitto.py) and the embedded broker (embedded.py, not
imported here: it pulls in amqtt's broker). This package re-exports the public
names of the first four.

Credential (the same for a device, a person and the gateway itself):
    username = principal id, 32 lowercase hex characters
    password = hex (128 lowercase characters) of the ES256 signature r||s by the
               principal's CURRENT key over canonical CBOR ["mqtt", domain, id],
               with RFC 6979 nonces: deterministic, so a board recomputes it at
               every boot and stores nothing (firmware/wallet.py mqtt_password).
               Low s only (s <= n/2, as every signature on the wire): the
               high-s twin of a password is refused, and a credential store
               written before the rule is exported in its low-s form.
It is a bearer credential: anyone who sees it on the LAN can replay it. Keep
the broker on a trusted network or behind TLS. A key rotation changes it.

Rules, shared by the embedded broker (amqtt plugins) and the mosquitto
export (`thingledger broker export`):
  - the gateway (username = authority id, password signed by the authority key)
    may publish and subscribe anywhere under tl/<d>/ and may hold several
    connections (a restarting gateway takes its own session over);
  - any other principal must be known and active on chain (Access.is_active),
    connects at most once at a time (a second CONNECT presenting an id that is
    online is refused: the fake-id case), with client id `<id>` or `<id>-...`;
    it may publish to tl/<d>/tx, tl/<d>/dev/<id>/status (its retained status and
    last will) and its own data streams tl/<d>/data/<id>/#; it may subscribe to
    tl/<d>/dev/<id>/#, tl/<d>/blocks, tl/<d>/offers and tl/<d>/data/<x>/# for
    every device x it may read (Access.readable) and itself, and to
    tl/<d>/data/<supplier>/<agreement> of every open agreement it buys
    (Access.bought, docs/MARKET.md).
  Everything else is refused: a refused PUBLISH is acknowledged and dropped (MQTT
  3.1.1 has no way to say no), a refused SUBSCRIBE gets return code 0x80. The
  embedded broker also checks each delivery, so a right revoked on chain stops
  the flow at once, and the last will topic at CONNECT.
"""

from __future__ import annotations

from gateway.broker.credentials import (
    CREDENTIALS_FILE,
    PRIVATE,
    FileAccess,
    add_credential,
    credential_message,
    file_access,
    gateway_credentials,
    load_credentials,
    mqtt_password,
    parse_password,
    parse_principal,
    verify_password,
    write_private,
)
from gateway.broker.mosquitto import (
    ACL_FILE,
    MOSQUITTO_ITERATIONS,
    MOSQUITTO_OPTIONS,
    MOSQUITTO_SALT_LEN,
    PASSWD_FILE,
    SYS_CLIENTS_TOPIC,
    Export,
    export_mosquitto,
    mosquitto_acl,
    mosquitto_check,
    mosquitto_hash,
    sys_user,
)
from gateway.broker.plugins import (
    ChainAuthPlugin,
    ChainTopicPlugin,
    amqtt_plugins,
)
from gateway.broker.policy import (
    BAD_USERNAME_PASSWORD,
    ENFORCED_ADMISSIONS,
    IDENTIFIER_REJECTED,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    AccessProvider,
    AccessView,
    Guard,
    Verdict,
    bought_topics,
    chain_access,
    client_id_ok,
    enforced,
    filter_within,
    gateway_filter,
    is_coordinator,
    owned_by,
    publish_topics,
    single_session,
    subscribe_filters,
)
from gateway.errors import FileAccessError

__all__ = [
    "FileAccessError",
    "ACL_FILE",
    "AccessProvider",
    "AccessView",
    "BAD_USERNAME_PASSWORD",
    "CREDENTIALS_FILE",
    "ChainAuthPlugin",
    "ChainTopicPlugin",
    "ENFORCED_ADMISSIONS",
    "Export",
    "FileAccess",
    "Guard",
    "IDENTIFIER_REJECTED",
    "MOSQUITTO_ITERATIONS",
    "MOSQUITTO_OPTIONS",
    "MOSQUITTO_SALT_LEN",
    "NOT_AUTHORIZED",
    "PASSWD_FILE",
    "PRIVATE",
    "SERVER_UNAVAILABLE",
    "SYS_CLIENTS_TOPIC",
    "Verdict",
    "add_credential",
    "amqtt_plugins",
    "bought_topics",
    "chain_access",
    "client_id_ok",
    "credential_message",
    "enforced",
    "export_mosquitto",
    "file_access",
    "filter_within",
    "gateway_credentials",
    "gateway_filter",
    "is_coordinator",
    "load_credentials",
    "mosquitto_acl",
    "mosquitto_check",
    "mosquitto_hash",
    "mqtt_password",
    "owned_by",
    "parse_password",
    "parse_principal",
    "publish_topics",
    "sys_user",
    "single_session",
    "subscribe_filters",
    "verify_password",
    "write_private",
]
