"""Benchmarks: `python -m bench.crypto` times ES256 signing and verification."""
