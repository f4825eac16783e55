"""Benchmarks that print tables and compare with the project's targets.

    python -m bench            all of them (`make bench`)
    python -m bench.crypto     ES256 sign/verify: MicroPython, pure CPython, cryptography
    python -m bench.firmware   firmware heap budget and the whole loop on a 64 KiB heap
    python -m bench.gateway    end-to-end ingest throughput and receipt latency

Results and the machine they were measured on: bench/README.md."""
