"""ThingLedger light-node firmware (MicroPython): wallet, MQTT client, node loop."""
