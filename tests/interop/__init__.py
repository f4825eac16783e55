"""Tests of shared/ against reference implementations under CPython (cryptography, pycose, cbor2, hypothesis)."""
