"""Tests of tools/: the CLI verbs, keys, board provisioning and recovery, virtual boards, the coordinator."""
