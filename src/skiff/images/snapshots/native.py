"""The native snapshotter: every snapshot is a full copy of its parent (containerd's ``native``).

For filesystems that cannot hold an overlay upper directory (an overlay itself, some network
filesystems). ``prepare`` and ``view`` copy the parent's tree with
:func:`~skiff.images.snapshots.fsutil.copy_tree` (owners, modes, xattrs, hard links, holes,
timestamps, device nodes kept); the mount is a bind of the snapshot's own ``fs``, read-write
for an active snapshot and read-only for a view. Layers are applied into the tree directly
(whiteouts delete), and a diff is the difference between the tree and its parent's.
"""

from __future__ import annotations

import os

from skiff.images.snapshots import Kind, Mount
from skiff.images.snapshots.base import DirSnapshotter
from skiff.images.snapshots.fsutil import copy_tree
from skiff.images.snapshots.storage import Row


class NativeSnapshotter(DirSnapshotter):
    name = "native"

    def _fill(self, tmpdir: str, kind: Kind, parents: list[Row]) -> None:
        fs = os.path.join(tmpdir, "fs")
        os.mkdir(fs, 0o755)
        if parents:
            copy_tree(self.fs_dir(parents[0].id), fs)

    def _mounts(self, row: Row, parents: list[Row]) -> list[Mount]:
        return [Mount(type="bind", source=self.fs_dir(row.id),
                      options=["rw" if row.kind == Kind.ACTIVE else "ro", "rbind"])]
