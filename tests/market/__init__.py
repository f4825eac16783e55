"""Tests of gateway/market: the market ledger, directory, streams, verdicts, analytics."""
