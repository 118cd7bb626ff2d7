"""Root filesystem set-up against RecordingSyscalls and a tmp rootfs (no root).

The mounts are recorded, not made; directories, files and symlinks are really created in the
tmp rootfs. Mount targets are ``/proc/self/fd/N`` magic links; the recorder reads them back
(while the descriptor is open) so the assertions name real paths.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest

from skiff.oci.defaults import default_config
from skiff.oci.spec import parse_config
from skiff.runtime import rootfs
from skiff.runtime.rootfs import (
    AT_RECURSIVE,
    MOUNT_ATTR__ATIME,
    MOUNT_ATTR_NOATIME,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    RootfsError,
    enter_rootfs,
    finish_rootfs,
    parse_mount_options,
    prepare_rootfs,
)
from skiff.runtime.syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_MOVE,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SILENT,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
    RecordingSyscalls,
    SyscallError,
)

FD_PREFIX = "/proc/self/fd/"

# A hybrid layout like this host's (v1 controllers plus cgroup2 at <cg>/unified), with a
# comounted hierarchy added; the host hierarchy lives under the test's tmp dir (<cg>).
MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / {cg} rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / {cg}/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / {cg}/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / {cg}/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpuacct,cpuset
40 31 0:37 / {cg}/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / {cg}/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / {cg}/not\\040mine rw,relatime - cgroup cgroup rw,net_cls
"""
CGROUP = """\
9:name=systemd:/
4:memory:/process_api/abc
3:cpuset,cpuacct:/
1:cpu:/
0::/c1
"""


def _real(a: object) -> object:
    if isinstance(a, str) and a.startswith(FD_PREFIX):
        n, _, tail = a[len(FD_PREFIX):].partition("/")
        return os.readlink(FD_PREFIX + n) + ("/" + tail if tail else "")
    return a


class Rec(RecordingSyscalls):
    """Records real paths; ``fail_when(call)`` may return an errno to fail one call."""

    def __init__(self, fail_when=None) -> None:
        super().__init__()
        self.fail_when = fail_when

    def _rec(self, name: str, *args: object) -> None:
        call = (name, *(_real(a) for a in args))
        self.calls.append(call)
        err = self.fail_when(call) if self.fail_when else None
        if err:
            raise SyscallError(err, f"{name}: {os.strerror(err)}")

    def mounts(self) -> list[tuple]:
        return [c for c in self.calls if c[0] == "mount"]


@pytest.fixture
def tree(tmp_path):
    """A rootfs, a fake host /proc, and a bundle directory."""
    root = os.path.realpath(tmp_path / "bundle" / "rootfs")
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        os.makedirs(os.path.join(root, d))
    proc = tmp_path / "hostproc"
    (proc / "self").mkdir(parents=True)
    hostcg = os.path.realpath(tmp_path / "hostcg")
    for d in ("cpu", "memory/process_api/abc", "cpu,cpuacct", "systemd", "unified/c1"):
        os.makedirs(os.path.join(hostcg, d))
    (proc / "self" / "mountinfo").write_text(MOUNTINFO.format(cg=hostcg))
    (proc / "self" / "cgroup").write_text(CGROUP)
    return root, str(proc), str(tmp_path / "bundle")


def config_for(root: str, **linux: object):
    doc = default_config()
    doc["root"]["path"] = root
    doc["linux"].update(linux)
    return parse_config(doc)


def bare_config(root: str, mounts: list[dict], **linux: object):
    doc = {"ociVersion": "1.2.0", "root": {"path": root}, "mounts": mounts,
           "process": {"args": ["sh"], "cwd": "/"}, "linux": dict(linux)}
    return parse_config(doc)


NSN = MS_NOSUID | MS_NOEXEC | MS_NODEV


# --- options --------------------------------------------------------------------------------

def test_every_flag_option() -> None:
    expect = {
        "ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
        "sync": MS_SYNCHRONOUS, "remount": MS_REMOUNT, "mand": MS_MANDLOCK, "dirsync": MS_DIRSYNC,
        "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME,
        "strictatime": MS_STRICTATIME, "bind": MS_BIND, "rbind": MS_BIND | MS_REC,
        "nosymfollow": MS_NOSYMFOLLOW, "lazytime": MS_LAZYTIME, "silent": MS_SILENT,
        "iversion": 1 << 23,
    }
    for opt, flag in expect.items():
        o = parse_mount_options([opt])
        assert (o.flags, o.clear, o.data, o.propagation) == (flag, 0, "", []), opt
    clears = {
        "rw": MS_RDONLY, "suid": MS_NOSUID, "dev": MS_NODEV, "exec": MS_NOEXEC, "async": MS_SYNCHRONOUS,
        "nomand": MS_MANDLOCK, "atime": MS_NOATIME, "diratime": MS_NODIRATIME,
        "norelatime": MS_RELATIME, "nostrictatime": MS_STRICTATIME, "symfollow": MS_NOSYMFOLLOW,
        "nolazytime": MS_LAZYTIME, "loud": MS_SILENT, "noiversion": 1 << 23,
    }
    for opt, flag in clears.items():
        o = parse_mount_options([opt])
        assert (o.flags, o.clear, o.data) == (0, flag, ""), opt
    assert parse_mount_options(["defaults"]).flags == 0


def test_later_option_wins_and_data_is_kept_in_order() -> None:
    o = parse_mount_options(["ro", "nosuid", "rw", "size=65536k", "mode=755", "noexec", "exec",
                             "newinstance"])
    assert o.flags == MS_NOSUID
    assert o.clear == MS_RDONLY | MS_NOEXEC
    assert o.data == "size=65536k,mode=755,newinstance"
    o = parse_mount_options(["rw", "ro"])
    assert (o.flags, o.clear) == (MS_RDONLY, 0)


def test_propagation_options_in_order() -> None:
    o = parse_mount_options(["rbind", "rprivate", "shared", "rslave", "unbindable", "runbindable",
                             "private", "slave", "rshared"])
    assert o.flags == MS_BIND | MS_REC
    assert o.propagation == [MS_PRIVATE | MS_REC, MS_SHARED, MS_SLAVE | MS_REC, MS_UNBINDABLE,
                             MS_UNBINDABLE | MS_REC, MS_PRIVATE, MS_SLAVE, MS_SHARED | MS_REC]
    assert o.data == ""


def test_recursive_attribute_options() -> None:
    o = parse_mount_options(["rro", "rnosuid", "rnoatime"])
    assert o.rec_set == MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME
    assert o.rec_clr == MOUNT_ATTR__ATIME
    assert o.flags == 0
    o = parse_mount_options(["rro", "rrw"])
    assert (o.rec_set, o.rec_clr) == (0, MOUNT_ATTR_RDONLY)


@pytest.mark.parametrize("opt", ["tmpcopyup", "idmap", "ridmap"])
def test_unsupported_options_are_refused(opt: str) -> None:
    with pytest.raises(RootfsError, match=f"mounts\\[2\\]: option '{opt}'") as ei:
        parse_mount_options(["nosuid", opt], "mounts[2]")
    assert ei.value.errno == errno.EINVAL


# --- prepare: the Docker-like default config --------------------------------------------------

def test_default_config_sequence_with_cgroupns(tree) -> None:
    root, proc, bundle = tree
    open(proc + "/kcore", "w").close()  # the host kernel has /proc/kcore: /dev/core is made
    cfg = config_for(root)
    sys = Rec()
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    cg = root + "/sys/fs/cgroup"
    assert sys.mounts() == [
        ("mount", None, "/", None, MS_SLAVE | MS_REC, None),
        ("mount", root, root, None, MS_BIND | MS_REC, None),
        ("mount", "proc", root + "/proc", "proc", 0, None),
        ("mount", "tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"),
        ("mount", "devpts", root + "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
         "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ("mount", "shm", root + "/dev/shm", "tmpfs", NSN, "mode=1777,size=65536k"),
        ("mount", "mqueue", root + "/dev/mqueue", "mqueue", NSN, None),
        ("mount", "sysfs", root + "/sys", "sysfs", NSN | MS_RDONLY, None),
        # v1: a tmpfs, one fresh mount per hierarchy (cgroup namespace), the unified one
        ("mount", "tmpfs", cg, "tmpfs", NSN | MS_RELATIME, "mode=755"),
        ("mount", "cgroup", cg + "/cpu", "cgroup", NSN | MS_RELATIME | MS_RDONLY, "cpu"),
        ("mount", "cgroup", cg + "/memory", "cgroup", NSN | MS_RELATIME | MS_RDONLY, "memory"),
        ("mount", "cgroup", cg + "/cpu,cpuacct", "cgroup", NSN | MS_RELATIME | MS_RDONLY, "cpuacct,cpuset"),
        ("mount", "systemd", cg + "/systemd", "cgroup", NSN | MS_RELATIME | MS_RDONLY, "name=systemd"),
        ("mount", "cgroup2", cg + "/unified", "cgroup2", NSN | MS_RELATIME | MS_RDONLY, None),
        ("mount", None, cg, None, MS_BIND | MS_REMOUNT | MS_RDONLY | NSN | MS_RELATIME, None),
    ]
    # comounted hierarchy: symlinks named after its controllers
    assert os.readlink(cg + "/cpuacct") == "cpu,cpuacct"
    assert os.readlink(cg + "/cpuset") == "cpu,cpuacct"
    # the net_cls hierarchy the process is not in is not mounted
    assert not os.path.exists(cg + "/not mine")
    # default devices: mknod with mode 0666 (umask cleared), no chown
    nodes = [c for c in sys.calls if c[0] == "mknod"]
    assert nodes == [
        ("mknod", root + "/dev/" + n, stat.S_IFCHR | 0o666, os.makedev(ma, mi))
        for n, ma, mi in (("null", 1, 3), ("random", 1, 8), ("full", 1, 7), ("tty", 5, 0),
                          ("zero", 1, 5), ("urandom", 1, 9))
    ]
    assert not [c for c in sys.calls if c[0] == "chown"]
    links = {n: os.readlink(f"{root}/dev/{n}") for n in ("fd", "stdin", "stdout", "stderr", "core", "ptmx")}
    assert links == {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                     "stderr": "/proc/self/fd/2", "core": "/proc/kcore", "ptmx": "pts/ptmx"}
    # terminal: an empty /dev/console for the pty slave
    assert os.path.isfile(root + "/dev/console") and os.path.getsize(root + "/dev/console") == 0
    for d in ("dev/pts", "dev/shm", "dev/mqueue", "sys/fs/cgroup/cpu", "sys/fs/cgroup/unified"):
        assert os.path.isdir(os.path.join(root, d)), d


def test_no_dev_core_without_proc_kcore(tree) -> None:
    # a kernel without CONFIG_PROC_KCORE: no dangling /dev/core (as runc)
    root, proc, bundle = tree
    assert not os.path.exists(proc + "/kcore")
    prepare_rootfs(Rec(), config_for(root), host_proc=proc, bundle=bundle)
    assert not os.path.lexists(root + "/dev/core")
    assert os.readlink(root + "/dev/fd") == "/proc/self/fd"


def test_cgroup_without_namespace_binds_own_cgroup_dirs(tree) -> None:
    root, proc, bundle = tree
    cfg = config_for(root)
    cfg.linux.namespaces = [ns for ns in cfg.linux.namespaces if ns.type != "cgroup"]
    cfg.mounts = [m for m in cfg.mounts if m.type == "cgroup"]
    sys = Rec()
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    hostcg = os.path.dirname(root).replace("/bundle", "/hostcg")
    cg = root + "/sys/fs/cgroup"
    mounts = sys.mounts()[2:]
    f = NSN | MS_RELATIME | MS_RDONLY
    binds = [(c[1], c[2]) for c in mounts if c[4] == MS_BIND | MS_REC]
    assert binds == [
        (hostcg + "/cpu", cg + "/cpu"),
        (hostcg + "/memory/process_api/abc", cg + "/memory"),
        (hostcg + "/cpu,cpuacct", cg + "/cpu,cpuacct"),
        (hostcg + "/systemd", cg + "/systemd"),
        (hostcg + "/unified/c1", cg + "/unified"),
    ]
    remounts = [c for c in mounts if c[4] & MS_REMOUNT]
    # each bind remounted with the entry's flags (plus what the host mount has locked)
    assert [c[2] for c in remounts] == [cg + "/cpu", cg + "/memory", cg + "/cpu,cpuacct",
                                        cg + "/systemd", cg + "/unified", cg]
    for c in remounts:
        assert c[4] & (MS_BIND | MS_REMOUNT | f) == MS_BIND | MS_REMOUNT | f


def test_cgroup_type_on_a_pure_v2_host_is_cgroup2(tree) -> None:
    root, proc, bundle = tree
    with open(proc + "/self/mountinfo", "w") as fh:
        fh.write("30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    with open(proc + "/self/cgroup", "w") as fh:
        fh.write("0::/user.slice/c1\n")
    cfg = config_for(root)
    cfg.mounts = [m for m in cfg.mounts if m.type == "cgroup"]
    sys = Rec()
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    assert sys.mounts()[2:] == [
        ("mount", "cgroup", root + "/sys/fs/cgroup", "cgroup2", NSN | MS_RELATIME | MS_RDONLY, None)]


def test_cgroup2_refused_without_cgroupns_falls_back_to_a_bind(tree) -> None:
    root, proc, bundle = tree
    cfg = bare_config(root, [{"destination": "/sys/fs/cgroup", "type": "cgroup2", "source": "cgroup2",
                              "options": ["nosuid", "ro"]}],
                      namespaces=[{"type": "mount"}, {"type": "user"}])
    sys = Rec(lambda c: errno.EPERM if c[0] == "mount" and c[3] == "cgroup2" else None)
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    dest = root + "/sys/fs/cgroup"
    m = sys.mounts()[2:]
    assert m[0] == ("mount", "cgroup2", dest, "cgroup2", MS_NOSUID | MS_RDONLY, None)
    hostcg = os.path.dirname(root).replace("/bundle", "/hostcg")
    assert m[1] == ("mount", hostcg + "/unified/c1", dest, None, MS_BIND | MS_REC, None)
    assert m[2][2] == dest and m[2][4] & (MS_REMOUNT | MS_RDONLY | MS_NOSUID) == MS_REMOUNT | MS_RDONLY | MS_NOSUID


# --- prepare: binds, hostile destinations -----------------------------------------------------

def test_bind_mount_of_a_file_and_a_dir_with_remount(tree, tmp_path) -> None:
    root, proc, bundle = tree
    (tmp_path / "bundle" / "hosts").write_text("127.0.0.1 localhost\n")
    vol = tmp_path / "vol"
    vol.mkdir()
    cfg = bare_config(root, [
        {"destination": "/etc/hosts", "type": "bind", "source": "hosts", "options": ["rbind", "ro"]},
        {"destination": "/data/deep", "type": "none", "source": str(vol),
         "options": ["rbind", "rw", "rprivate"]},
        {"destination": "/data/ro", "source": str(vol), "options": ["bind", "ro", "nosuid", "rro"]},
    ])
    sys = Rec()
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    vfs_keep = os.statvfs(str(vol)).f_flag & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    hosts_keep = os.statvfs(bundle + "/hosts").f_flag & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    assert sys.calls[2:] == [
        # relative bind source: relative to the bundle; a file destination is created as a file
        ("mount", bundle + "/hosts", root + "/etc/hosts", None, MS_BIND | MS_REC, None),
        ("mount", None, root + "/etc/hosts", None, MS_BIND | MS_REMOUNT | MS_RDONLY | hosts_keep, None),
        # rw only: no remount (the bind keeps its source's flags), then the propagation
        ("mount", str(vol), root + "/data/deep", None, MS_BIND | MS_REC, None),
        ("mount", None, root + "/data/deep", None, MS_PRIVATE | MS_REC, None),
        ("mount", str(vol), root + "/data/ro", None, MS_BIND, None),
        ("mount", None, root + "/data/ro", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | vfs_keep, None),
        ("mount_setattr", root + "/data/ro", AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0, 0),
    ] + [c for c in sys.calls[9:]]  # the /dev part is checked elsewhere
    assert os.path.isfile(root + "/etc/hosts") and os.path.isdir(root + "/data/deep")


def test_bind_remount_keeps_locked_flags_unless_cleared(tree, tmp_path, monkeypatch) -> None:
    root, proc, bundle = tree
    src = tmp_path / "src"
    src.mkdir()

    class V:
        f_flag = MS_NOSUID | MS_NODEV | MS_NOEXEC | 0x2000 | 1024  # + ST_NOSYMFOLLOW, ST_NOATIME

    real = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda p: V() if str(p) == str(src) else real(p))
    cfg = bare_config(root, [
        {"destination": "/a", "source": str(src), "options": ["rbind", "ro"]},
        {"destination": "/b", "source": str(src), "options": ["rbind", "ro", "exec", "dev"]},
    ])
    sys = Rec()
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    remounts = [c for c in sys.mounts() if c[4] & MS_REMOUNT]
    assert remounts == [
        ("mount", None, root + "/a", None,
         MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOSYMFOLLOW, None),
        ("mount", None, root + "/b", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOSYMFOLLOW, None),
    ]


def test_hostile_symlinks_never_redirect_a_mount_outside(tree, tmp_path) -> None:
    root, proc, bundle = tree
    os.symlink("/etc/shadow", root + "/etc/evil")
    os.symlink("/", root + "/mnt")
    os.makedirs(root + "/usr/lib")
    os.symlink("../../../../../../../tmp/escape", root + "/usr/lib/up")
    os.symlink("/proc/1/root/etc", root + "/etc/procroot")
    src = tmp_path / "secret"
    src.write_text("x")
    cfg = bare_config(root, [
        {"destination": "/etc/evil", "type": "bind", "source": str(src), "options": ["bind"]},
        {"destination": "/mnt/x", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/usr/lib/up/y", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/etc/procroot/z", "type": "tmpfs", "source": "tmpfs"},
    ])
    sys = Rec()
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    targets = [c[2] for c in sys.mounts()[2:6]]
    assert targets == [root + "/etc/shadow", root + "/x", root + "/tmp/escape/y",
                       root + "/proc/1/root/etc/z"]
    for t in targets:
        assert t.startswith(root + "/")
    assert os.path.isfile(root + "/etc/shadow")
    assert not os.path.exists("/tmp/escape/y")


def test_proc_on_a_symlinked_destination_is_refused(tree) -> None:
    root, proc, bundle = tree
    os.rmdir(root + "/proc")
    os.symlink("/tmp", root + "/proc")
    cfg = bare_config(root, [{"destination": "/proc", "type": "proc", "source": "proc"}])
    sys = Rec()
    with pytest.raises(RootfsError, match=r"mounts\[0\] \(/proc\): mount proc on /proc: the destination "
                       r"is a symlink in the rootfs \(to /tmp\), refusing"):
        prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    assert len(sys.mounts()) == 2


def test_a_failed_mount_says_what_where_and_why(tree) -> None:
    root, proc, bundle = tree
    cfg = bare_config(root, [{"destination": "/proc", "type": "proc", "source": "proc"}])
    sys = Rec(lambda c: errno.EPERM if c[0] == "mount" and c[3] == "proc" else None)
    with pytest.raises(RootfsError) as ei:
        prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    assert str(ei.value) == (f"mounts[0] (/proc): mount proc on /proc ({root}/proc) type proc: "
                             "operation not permitted")
    assert ei.value.errno == errno.EPERM


def test_missing_bind_source(tree) -> None:
    root, proc, bundle = tree
    cfg = bare_config(root, [{"destination": "/x", "type": "bind", "source": "/no/such/src",
                              "options": ["rbind"]}])
    with pytest.raises(RootfsError, match=r"mounts\[0\] \(/x\): bind source /no/such/src: no such file"):
        prepare_rootfs(Rec(), cfg, host_proc=proc, bundle=bundle)


def test_tmpcopyup_and_idmap_are_refused(tree) -> None:
    root, proc, bundle = tree
    cfg = bare_config(root, [{"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                              "options": ["tmpcopyup"]}])
    with pytest.raises(RootfsError, match=r"mounts\[0\] \(/run\): option 'tmpcopyup': copying"):
        prepare_rootfs(Rec(), cfg, host_proc=proc, bundle=bundle)
    cfg = bare_config(root, [{"destination": "/m", "type": "bind", "source": "/tmp", "options": ["rbind"],
                              "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                              "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}])
    with pytest.raises(RootfsError, match="idmapped mounts are not supported"):
        prepare_rootfs(Rec(), cfg, host_proc=proc, bundle=bundle)


def test_userns_sysfs_refused_falls_back_to_binding_sys(tree) -> None:
    root, proc, bundle = tree
    cfg = bare_config(root, [{"destination": "/sys", "type": "sysfs", "source": "sysfs",
                              "options": ["nosuid", "noexec", "nodev", "ro"]}],
                      namespaces=[{"type": "mount"}, {"type": "user"}])
    sys = Rec(lambda c: errno.EPERM if c[0] == "mount" and c[3] == "sysfs" else None)
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    m = sys.mounts()[2:5]
    assert m[0] == ("mount", "sysfs", root + "/sys", "sysfs", NSN | MS_RDONLY, None)
    assert m[1] == ("mount", "/sys", root + "/sys", None, MS_BIND | MS_REC, None)
    assert m[2][4] & (MS_BIND | MS_REMOUNT | NSN | MS_RDONLY) == MS_BIND | MS_REMOUNT | NSN | MS_RDONLY


def test_root_propagation_choice(tree) -> None:
    root, proc, bundle = tree
    for prop, first in (("", MS_SLAVE | MS_REC), ("rslave", MS_SLAVE | MS_REC),
                        ("private", MS_PRIVATE | MS_REC), ("rprivate", MS_PRIVATE | MS_REC),
                        ("shared", MS_SLAVE | MS_REC), ("unbindable", MS_SLAVE | MS_REC)):
        cfg = bare_config(root, [], rootfsPropagation=prop)
        sys = Rec()
        prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
        assert sys.calls[0] == ("mount", None, "/", None, first, None), prop


def test_run_hooks_is_called_last(tree) -> None:
    root, proc, bundle = tree
    seen = []
    sys = Rec()
    prepare_rootfs(sys, bare_config(root, []), host_proc=proc, bundle=bundle,
                   run_hooks=lambda kind: seen.append((kind, len(sys.calls))))
    assert seen == [("createContainer", len(sys.calls))]


# --- prepare: devices -----------------------------------------------------------------------

def test_linux_devices_are_created_with_mode_and_owner(tree) -> None:
    root, proc, bundle = tree
    cfg = bare_config(root, [{"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}], devices=[
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0},
        {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0, "fileMode": 432, "uid": 7},
        {"path": "/dev/unbuf", "type": "u", "major": 4, "minor": 1},
        {"path": "/dev/deep/fifo", "type": "p", "fileMode": 0o600},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600},
    ])
    sys = Rec()
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    made = [c for c in sys.calls if c[0] in ("mknod", "chown")]
    d = root + "/dev/"
    assert made == [
        ("mknod", d + "null", stat.S_IFCHR | 0o600, os.makedev(1, 3)),  # the config's mode wins
        ("mknod", d + "random", stat.S_IFCHR | 0o666, os.makedev(1, 8)),
        ("mknod", d + "full", stat.S_IFCHR | 0o666, os.makedev(1, 7)),
        ("mknod", d + "tty", stat.S_IFCHR | 0o666, os.makedev(5, 0)),
        ("mknod", d + "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5)),
        ("mknod", d + "urandom", stat.S_IFCHR | 0o666, os.makedev(1, 9)),
        ("mknod", d + "fuse", stat.S_IFCHR | 0o666, os.makedev(10, 229)),
        ("chown", d + "fuse", 0, 0),
        ("mknod", d + "sda", stat.S_IFBLK | 0o660, os.makedev(8, 0)),
        ("chown", d + "sda", 7, -1),
        ("mknod", d + "unbuf", stat.S_IFCHR | 0o666, os.makedev(4, 1)),
        ("mknod", d + "deep/fifo", stat.S_IFIFO | 0o600, 0),
    ]
    assert os.path.isdir(d + "deep")
    # no terminal: no /dev/console
    assert not os.path.exists(d + "console")


def test_userns_binds_the_host_nodes(tree) -> None:
    root, proc, bundle = tree
    cfg = bare_config(root, [{"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}],
                      namespaces=[{"type": "user"}, {"type": "mount"}],
                      devices=[{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
                               {"path": "/dev/fifo", "type": "p"}])
    sys = Rec()
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    d = root + "/dev/"
    binds = [c for c in sys.mounts() if c[4] == MS_BIND]
    assert binds == [("mount", f"/dev/{n}", d + n, None, MS_BIND, None)
                     for n in ("null", "random", "full", "tty", "zero", "urandom", "fuse")]
    for n in ("null", "tty", "fuse"):
        assert os.path.isfile(d + n)
    # a fifo needs no privilege
    assert [c for c in sys.calls if c[0] == "mknod"] == [("mknod", d + "fifo", stat.S_IFIFO | 0o666, 0)]


def test_mknod_refused_falls_back_to_bind(tree) -> None:
    root, proc, bundle = tree
    cfg = bare_config(root, [{"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}])
    sys = Rec(lambda c: errno.EPERM if c[0] == "mknod" else None)
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    assert [c[1:3] for c in sys.mounts() if c[4] == MS_BIND] == [
        (f"/dev/{n}", f"{root}/dev/{n}") for n in ("null", "random", "full", "tty", "zero", "urandom")]


def test_an_existing_file_that_is_not_the_device_is_an_error(tree) -> None:
    root, proc, bundle = tree
    with open(root + "/dev/null", "w"):
        pass
    cfg = bare_config(root, [])  # /dev is the image's own
    sys = Rec(lambda c: errno.EEXIST if c[0] == "mknod" and c[1].endswith("/null") else None)
    with pytest.raises(RootfsError, match=f"device /dev/null: {root}/dev/null already exists and is a "
                       "regular file, not a character device 1:3"):
        prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)


def test_an_existing_matching_device_is_kept(tree) -> None:
    root, proc, bundle = tree
    os.mkfifo(root + "/dev/pipe", 0o644)
    cfg = bare_config(root, [], devices=[{"path": "/dev/pipe", "type": "p", "fileMode": 0o600}])
    sys = Rec(lambda c: errno.EEXIST if c[0] == "mknod" and c[1].endswith("/pipe") else None)
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    assert stat.S_IMODE(os.stat(root + "/dev/pipe").st_mode) == 0o600


def test_dev_bind_mount_gets_no_nodes(tree) -> None:
    root, proc, bundle = tree
    cfg = bare_config(root, [{"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]}],
                      devices=[{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
                               {"path": "/opt/fifo", "type": "p"}])
    sys = Rec()
    prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    # nothing created in the host's /dev; a device elsewhere is still made
    assert [c for c in sys.calls if c[0] == "mknod"] == [("mknod", root + "/opt/fifo", stat.S_IFIFO | 0o666, 0)]
    assert not os.path.islink(root + "/dev/ptmx")


def test_existing_ptmx_is_replaced_by_the_symlink(tree) -> None:
    root, proc, bundle = tree
    with open(root + "/dev/ptmx", "w"):
        pass
    os.symlink("/elsewhere", root + "/dev/stdin")
    prepare_rootfs(Rec(), bare_config(root, []), host_proc=proc, bundle=bundle)
    assert os.readlink(root + "/dev/ptmx") == "pts/ptmx"
    assert os.readlink(root + "/dev/stdin") == "/elsewhere"  # the image's own is kept


# --- enter ----------------------------------------------------------------------------------

def test_enter_with_pivot_root(tree) -> None:
    root, _, _ = tree
    sys = Rec()
    enter_rootfs(sys, bare_config(root, []))
    assert sys.calls == [("chdir", root), ("pivot_root", ".", "."), ("umount2", ".", MNT_DETACH),
                         ("chdir", "/")]


def test_enter_without_pivot(tree) -> None:
    root, _, _ = tree
    sys = Rec()
    enter_rootfs(sys, bare_config(root, []), no_pivot=True)
    assert sys.calls == [("chdir", root), ("mount", root, "/", None, MS_MOVE, None), ("chroot", "."),
                         ("chdir", "/")]


@pytest.mark.parametrize("prop,flag", [("shared", MS_SHARED), ("rshared", MS_SHARED | MS_REC),
                                       ("unbindable", MS_UNBINDABLE),
                                       ("runbindable", MS_UNBINDABLE | MS_REC)])
def test_enter_applies_shared_or_unbindable_to_the_new_root(tree, prop: str, flag: int) -> None:
    root, _, _ = tree
    sys = Rec()
    enter_rootfs(sys, bare_config(root, [], rootfsPropagation=prop))
    assert sys.calls[-1] == ("mount", None, "/", None, flag, None)


def test_enter_failure_names_the_step(tree) -> None:
    root, _, _ = tree
    sys = Rec(lambda c: errno.EINVAL if c[0] == "pivot_root" else None)
    with pytest.raises(RootfsError, match=f"pivot_root into {root}: invalid argument"):
        enter_rootfs(sys, bare_config(root, []))


# --- finish ---------------------------------------------------------------------------------

def test_finish_masks_readonly_and_root(tree) -> None:
    root, _, _ = tree
    os.makedirs(root + "/proc/acpi")
    os.makedirs(root + "/proc/sys/kernel")
    with open(root + "/proc/kcore", "w"):
        pass
    doc_linux = {"maskedPaths": ["/proc/kcore", "/proc/acpi", "/proc/absent", "/proc/kcore/x"],
                 "readonlyPaths": ["/proc/sys", "/proc/absent-too"]}
    cfg = bare_config(root, [], **doc_linux)
    cfg.root_readonly = True
    sys = Rec()
    finish_rootfs(sys, cfg, root=root)
    keep = os.statvfs(root).f_flag & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    assert sys.calls == [  # runc's order: read-only paths, then masks (on top of them)
        ("mount", root + "/proc/sys", root + "/proc/sys", None, MS_BIND | MS_REC, None),
        ("mount", None, root + "/proc/sys", None, MS_BIND | MS_REMOUNT | MS_RDONLY | keep, None),
        ("mount", root + "/dev/null", root + "/proc/kcore", None, MS_BIND, None),
        ("mount", "tmpfs", root + "/proc/acpi", "tmpfs", MS_RDONLY, None),
        ("mount", None, root, None, MS_BIND | MS_REMOUNT | MS_RDONLY | keep, None),
    ]


def test_finish_with_nothing_to_do(tree) -> None:
    root, _, _ = tree
    sys = Rec()
    finish_rootfs(sys, bare_config(root, []), root=root)
    assert sys.calls == []


def test_finish_failure_names_the_path(tree) -> None:
    root, _, _ = tree
    os.makedirs(root + "/proc/sys")
    cfg = bare_config(root, [], readonlyPaths=["/proc/sys"])
    sys = Rec(lambda c: errno.EPERM if c[0] == "mount" and c[4] & MS_REMOUNT else None)
    with pytest.raises(RootfsError, match="readonlyPaths: remount /proc/sys read-only: operation not permitted"):
        finish_rootfs(sys, cfg, root=root)


def test_module_imports_stay_light() -> None:
    import subprocess
    import sys as _sys

    code = ("import sys; import skiff.runtime.rootfs; "
            "bad = [m for m in ('re', 'typing', 'dataclasses', 'enum', 'subprocess', 'inspect', "
            "'logging', 'socket', 'argparse') if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([_sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
    assert rootfs.resolve_in_root is not None


def test_a_failed_bind_remount_names_the_flags(tree, tmp_path) -> None:
    root, proc, bundle = tree
    src = tmp_path / "v"
    src.mkdir()
    cfg = bare_config(root, [{"destination": "/v", "source": str(src), "options": ["rbind", "ro", "nosuid"]}])
    sys = Rec(lambda c: errno.EPERM if c[0] == "mount" and c[4] & MS_REMOUNT else None)
    with pytest.raises(RootfsError) as ei:
        prepare_rootfs(sys, cfg, host_proc=proc, bundle=bundle)
    msg = str(ei.value)
    assert msg.startswith(f"mounts[0] (/v): remount the bind mount /v ({root}/v) ro,nosuid,")
    assert "remount,bind" in msg and msg.endswith(": operation not permitted")


def test_cgroup_layout_reads_escaped_mountpoints(tmp_path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(
        "32 31 0:29 /sub /cg\\040dir/my\\134cpu rw - cgroup cgroup rw,cpu,cpuacct\n"
        "41 31 0:38 / /cg\\040dir/unified rw - cgroup2 cgroup2 rw\n")
    (tmp_path / "self" / "cgroup").write_text("1:cpuacct,cpu:/sub/c1\n0::/\n")
    layout = rootfs._CgroupLayout(str(tmp_path))
    assert layout.v1 == [("my\\cpu", "cpu,cpuacct", "/cg dir/my\\cpu", "/cg dir/my\\cpu/c1")]
    assert layout.v2 == ("unified", "/cg dir/unified", "/cg dir/unified")
