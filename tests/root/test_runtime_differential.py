"""Differential tests: one bundle run through skiff-runc and through runc (/usr/bin/runc, its own
--root), with a probe script inside that prints what the container sees; the outputs must be
equal after the normalisations below.

Normalisations, each with its reason:

1. /proc/self/mountinfo: the mount ID, the parent ID and the major:minor of each line are
   dropped, and the numbers of the optional fields (``shared:N``, ``master:N``) replaced by
   ``N``. They are allocated by the kernel per mount (anonymous filesystems such as tmpfs,
   proc, devpts get a new minor on every mount), so they differ between any two runs, even
   of the same runtime. Everything else of each line, and the order of the lines, is compared.
2. Two deliberate differences in the cgroup mount of a v1/hybrid host (this machine), both
   checked to be there before they are rewritten, so they cannot hide anything else:
   a. the tmpfs at /sys/fs/cgroup: skiff-runc remounts it read-only when the mount has ``ro``
      (what the config asks for; runc did so up to 1.0-rc90). runc 1.1.5 leaves it
      read-write: its remount was removed as redundant in runc commit 55d5c99c, which only
      considered the cgroup mounts below it. The skiff line is compared with ``ro`` made ``rw``.
   b. skiff-runc also mounts the host's cgroup2 hierarchy (``unified``) below it, as crun does
      and as systemd in a container expects on a hybrid host; runc 1.1.5 mounts v1 hierarchies
      only. The ``/sys/fs/cgroup/unified`` line is dropped from the skiff output.
3. devices.list (cgroup v1) is compared sorted: the kernel lists the exceptions in the order
   they were written; skiff-runc writes the config's rules then runc's defaults in order,
   runc 1.1 writes what its device-rule emulator computes, in its own order. The set of rules
   (what is allowed) must be equal.
4. In a user namespace only: the group of /dev/mqueue. runc's init becomes uid 0 of the
   namespace early (nsexec's setresuid) but keeps the host's gid 0, which the namespace does
   not map, until its very last step (setupUser); the mqueue mount's root, made meanwhile,
   gets that unmapped group (65534 inside). skiff-runc becomes root:root of the namespace
   before it sets up the rootfs. The runc line is compared with 65534 made 0 (checked to be
   there).
Nothing else is normalised: /dev is listed without timestamps (``stat`` without times), and
every other section (ids, hostname, capability/NoNewPrivs/Seccomp status, ulimit -a, env, cwd,
umask, cgroup membership and limits, sysctls, network) must be equal byte for byte.

Not compared because runc 1.1.5 (runtime-spec 1.0.2) predates them: ``domainname`` (spec 1.1;
tested in test_runtime_config.py).
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile

import pytest
from runtime_util import Runtime, make_bundle, make_rootfs, write_config

from skiff.oci.seccomp_default import DEFAULT_CAPS, docker_default_profile, native_arch

pytestmark = pytest.mark.root

RUNC = "/usr/bin/runc"

PROBE = r"""#!/bin/sh
section() { echo "== $1"; }
section id; id
section hostname; hostname; cat /proc/sys/kernel/domainname
section status; grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status
section ulimit; ulimit -a
section oom_score_adj; cat /proc/self/oom_score_adj
section mountinfo; cat /proc/self/mountinfo
section dev
for f in /dev/* /dev/pts/* /dev/shm/* /dev/mqueue/*; do
    [ -e "$f" ] || [ -L "$f" ] && stat -c '%n %A %u %g %t:%T %N' "$f"
done
section env; env | sort
section cwd; pwd
section umask; umask
section cgroup; cat /proc/self/cgroup
section cgroup-limits
for f in memory/memory.limit_in_bytes memory/memory.soft_limit_in_bytes memory/memory.swappiness \
         pids/pids.max cpu/cpu.shares cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpuset/cpuset.cpus \
         blkio/blkio.weight; do
    echo "$f $(cat /sys/fs/cgroup/$f 2>&1)"
done
section devices-cgroup; cat /sys/fs/cgroup/devices/devices.list 2>&1
section sysctl; cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax
section net; cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '; ip addr | grep -E 'state|inet'
section writable
for d in / /tmp /data /proc/sys /sys /sys/fs/cgroup /dev /dev/shm; do
    touch "$d/.w" 2>/dev/null && echo "$d writable" && rm -f "$d/.w" || echo "$d not writable"
done
section fds; ls /proc/self/fd
"""

_MOUNT_LINE = re.compile(r"^\d+ \d+ \d+:\d+ ")
_OPTIONAL = re.compile(r"\b(shared|master|propagate_from):\d+")


def sections(out: str) -> dict[str, list[str]]:
    res: dict[str, list[str]] = {}
    cur = "(before the first section)"
    for line in out.splitlines():
        if line.startswith("== "):
            cur = line[3:]
            res[cur] = []
        else:
            res.setdefault(cur, []).append(line)
    return res


def normalise_mountinfo(lines: list[str]) -> list[str]:
    """Normalisation 1: drop mount id, parent id and device number; optional fields' numbers."""
    out = []
    for line in lines:
        assert _MOUNT_LINE.match(line), f"not a mountinfo line: {line!r}"
        out.append(_OPTIONAL.sub(r"\1:N", _MOUNT_LINE.sub("", line)))
    return out


def skiff_cgroup_differences(lines: list[str]) -> list[str]:
    """Normalisation 2 (skiff side): the read-only cgroup tmpfs and the unified mount, both
    required to be present."""
    out = []
    tmpfs = unified = False
    for line in lines:
        f = line.split(" ")
        if f[1] == "/sys/fs/cgroup" and " - tmpfs " in line and f[2].startswith("ro,"):
            tmpfs = True
            line = " ".join([f[0], f[1], "rw," + f[2][3:], *f[3:]])
        elif f[1] == "/sys/fs/cgroup/unified" and " - cgroup2 " in line:
            unified = True
            continue
        out.append(line)
    assert tmpfs and unified, "skiff-runc's cgroup mount changed: revisit normalisation 2"
    return out


def probe(rt: Runtime, bundle: str, cid: str) -> tuple[int, dict[str, list[str]]]:
    p = rt("run", "--bundle", bundle, cid, check=False)
    assert "== fds" in p.stdout, f"{rt.binary}: the probe did not finish ({p.returncode}): {p.stderr}"
    return p.returncode, sections(p.stdout)


@pytest.fixture
def runtimes(runtime, state_dirs):
    """(skiff-runc, runc), each with its own state root."""
    runc = Runtime(str(state_dirs.root / "runc"), binary=RUNC)
    yield runtime, runc
    runc.cleanup()


def runc_userns_mqueue_group(out: dict[str, list[str]]) -> None:
    """Normalisation 4 (runc side, user namespace only)."""
    lines = out["dev"]
    i = next(i for i, line in enumerate(lines) if line.startswith("/dev/mqueue "))
    f = lines[i].split(" ")
    assert f[3] == "65534", f"runc's /dev/mqueue: {lines[i]!r}: revisit normalisation 4"
    f[3] = "0"
    lines[i] = " ".join(f)


def compare(runtimes, bundle: str, cid: str, *, userns: bool = False) -> dict[str, list[str]]:
    skiff, runc = runtimes
    skiff.track(cid)
    runc.track(cid)
    code_s, out_s = probe(skiff, bundle, cid)
    code_r, out_r = probe(runc, bundle, cid)
    assert code_s == code_r
    out_s["mountinfo"] = skiff_cgroup_differences(normalise_mountinfo(out_s["mountinfo"]))
    out_r["mountinfo"] = normalise_mountinfo(out_r["mountinfo"])
    for out in (out_s, out_r):  # normalisation 3
        out["devices-cgroup"] = sorted(out["devices-cgroup"])
    if userns:
        runc_userns_mqueue_group(out_r)
    assert list(out_s) == list(out_r)
    for name in out_r:
        if out_s[name] != out_r[name]:
            diff = "\n".join(difflib.unified_diff(out_r[name], out_s[name], "runc", "skiff-runc", lineterm=""))
            raise AssertionError(f"section {name!r} differs:\n{diff}")
    return out_s


def _bundle(path: str, rootfs: str | None = None) -> dict:
    cfg = make_bundle(path, ["sh", "/probe.sh"], rootfs=rootfs)
    root = rootfs or os.path.join(path, "rootfs")
    with open(os.path.join(root, "probe.sh"), "w") as f:
        f.write(PROBE)
    return cfg


def test_default_config_with_memory_and_pids_limits(runtimes, tmp_path):
    bundle = str(tmp_path / "b")
    cfg = _bundle(bundle)
    cfg["linux"]["resources"].update({"memory": {"limit": 64 << 20, "reservation": 32 << 20},
                                      "pids": {"limit": 77},
                                      "cpu": {"shares": 512, "quota": 20000, "period": 100000}})
    write_config(bundle, cfg)
    out = compare(runtimes, bundle, "c-diff-default")
    # what was compared is what the config asks for (a shared mistake would not show otherwise)
    assert "memory/memory.limit_in_bytes 67108864" in out["cgroup-limits"]
    assert "pids/pids.max 77" in out["cgroup-limits"]
    assert out["hostname"] == ["skiff", "(none)"]
    assert "/ not writable" in out["writable"]


def test_custom_process_mounts_and_security(runtimes, tmp_path, request_cleanup):
    hostdir = tempfile.mkdtemp(prefix="skiff-diff-")
    request_cleanup.append(lambda: shutil.rmtree(hostdir))
    with open(os.path.join(hostdir, "f"), "w") as f:
        f.write("x")
    bundle = str(tmp_path / "b")
    cfg = _bundle(bundle)
    os.makedirs(os.path.join(bundle, "rootfs/etc/hide"))
    caps = sorted(DEFAULT_CAPS)
    proc = cfg["process"]
    proc["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 0o027}
    proc["cwd"] = "/tmp"
    proc["env"] = ["PATH=/bin:/usr/bin", "FOO=bar baz", "EMPTY="]
    proc["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
                       {"type": "RLIMIT_CORE", "soft": 1024, "hard": 2048},
                       {"type": "RLIMIT_STACK", "soft": 4 << 20, "hard": 16 << 20}]
    proc["capabilities"] = {"bounding": caps, "permitted": caps, "effective": caps,
                            "inheritable": ["CAP_CHOWN", "CAP_KILL"], "ambient": ["CAP_CHOWN", "CAP_KILL"]}
    proc["noNewPrivileges"] = False
    proc["oomScoreAdj"] = 100
    cfg["root"]["readonly"] = False
    cfg["hostname"] = "diff-host"
    cfg["mounts"] += [
        {"destination": "/data", "type": "bind", "source": hostdir, "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=700", "size=1m", "uid=1000"]},
    ]
    lx = cfg["linux"]
    lx["namespaces"] = [ns for ns in lx["namespaces"] if ns["type"] != "cgroup"]
    lx["cgroupsPath"] = "/skiff-diff-custom"
    lx["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "87654321"}
    lx["maskedPaths"] = lx["maskedPaths"] + ["/etc/hide", "/etc/passwd"]
    lx["readonlyPaths"] = lx["readonlyPaths"] + ["/tmp"]
    lx["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o660,
                      "uid": 1000, "gid": 1000}]
    lx["resources"]["devices"] = [{"allow": False, "access": "rwm"},
                                  {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"}]
    lx["resources"]["memory"] = {"limit": 48 << 20, "swappiness": 10}
    lx["seccomp"] = docker_default_profile(DEFAULT_CAPS, native_arch())
    write_config(bundle, cfg)
    out = compare(runtimes, bundle, "c-diff-custom")
    assert out["id"][0].startswith("uid=1000 gid=1000 groups=10")
    assert out["umask"] == ["0027"] and out["cwd"] == ["/tmp"]
    assert "FOO=bar baz" in out["env"]
    assert out["oom_score_adj"] == ["100"]
    assert out["sysctl"] == ["1", "87654321"]
    assert any(line.startswith("Seccomp:") and line.endswith("2") for line in out["status"])
    assert any(" /data " in line and line.split()[2].startswith("ro,") for line in out["mountinfo"])
    assert out["cgroup"] and all(line.endswith("/skiff-diff-custom") for line in out["cgroup"]
                                 if not line.startswith("0::"))


def test_user_namespace(runtimes, tmp_path, request_cleanup):
    # container root is host uid 100000: the rootfs is its own, in a directory it can reach
    top = tempfile.mkdtemp(prefix="skiff-diff-userns-")
    os.chmod(top, 0o755)
    request_cleanup.append(lambda: shutil.rmtree(top))
    rootfs = os.path.join(top, "rootfs")
    make_rootfs(rootfs)
    bundle = str(tmp_path / "b")
    cfg = _bundle(bundle, rootfs=rootfs)
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), 100000, 100000)
    os.lchown(rootfs, 100000, 100000)
    lx = cfg["linux"]
    lx["namespaces"].append({"type": "user"})
    lx["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    lx["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    lx["resources"]["pids"] = {"limit": 50}
    write_config(bundle, cfg)
    out = compare(runtimes, bundle, "c-diff-userns", userns=True)
    assert out["id"][0].startswith("uid=0(root) gid=0(root)")
    assert "pids/pids.max 50" in out["cgroup-limits"]


def test_exec_into_a_running_container(runtimes, tmp_path):
    """The probe through ``exec`` (with flags) into a container started by the same runtime."""
    bundle = str(tmp_path / "b")
    cfg = _bundle(bundle)
    cfg["process"]["args"] = ["sleep", "300"]
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 300, "hard": 400}]
    cfg["process"]["noNewPrivileges"] = False
    cfg["linux"]["resources"]["pids"] = {"limit": 40}
    cfg["linux"]["seccomp"] = docker_default_profile(DEFAULT_CAPS, native_arch())
    write_config(bundle, cfg)
    outs = []
    for rt in runtimes:
        cid = rt.track("c-diff-exec")
        rt("run", "-d", "--bundle", bundle, cid)
        p = rt("exec", "--user", "1000:1000", "--additional-gids", "10", "--cwd", "/tmp",
               "--env", "FOO=exec", "--cap", "CAP_NET_RAW", cid, "sh", "/probe.sh", check=False)
        assert "== fds" in p.stdout, f"{rt.binary}: exec of the probe failed ({p.returncode}): {p.stderr}"
        outs.append((p.returncode, sections(p.stdout)))
        rt("delete", "--force", cid)
    (code_s, out_s), (code_r, out_r) = outs
    assert code_s == code_r
    out_s["mountinfo"] = skiff_cgroup_differences(normalise_mountinfo(out_s["mountinfo"]))
    out_r["mountinfo"] = normalise_mountinfo(out_r["mountinfo"])
    for out in (out_s, out_r):
        out["devices-cgroup"] = sorted(out["devices-cgroup"])
    assert list(out_s) == list(out_r)
    for name in out_r:
        if out_s[name] != out_r[name]:
            diff = "\n".join(difflib.unified_diff(out_r[name], out_s[name], "runc", "skiff-runc", lineterm=""))
            raise AssertionError(f"section {name!r} differs:\n{diff}")
    assert out_s["id"][0].startswith("uid=1000 gid=1000 groups=10")
    assert "FOO=exec" in out_s["env"] and out_s["cwd"] == ["/tmp"]
