"""The asyncio full node: the service and its pipeline stages (service), the
MQTT link (mqtt_link), the mempool, the per-sender rate limit (ratelimit) and
the configuration (config)."""
