"""End-to-end tests: a running gateway with brokers, virtual boards and real firmware, make run."""
