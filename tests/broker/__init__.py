"""Tests of gateway/broker: credentials, topic policy, amqtt and mosquitto auth, the embedded broker."""
