"""Tests of gateway/ledger: blocks, state, validation, the tx-type registry."""
