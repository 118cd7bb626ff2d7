"""Building tar archives in memory for tests: hostile or exact archives that ``tarfile``'s own
helpers would not write (absolute names, ``..``, links pointing anywhere)."""

from __future__ import annotations

import io
import tarfile

Member = tuple[tarfile.TarInfo, bytes | None]


def tar_of(members: list[Member]) -> bytes:
    """A PAX tar of ``members`` in order: (header, data) pairs, data None for a member without
    content (directory, link, device); a member's size is set from its data."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    return buf.getvalue()
