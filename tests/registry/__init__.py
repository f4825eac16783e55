"""Tests of gateway/registry: the public PoW registry chain and its store."""
