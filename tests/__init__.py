"""ThingLedger's test suite: one folder per package, helpers in tests.support."""
