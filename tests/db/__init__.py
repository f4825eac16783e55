"""Tests of gateway/db: the SQLite store, replay and chain verification, a chain stored by an old version."""
