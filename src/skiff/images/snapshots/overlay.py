"""The overlayfs snapshotter (the default), after containerd's ``overlayfs`` plugin.

Each snapshot owns ``snapshots/<id>/fs``, which is the upper directory of its overlay while
active and a lower directory of its children once committed; an active snapshot also has
``snapshots/<id>/work``. Mount descriptions:

========================  ==================================================================
snapshot                  mounts
========================  ==================================================================
active, no parent         ``bind`` of its ``fs`` (``rbind``, ``rw``)
view, no parent           ``bind`` of its (empty) ``fs`` (``rbind``, ``ro``)
view of one layer         ``bind`` of the parent's ``fs`` (``rbind``, ``ro``)
view of several layers    ``overlay`` with ``lowerdir=`` the parents' ``fs``, nearest first
active with parents       ``overlay`` with ``upperdir``, ``workdir`` and ``lowerdir``
========================  ==================================================================

``index=off`` is added where the kernel knows the option (so an upper directory can be
mounted again over other lowers, as containerd does), and ``userxattr`` when running in a
user namespace (overlay then keeps whiteouts in ``user.overlay.*``). Paths are absolute;
:func:`skiff.images.mount.mount_all` shortens them when 128+ layers overflow a page.

Layers are applied straight into an active snapshot's upper directory with OCI whiteouts
turned into overlay ones (see :mod:`skiff.images.layers` and :mod:`skiff.images.unpack`),
and a diff is read back from it the same way, without mounting.
"""

from __future__ import annotations

import os

from skiff.images.snapshots import Kind, Mount
from skiff.images.snapshots.base import DirSnapshotter
from skiff.images.snapshots.fsutil import remove_tree
from skiff.images.snapshots.storage import Row

_INDEX_PARAM = "/sys/module/overlay/parameters/index"


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the initial one."""
    try:
        with open("/proc/self/uid_map") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields[:3] != ["0", "0", "4294967295"]


class OverlaySnapshotter(DirSnapshotter):
    name = "overlayfs"

    def __init__(self, root: str) -> None:
        self.userxattr = in_user_namespace()
        self.index_off = os.path.exists(_INDEX_PARAM)
        super().__init__(root)

    @property
    def xattr_namespace(self) -> str:
        """Where overlay keeps its own xattrs for these mounts: ``trusted`` or ``user``."""
        return "user" if self.userxattr else "trusted"

    def _fill(self, tmpdir: str, kind: Kind, parents: list[Row]) -> None:
        os.mkdir(os.path.join(tmpdir, "fs"), 0o755)
        if kind == Kind.ACTIVE:
            os.mkdir(os.path.join(tmpdir, "work"), 0o700)

    def _after_commit(self, row: Row) -> None:
        # the work directory is only needed while mounted read-write
        work = os.path.join(self.snapshot_dir(row.id), "work")
        remove_tree(work)

    def _base_options(self) -> list[str]:
        opts = []
        if self.index_off:
            opts.append("index=off")
        if self.userxattr:
            opts.append("userxattr")
        return opts

    def _mounts(self, row: Row, parents: list[Row]) -> list[Mount]:
        fs = self.fs_dir(row.id)
        if not parents:
            return [Mount(type="bind", source=fs,
                          options=["rw" if row.kind == Kind.ACTIVE else "ro", "rbind"])]
        lowers = [self.fs_dir(p.id) for p in parents]
        if row.kind != Kind.ACTIVE:
            if len(lowers) == 1:
                return [Mount(type="bind", source=lowers[0], options=["ro", "rbind"])]
            return [Mount(type="overlay", source="overlay",
                          options=[*self._base_options(), "lowerdir=" + ":".join(lowers)])]
        work = os.path.join(self.snapshot_dir(row.id), "work")
        return [Mount(type="overlay", source="overlay",
                      options=[*self._base_options(), f"workdir={work}", f"upperdir={fs}",
                               "lowerdir=" + ":".join(lowers)])]
