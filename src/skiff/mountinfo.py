"""Reading ``/proc/PID/mountinfo`` fields; shared by the runtime and the shim (stdlib only)."""

from __future__ import annotations


def unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space, ``\\011`` tab, ``\\012`` newline,
    ``\\134`` backslash)."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
