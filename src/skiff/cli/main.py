"""Entry point of `skiff`; the layer is built by issue 9 and is not there yet."""

import sys


def main() -> int:
    print("skiff: this layer is not built yet (issue 9); the deepest working layer is skiff-runc",
          file=sys.stderr)
    return 2
