"""Top-level conftest: loads Skiff's test harness.

``harness.plugin`` (tests/harness/plugin.py) holds the root-tier rules (root tests skip without
root, and a root run fails if any root test skipped), the leak checker around every root test and
over the whole root tier, and the shared fixtures (``state_dirs``, ``runtime_bin``,
``busybox_rootfs``, ``busybox_bundle``). ``pytester`` is for the harness's own tests.
"""

pytest_plugins = ["harness.plugin", "pytester"]
