"""Rewrite the per-container console scripts into lean launchers.

pip's console-script wrapper runs the venv's interpreter with ``site`` (venv and ``.pth``
processing, ~4 ms) although the runtime and the shim use the standard library only. The lean
launcher starts the interpreter with ``-I -S`` (isolated, no site), puts the directory that
holds the ``skiff`` package first on ``sys.path``, and ends with ``os._exit`` once stdout and
stderr are flushed, skipping the interpreter's teardown. Run by ``scripts/setup.sh`` after every
``pip install``: ``python -m skiff.launchers``.
"""

from __future__ import annotations

import os
import sys

LEAN = {"skiff-runc": "skiff.runtime.cli", "skiff": "skiff.cli.main"}

TEMPLATE = """#!{python} -IS
# Lean launcher written by `python -m skiff.launchers` (see that module): no site, no venv scan,
# and no interpreter teardown (os._exit after flushing: freeing every module costs milliseconds).
import os, sys
sys.path.insert(0, {pkg_parent!r})
from {module} import main
code = main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""


def install(bin_dir: str | None = None) -> list[str]:
    import skiff

    bin_dir = bin_dir or os.path.dirname(sys.executable)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(skiff.__file__)))
    written = []
    for name, module in LEAN.items():
        path = os.path.join(bin_dir, name)
        # the interpreter itself, not the venv's symlink to it: -I -S needs nothing from the venv
        python = os.path.realpath(sys.executable)
        text = TEMPLATE.format(python=python, pkg_parent=pkg_parent, module=module)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.rename(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in install():
        print(f"lean launcher: {p}")
