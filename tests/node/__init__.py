"""Tests of gateway/node: config, mempool, rate limits."""
