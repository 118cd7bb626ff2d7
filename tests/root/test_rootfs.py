"""The rootfs set-up for real: a forked child in its own mount (and pid, cgroup, user)
namespace runs prepare_rootfs + enter_rootfs + finish_rootfs with LinuxSyscalls on a busybox
rootfs, looks around from inside, and reports through a pipe. The child's mount namespace
dies with it; each test checks that the host's mount table is unchanged.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import traceback

import pytest

from skiff.oci.defaults import default_config
from skiff.oci.spec import parse_config
from skiff.runtime.rootfs import RootfsError, enter_rootfs, finish_rootfs, prepare_rootfs
from skiff.runtime.syscalls import (
    CLONE_NEWCGROUP,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SLAVE,
    LinuxSyscalls,
)

pytestmark = pytest.mark.root


# --- helpers that run inside the container (everything they use is imported above) -------------

def mountinfo() -> dict[str, dict]:
    """mountpoint -> {root, type, source, opts (per-mount), super (per-superblock)}; last wins."""
    out: dict[str, dict] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.rstrip("\n").split(" - ", 1)
            lf, rf = left.split(" "), right.split(" ")
            out[lf[4].replace("\\040", " ")] = {"root": lf[3], "type": rf[0], "source": rf[1],
                                                "opts": lf[5].split(","), "super": rf[2].split(",")}
    return out


def node(path: str) -> dict:
    st = os.lstat(path)
    kind = ("chr" if stat.S_ISCHR(st.st_mode) else "blk" if stat.S_ISBLK(st.st_mode)
            else "fifo" if stat.S_ISFIFO(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode)
            else "dir" if stat.S_ISDIR(st.st_mode) else "file")
    d = {"kind": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if kind in ("chr", "blk"):
        d["dev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    if kind == "link":
        d["target"] = os.readlink(path)
    return d


def write_errno(path: str, create: bool = False) -> int:
    """0 if ``path`` can be opened for writing, else the errno."""
    try:
        fd = os.open(path, os.O_WRONLY | (os.O_CREAT | os.O_EXCL if create else 0), 0o644)
    except OSError as e:
        return e.errno or -1
    os.close(fd)
    if create:
        os.unlink(path)
    return 0


def read_all(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


def busybox(script: str) -> tuple[int, str]:
    """Run ``sh -c script`` from the container's /bin; (exit status, output)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(w, 1)
            os.dup2(w, 2)
            os.execv("/bin/sh", ["sh", "-c", script])
        finally:
            os._exit(127)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode()


# --- the fork -------------------------------------------------------------------------------

def host_mounts() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def isolated(body, *, flags: int = CLONE_NEWNS, newpid: bool = True, userns: bool = False,
             before=None) -> dict:
    """Fork; in the child: ``before(sys)`` (real root, own mount ns) if given, a user namespace
    mapping 0 to 0 if ``userns``, unshare ``flags`` (+ a pid namespace and a fork), then
    ``body(sys)``; its JSON result (or the child's traceback) comes back through a pipe."""
    host_before = host_mounts()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            sys = LinuxSyscalls()
            if before is not None:
                sys.unshare(CLONE_NEWNS)
                sys.mount(None, "/", None, MS_SLAVE | MS_REC, None)
                before(sys)
            if userns:
                sys.unshare(CLONE_NEWUSER)
                with open("/proc/self/setgroups", "w") as f:
                    f.write("deny")
                with open("/proc/self/uid_map", "w") as f:
                    f.write("0 0 1")
                with open("/proc/self/gid_map", "w") as f:
                    f.write("0 0 1")
            sys.unshare(flags | (CLONE_NEWPID if newpid else 0))
            if newpid:
                inner = os.fork()
                if inner:
                    os.close(w)
                    _, status = os.waitpid(inner, 0)
                    code = os.waitstatus_to_exitcode(status)
                    return
            result = body(sys)
            os.write(w, json.dumps({"ok": result}).encode())
            code = 0
        except BaseException as e:
            msg = str(e) if isinstance(e, RootfsError) else traceback.format_exc()
            os.write(w, json.dumps({"error": msg}).encode())
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 20):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert host_mounts() == host_before, "the host's mount table changed"
    report = json.loads(data or b'{"error": "the child reported nothing"}')
    report["status"] = os.waitstatus_to_exitcode(status)
    return report


def ok(report: dict) -> dict:
    assert "error" not in report, report["error"]
    assert report["status"] == 0
    return report["ok"]


@pytest.fixture
def bundle(tmp_path) -> str:
    """A bundle with a busybox rootfs (sh, cat, ls, echo) and a secret file on the host side."""
    b = os.path.realpath(tmp_path / "bundle")
    root = b + "/rootfs"
    os.makedirs(root + "/bin")
    shutil.copy2("/bin/busybox", root + "/bin/busybox")
    for a in ("sh", "cat", "ls", "echo", "touch"):
        os.symlink("busybox", f"{root}/bin/{a}")
    for d in ("etc", "tmp", "proc", "sys", "dev", "usr/lib"):
        os.makedirs(f"{root}/{d}", exist_ok=True)
    with open(root + "/etc/passwd", "w") as f:
        f.write("root:x:0:0:root:/:/bin/sh\n")
    # hostile symlinks an image could carry
    os.symlink("/etc/shadow", root + "/etc/evil")
    os.symlink("/", root + "/mnt")
    os.symlink("../../../../../../../../..", root + "/usr/lib/up")
    with open(b + "/secret", "w") as f:
        f.write("inside the container\n")
    return b


def docker_like(bundle: str, **root: object) -> dict:
    doc = default_config()
    doc["root"].update(path=bundle + "/rootfs", **root)
    return doc


# --- tests ----------------------------------------------------------------------------------

def test_default_config_with_hostile_symlinks(bundle: str) -> None:
    doc = docker_like(bundle)
    doc["mounts"] += [
        {"destination": "/etc/evil", "type": "bind", "source": "secret", "options": ["bind", "ro"]},
        {"destination": "/mnt/x", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/usr/lib/up/y", "type": "tmpfs", "source": "tmpfs", "options": ["noexec"]},
    ]
    doc["linux"]["devices"] = [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o640, "uid": 0, "gid": 5},
        {"path": "/dev/pipe", "type": "p", "fileMode": 0o600},
    ]
    cfg = parse_config(doc)
    shadow_before = os.stat("/etc/shadow")
    my_memory_cgroup = [ln.split(":", 2)[2] for ln in read_all("/proc/self/cgroup").splitlines()
                        if ln.split(":")[1] == "memory"]

    def body(sys: LinuxSyscalls) -> dict:
        prepare_rootfs(sys, cfg, bundle=bundle)
        enter_rootfs(sys, cfg)
        finish_rootfs(sys, cfg)
        mi = mountinfo()
        devs = {n: node("/dev/" + n) for n in os.listdir("/dev")}
        cg = "/sys/fs/cgroup/"
        return {
            "mounts": mi, "devs": devs, "cwd": os.getcwd(),
            "cgroup_dirs": sorted(os.listdir(cg)), "memory_files": sorted(os.listdir(cg + "memory")),
            "keys": read_all("/proc/keys"), "timer_list": read_all("/proc/timer_list"),
            "acpi": os.listdir("/proc/acpi"), "firmware": os.listdir("/sys/firmware"),
            "w_firmware": write_errno("/sys/firmware/f", create=True),
            "w_sys_hostname": write_errno("/proc/sys/kernel/hostname"),
            "w_root": write_errno("/newfile", create=True),
            "w_tmpfs_dev": write_errno("/dev/shm/f", create=True),
            "shadow": read_all("/etc/shadow"), "w_shadow": write_errno("/etc/shadow"),
            "root_list": sorted(os.listdir("/")),
            "sh": busybox("echo hello from $(cat /etc/passwd | cat); ls /dev/pts"),
        }

    rep = ok(isolated(body, flags=CLONE_NEWNS | CLONE_NEWCGROUP))
    mi = rep["mounts"]
    # the old root is gone: every mount is the container's
    assert set(mi) <= {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                       "/sys/fs/cgroup", "/etc/shadow", "/x", "/y"} | {
        p for p in mi if p.startswith(("/sys/fs/cgroup/", "/proc/", "/sys/firmware"))}
    assert "ro" in mi["/"]["opts"] and rep["cwd"] == "/"
    assert mi["/proc"]["type"] == "proc"
    assert mi["/dev"]["type"] == "tmpfs" and "nosuid" in mi["/dev"]["opts"]
    assert "mode=755" in mi["/dev"]["super"] and "size=65536k" in mi["/dev"]["super"]
    assert mi["/dev/pts"]["type"] == "devpts"
    assert {"ptmxmode=666", "mode=620", "gid=5"} <= set(mi["/dev/pts"]["super"])
    assert {"nosuid", "noexec", "nodev"} <= set(mi["/dev/shm"]["opts"]) and mi["/dev/shm"]["source"] == "shm"
    assert mi["/dev/mqueue"]["type"] == "mqueue"
    assert mi["/sys"]["type"] == "sysfs" and {"ro", "nosuid", "noexec", "nodev"} <= set(mi["/sys"]["opts"])
    # cgroups: a read-only tmpfs of fresh, read-only hierarchy mounts rooted at the namespace
    assert mi["/sys/fs/cgroup"]["type"] == "tmpfs" and "ro" in mi["/sys/fs/cgroup"]["opts"]
    host_cg = {m["mountpoint"].rsplit("/", 1)[1] for m in _host_cgroup_mounts()}
    assert set(rep["cgroup_dirs"]) == host_cg
    for name in host_cg:
        m = mi["/sys/fs/cgroup/" + name]
        assert m["type"] in ("cgroup", "cgroup2") and m["root"] == "/"
        assert {"ro", "nosuid", "noexec", "nodev"} <= set(m["opts"])
    assert "memory.limit_in_bytes" in rep["memory_files"]
    assert my_memory_cgroup  # the namespace root is this process's memory cgroup, shown as "/"
    # devices: char devices with the right numbers and modes, symlinks, the config's devices
    devs = rep["devs"]
    for name, dev in (("null", [1, 3]), ("zero", [1, 5]), ("full", [1, 7]), ("random", [1, 8]),
                      ("urandom", [1, 9]), ("tty", [5, 0])):
        assert devs[name] == {"kind": "chr", "mode": 0o666, "uid": 0, "gid": 0, "dev": dev}, name
    assert devs["fuse"] == {"kind": "chr", "mode": 0o640, "uid": 0, "gid": 5, "dev": [10, 229]}
    assert devs["pipe"]["kind"] == "fifo" and devs["pipe"]["mode"] == 0o600
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore")):
        if name == "core" and not os.path.exists("/proc/kcore"):
            assert name not in devs  # as runc: no dangling /dev/core on a kernel without kcore
            continue
        assert devs[name]["kind"] == "link" and devs[name]["target"] == target, name
    assert devs["console"]["kind"] == "file"  # terminal: true; the lead binds the pty slave on it
    # masked paths read empty; readonly paths and the root refuse writes; the rest is writable
    assert rep["keys"] == "" and rep["timer_list"] == ""
    assert rep["acpi"] == [] and rep["firmware"] == []
    assert rep["w_firmware"] == errno.EROFS
    assert rep["w_sys_hostname"] == errno.EROFS
    assert rep["w_root"] == errno.EROFS
    assert rep["w_tmpfs_dev"] == 0
    # the hostile destinations landed inside the rootfs
    assert rep["shadow"] == "inside the container\n" and rep["w_shadow"] == errno.EROFS
    assert mi["/x"]["type"] == "tmpfs" and "size=1024k" in mi["/x"]["super"]
    assert mi["/y"]["type"] == "tmpfs" and "noexec" in mi["/y"]["opts"]
    assert {"x", "y"} <= set(rep["root_list"])
    # busybox runs in it
    assert rep["sh"] == [0, "hello from root:x:0:0:root:/:/bin/sh\nptmx\n"]
    # the host was not touched
    st = os.stat("/etc/shadow")
    assert (st.st_ino, st.st_size, st.st_mtime_ns) == (shadow_before.st_ino, shadow_before.st_size,
                                                       shadow_before.st_mtime_ns)
    assert os.path.isfile(bundle + "/rootfs/etc/shadow")
    assert not os.path.exists("/x") and not os.path.exists("/y")


def _host_cgroup_mounts() -> list[dict]:
    """The cgroup hierarchies this process is in, as the host mounts them."""
    mine = set()
    for ln in read_all("/proc/self/cgroup").splitlines():
        ctrls = ln.split(":")[1]
        mine.add(",".join(sorted(ctrls.split(","))) if ctrls else "")
    out = []
    for mp, m in mountinfo().items():
        if m["type"] == "cgroup2" and "" in mine:
            out.append(dict(m, mountpoint=mp))
        elif m["type"] == "cgroup":
            ctrls = sorted(o for o in m["super"] if o.startswith("name=") or (
                "=" not in o and o not in ("rw", "ro", "xattr", "noprefix", "clone_children")))
            if ",".join(ctrls) in mine:
                out.append(dict(m, mountpoint=mp))
    return out


def test_cgroups_without_a_namespace_are_binds_of_the_own_cgroup(bundle: str) -> None:
    doc = docker_like(bundle, readonly=False)
    doc["mounts"] = [m for m in doc["mounts"] if m["destination"] in ("/proc", "/sys", "/sys/fs/cgroup")]
    doc["linux"]["namespaces"] = [ns for ns in doc["linux"]["namespaces"] if ns["type"] != "cgroup"]
    cfg = parse_config(doc)
    paths = {}
    for ln in read_all("/proc/self/cgroup").splitlines():
        _, ctrls, path = ln.split(":", 2)
        paths[ctrls] = path

    def body(sys: LinuxSyscalls) -> dict:
        prepare_rootfs(sys, cfg, bundle=bundle)
        enter_rootfs(sys, cfg)
        finish_rootfs(sys, cfg)
        return {"mounts": mountinfo(), "memory": sorted(os.listdir("/sys/fs/cgroup/memory"))}

    rep = ok(isolated(body))
    mi = rep["mounts"]
    assert mi["/sys/fs/cgroup/memory"]["root"] == paths["memory"]
    assert mi["/sys/fs/cgroup/cpu"]["root"] == paths["cpu"]
    assert mi["/sys/fs/cgroup/unified"]["type"] == "cgroup2"
    assert mi["/sys/fs/cgroup/unified"]["root"] == paths[""]
    for name in ("memory", "cpu", "unified", "systemd"):
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(mi["/sys/fs/cgroup/" + name]["opts"]), name
    assert "memory.limit_in_bytes" in rep["memory"]


def test_no_pivot_moves_the_rootfs_and_chroots(bundle: str) -> None:
    doc = docker_like(bundle, readonly=False)
    doc["mounts"] = doc["mounts"][:3]  # proc, dev, dev/pts
    cfg = parse_config(doc)

    def body(sys: LinuxSyscalls) -> dict:
        prepare_rootfs(sys, cfg, no_pivot=True, bundle=bundle)
        enter_rootfs(sys, cfg, no_pivot=True)
        finish_rootfs(sys, cfg)
        return {"root": sorted(os.listdir("/")), "mounts": sorted(mountinfo()),
                "sh": busybox("echo ok > /tmp/f && cat /tmp/f")}

    rep = ok(isolated(body))
    assert {"bin", "dev", "etc", "proc", "sys", "tmp"} <= set(rep["root"])
    assert {"/proc", "/dev", "/dev/pts"} <= set(rep["mounts"])
    assert rep["sh"] == [0, "ok\n"]


@pytest.mark.parametrize("prop", ["shared", "slave", "private", "unbindable"])
def test_rootfs_propagation(bundle: str, prop: str) -> None:
    """The check runtime-tools makes: bind "/" recursively somewhere, mount under "/" again,
    see whether the new mount shows through the first bind."""
    doc = docker_like(bundle, readonly=False)
    doc["mounts"] = doc["mounts"][:2]
    doc["linux"]["rootfsPropagation"] = prop
    cfg = parse_config(doc)

    def body(sys: LinuxSyscalls) -> dict:
        prepare_rootfs(sys, cfg, bundle=bundle)
        enter_rootfs(sys, cfg)
        finish_rootfs(sys, cfg)
        for d in ("/target", "/mnt2", "/test"):
            os.mkdir(d)
        with open("/test/example", "w"):
            pass
        try:
            sys.mount("/", "/target", None, MS_BIND | MS_REC, None)
        except OSError as e:
            return {"bind_root": e.errno}
        sys.mount("/test", "/mnt2", None, MS_BIND | MS_REC, None)
        return {"bind_root": 0, "exposed": os.path.exists("/target/mnt2/example")}

    rep = ok(isolated(body))
    if prop == "unbindable":
        assert rep == {"bind_root": errno.EINVAL}
    else:
        assert rep == {"bind_root": 0, "exposed": prop == "shared"}


def test_user_namespace_binds_devices_and_keeps_locked_flags(bundle: str, tmp_path) -> None:
    locked = os.path.realpath(tmp_path / "locked")
    os.mkdir(locked)
    doc = {
        "ociVersion": "1.2.0", "root": {"path": bundle + "/rootfs", "readonly": True},
        "process": {"args": ["sh"], "cwd": "/"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            # sysfs cannot be mounted without owning a network namespace: /sys is bound instead
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            # a bind of a host mount whose nosuid/nodev/noexec are locked in this user namespace
            {"destination": "/vol", "type": "bind", "source": locked, "options": ["rbind", "ro"]},
        ],
        "linux": {"namespaces": [{"type": "user"}, {"type": "mount"}, {"type": "pid"}],
                  "uidMappings": [{"containerID": 0, "hostID": 0, "size": 1}],
                  "gidMappings": [{"containerID": 0, "hostID": 0, "size": 1}],
                  "maskedPaths": ["/proc/keys", "/proc/acpi", "/proc/kcore"],
                  "readonlyPaths": ["/proc/sys"]},
    }
    cfg = parse_config(doc)

    def before(sys: LinuxSyscalls) -> None:
        sys.mount("tmpfs", locked, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m")
        with open(locked + "/data", "w") as f:
            f.write("volume\n")

    def body(sys: LinuxSyscalls) -> dict:
        # the flags really are locked: a bind remount that drops them is refused
        probe = bundle + "/rootfs/tmp"
        sys.mount(locked, probe, None, MS_BIND, None)
        try:
            sys.mount(None, probe, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
            dropped = 0
        except OSError as e:
            dropped = e.errno or -1
        sys.umount2(probe, 0)
        prepare_rootfs(sys, cfg, bundle=bundle)
        enter_rootfs(sys, cfg)
        finish_rootfs(sys, cfg)
        mi = mountinfo()
        return {"dropped": dropped, "mounts": mi,
                "devs": {n: node("/dev/" + n) for n in ("null", "zero", "full", "random", "urandom", "tty")},
                "dev_mounts": sorted(p for p in mi if p.startswith("/dev/") and p != "/dev/pts"),
                "vol": read_all("/vol/data"), "w_vol": write_errno("/vol/data"),
                "keys": read_all("/proc/keys"), "w_sys": write_errno("/proc/sys/kernel/hostname"),
                "w_root": write_errno("/newfile", create=True), "pid": os.getpid(),
                "sh": busybox("cat /vol/data")}

    rep = ok(isolated(body, userns=True, before=before))
    assert rep["dropped"] == errno.EPERM
    mi = rep["mounts"]
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(mi["/vol"]["opts"])
    assert rep["vol"] == "volume\n" and rep["w_vol"] == errno.EROFS
    # the devices are the host's nodes, bound
    for name, dev in (("null", [1, 3]), ("zero", [1, 5]), ("full", [1, 7]), ("random", [1, 8]),
                      ("urandom", [1, 9]), ("tty", [5, 0])):
        assert rep["devs"][name]["kind"] == "chr" and rep["devs"][name]["dev"] == dev, name
    assert rep["dev_mounts"] == ["/dev/full", "/dev/null", "/dev/random", "/dev/tty", "/dev/urandom",
                                 "/dev/zero"]
    # /sys: the host's, bound read-only
    assert mi["/sys"]["type"] == "sysfs" and {"ro", "nosuid", "nodev", "noexec"} <= set(mi["/sys"]["opts"])
    assert rep["keys"] == "" and rep["w_sys"] == errno.EROFS and rep["w_root"] == errno.EROFS
    assert rep["pid"] == 1
    assert rep["sh"] == [0, "volume\n"]


def test_a_refused_mount_reports_what_failed(bundle: str) -> None:
    doc = docker_like(bundle)
    doc["mounts"] = [{"destination": "/data", "type": "bind", "source": "/no/such/volume",
                      "options": ["rbind"]}]
    cfg = parse_config(doc)

    def body(sys: LinuxSyscalls) -> dict:
        prepare_rootfs(sys, cfg, bundle=bundle)
        return {}

    rep = isolated(body)
    assert rep["status"] == 1
    assert rep["error"] == ("mounts[0] (/data): bind source /no/such/volume: no such file or directory")
