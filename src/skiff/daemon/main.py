"""Entry point of `skiffd`; the layer is built by issue 6 and is not there yet."""

import sys


def main() -> int:
    print("skiffd: this layer is not built yet (issue 6); the deepest working layer is skiff-runc",
          file=sys.stderr)
    return 2
