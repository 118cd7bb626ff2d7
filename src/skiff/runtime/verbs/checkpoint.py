"""``checkpoint``: refused; skiff-runc has no CRIU integration."""

from __future__ import annotations


def run(ctx, args: list[str]) -> int:  # type: ignore[no-untyped-def]
    from skiff.runtime.cli import RuntimeFailure

    raise RuntimeFailure("checkpoint is not supported by skiff-runc (it has no CRIU integration)")
