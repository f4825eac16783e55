"""Helpers of the test suite, imported as `tests.support.<module>`: brokers and
MicroPython processes (brokers, mpyrun), waits, spies, mutations, keys
(pycose_keys), the in-process ledger (gwtest), identity, market and registry
worlds (idtest, mktest, registry_support, ba_world), simulated devices and a
gateway thread (e2e_devices), a serial virtual board (vboard_pty)."""
