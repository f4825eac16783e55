"""Tests of gateway/identity: claims, ownership, grants, node roles, access views."""
