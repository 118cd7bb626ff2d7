"""Specs from skiff.daemon.specgen run as they are by skiff-runc, runc and crun.

Each test builds the spec skiffd would give containerd for a docker CLI create body (the
bodies of tests/unit/test_specgen.py), writes it into a bundle with the busybox rootfs and
runs a probe with ``<runtime> run`` in the foreground; the probe prints what the container
sees. crun runs through the conformance suite's wrapper (``crun-v1.sh``: crun 1.8 refuses this
host's hybrid cgroup layout unless the cgroup2 mount is hidden). cgroupsPath is ``/<id>``, which
the runtime removes with the container.
"""

from __future__ import annotations

import json
import os
import secrets

import pytest
from runtime_util import Runtime

from skiff.daemon import specgen as sg
from skiff.oci.validate import validate_config
from unit.test_specgen import IMAGE, cli_body, typical_body

pytestmark = pytest.mark.root

CRUN_WRAPPER = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                             "conformance", "runtime-tools", "crun-v1.sh"))
RUNTIMES = {"skiff-runc": None, "runc": "/usr/sbin/runc", "crun": CRUN_WRAPPER}


@pytest.fixture(params=sorted(RUNTIMES))
def rt(request, state_dirs, runtime_bin):
    binary = RUNTIMES[request.param] or runtime_bin
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{request.param}: {binary} is not installed")
    r = Runtime(str(state_dirs.root / request.param), binary)
    yield r
    r.cleanup()


def run(rt: Runtime, bundle, cfg: dict, host: dict, probe: str, **kw: object) -> tuple[int, str]:
    cfg = dict(cfg, Cmd=["sh", "-c", probe], Tty=False)
    sg.validate_create(cfg, host)
    merged = sg.merge_config(cfg, IMAGE)
    etc = bundle / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (etc / "hostname").write_text("x\n")
    cid = "specgen-" + secrets.token_hex(6)
    args: dict = {"id": cid, "config": merged, "host": host, "image_config": IMAGE,
                  "cgroup_parent": "/", "init_path": "/usr/bin/tini-static",
                  "user": sg.resolve_user(str(bundle / "rootfs"), merged.get("User") or "",
                                          host.get("GroupAdd")),
                  "etc_files": {f"/etc/{n}": str(etc / n) for n in ("hosts", "resolv.conf",
                                                                   "hostname")}}
    args.update(kw)
    spec = sg.build_spec(sg.SpecInput(**args))
    validate_config(spec)
    (bundle / "config.json").write_text(json.dumps(spec))
    rt.track(cid)
    res = rt("run", "--bundle", str(bundle), cid, check=False)
    return res.returncode, res.stdout + res.stderr


def status(out: str, key: str) -> str:
    for line in out.splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {key} in {out!r}")


def test_typical_run(rt: Runtime, busybox_bundle) -> None:
    """``docker run --rm -it -m 64m --cap-drop ALL --read-only --tmpfs /tmp busybox``."""
    cfg, host = typical_body()
    rc, out = run(rt, busybox_bundle, cfg, host, (
        "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; "
        "echo tmpfs=$(awk '$2==\"/tmp\"{print $3}' /proc/mounts); "
        "touch /tmp/ok && echo tmp-writable; touch /x 2>/dev/null || echo root-readonly; "
        "echo limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); "
        "echo hostname=$(hostname); echo pid=$$"))
    assert rc == 0, out
    assert status(out, "CapEff") == "0000000000000000"
    assert status(out, "Seccomp") == "2"
    assert "tmpfs=tmpfs" in out and "tmp-writable" in out and "root-readonly" in out
    assert "limit=67108864" in out
    assert "pid=1" in out


def test_default_run(rt: Runtime, busybox_bundle) -> None:
    cfg, host = cli_body()
    rc, out = run(rt, busybox_bundle, cfg, host, (
        "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; "
        "[ ! -s /proc/kcore ] && echo kcore-masked; "
        "echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo proc-sys-readonly; "
        "echo shm=$(awk '$2==\"/dev/shm\"{print $4}' /proc/mounts); "
        "cat /etc/resolv.conf; echo ping=$(cat /proc/sys/net/ipv4/ping_group_range)"))
    assert rc == 0, out
    assert status(out, "CapEff") == "00000000a80425fb"
    assert status(out, "Seccomp") == "2"
    assert status(out, "NoNewPrivs") == "0"
    assert "kcore-masked" in out and "proc-sys-readonly" in out
    assert "size=65536k" in out  # 64 MiB /dev/shm
    assert "nameserver 127.0.0.1" in out
    assert "ping=0 2147483647" in out.replace("\t", " ")


def test_privileged_init_user_binds(rt: Runtime, busybox_bundle, tmp_path) -> None:
    src = tmp_path / "bind"
    src.mkdir()
    (src / "f").write_text("bound\n")
    cfg, host = cli_body({"User": "1000:1000"}, Privileged=True, Init=True,
                         Binds=[f"{src}:/b:ro"], SecurityOpt=["no-new-privileges"],
                         Ulimits=[{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
                         Devices=[{"PathOnHost": "/dev/null", "PathInContainer": "/dev/xnull",
                                   "CgroupPermissions": "rwm"}], NetworkMode="none")
    with open("/proc/self/status") as f:
        host_bnd = status(f.read(), "CapBnd")
    rc, out = run(rt, busybox_bundle, cfg, host, (
        "grep -E '^(CapBnd|Seccomp|NoNewPrivs):' /proc/self/status; echo id=$(id -u):$(id -g); "
        "echo init=$(tr '\\0' ' ' < /proc/1/cmdline); cat /b/f; touch /b/g 2>/dev/null || "
        "echo bind-readonly; echo nofile=$(ulimit -n); [ -c /dev/xnull ] && echo device; "
        "echo links=$(ip -o link | wc -l)"))
    assert rc == 0, out
    assert status(out, "CapBnd") == host_bnd
    assert status(out, "Seccomp") == "0" and status(out, "NoNewPrivs") == "1"
    assert "id=1000:1000" in out
    assert "init=/sbin/docker-init -- sh -c" in out
    assert "bound" in out and "bind-readonly" in out
    assert "nofile=1024" in out and "device" in out and "links=1" in out


def test_resources_apply(rt: Runtime, busybox_bundle) -> None:
    cfg, host = cli_body(NanoCpus=1500000000, PidsLimit=8, CpuShares=512, ShmSize=32 << 20,
                         Sysctls={"kernel.shmmax": "1000000"}, OomScoreAdj=300)
    rc, out = run(rt, busybox_bundle, cfg, host, (
        "echo quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us); "
        "echo pids=$(cat /sys/fs/cgroup/pids/pids.max); "
        "echo shares=$(cat /sys/fs/cgroup/cpu/cpu.shares); "
        "echo shmmax=$(cat /proc/sys/kernel/shmmax); echo oom=$(cat /proc/self/oom_score_adj); "
        "echo shm=$(awk '$2==\"/dev/shm\"{print $4}' /proc/mounts)"))
    assert rc == 0, out
    for want in ("quota=150000", "pids=8", "shares=512", "shmmax=1000000", "oom=300",
                 "size=32768k"):
        assert want in out, (want, out)
