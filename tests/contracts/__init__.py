"""Tests of gateway/contracts: the contract VM and its builtins."""
