"""Skiff's test harness: the root-tier rules, the leak checker and shared fixtures.

``tests/conftest.py`` loads :mod:`harness.plugin`; :mod:`harness.leakcheck` holds the host-state
snapshots and their diff, written so the parsing and diff logic can be unit-tested on fake data.
"""
