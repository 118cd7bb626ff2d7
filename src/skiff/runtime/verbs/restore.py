"""``restore``: refused; skiff-runc has no CRIU integration."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context


def run(ctx: Context, args: list[str]) -> int:
    from skiff.runtime.cli import RuntimeFailure

    raise RuntimeFailure("restore is not supported by skiff-runc (it has no CRIU integration)")
