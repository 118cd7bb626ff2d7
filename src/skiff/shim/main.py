"""Entry point of `skiff-shim`; the layer is built by issue 5 and is not there yet."""

import sys


def main() -> int:
    print("skiff-shim: this layer is not built yet (issue 5); the deepest working layer is skiff-runc",
          file=sys.stderr)
    return 2
