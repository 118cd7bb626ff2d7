"""skiff-runc applies config.json, seen from inside real containers (through the CLI): rlimits,
oomScoreAdj, sysctl, hostname/domainname, seccomp, noNewPrivileges, capabilities, masked and
read-only paths, linux.devices, memory limits that OOM-kill, namespaces joined by path."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
import uuid

import pytest
from runtime_util import RUNTIME, make_bundle, write_config

from skiff.oci.seccomp_default import DEFAULT_CAPS, docker_default_profile, native_arch

pytestmark = pytest.mark.root

CAP_BITS = {"CAP_CHOWN": 0, "CAP_KILL": 5, "CAP_SETUID": 7, "CAP_NET_RAW": 13}


def run_config(runtime, tmp_path, script: str, edit=None, *, check: bool = True,
               cid: str = "c-cfg") -> subprocess.CompletedProcess:
    """``run`` a busybox bundle (writable rootfs) executing ``sh -c script``; ``edit(config)``
    changes the config first."""
    bundle = str(tmp_path / cid)
    cfg = make_bundle(bundle, ["sh", "-c", script])
    cfg["root"]["readonly"] = False
    if edit is not None:
        edit(cfg)
    write_config(bundle, cfg)
    return runtime("run", "--bundle", bundle, cid, check=check)


def status_fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out


def mask(*names: str) -> str:
    return f"{sum(1 << CAP_BITS[n] for n in names):016x}"


# --- process -------------------------------------------------------------------------------

def test_rlimits_inside(runtime, tmp_path):
    def edit(cfg):
        cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
                                     {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]

    out = run_config(runtime, tmp_path, "ulimit -n; ulimit -Hn; grep -E '^Max (open files|core)' /proc/self/limits",
                     edit).stdout.splitlines()
    assert out[:2] == ["100", "200"]
    assert out[2].split()[-3:] == ["0", "0", "bytes"]
    assert out[3].split()[-3:] == ["100", "200", "files"]


def test_rlimit_above_the_hard_limit_fails_clearly(runtime, tmp_path):
    # the runtime inherits this process's limits; root here lacks CAP_SYS_RESOURCE
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard != resource.RLIM_INFINITY

    def edit(cfg):
        cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": hard + 1}]

    p = run_config(runtime, tmp_path, "true", edit, check=False, cid="c-rlim")
    assert p.returncode == 1
    assert (f"process.rlimits RLIMIT_NOFILE: cannot set soft 1024 hard {hard + 1}: "
            "Operation not permitted (raising a hard limit needs CAP_SYS_RESOURCE)") in p.stderr
    assert not os.path.exists(os.path.join(runtime.root, "c-rlim"))


def test_oom_score_adj(runtime, tmp_path):
    def edit(cfg):
        cfg["process"]["oomScoreAdj"] = 500

    assert run_config(runtime, tmp_path, "cat /proc/self/oom_score_adj", edit).stdout == "500\n"


def test_sysctl_in_the_containers_own_namespaces(runtime, tmp_path):
    host = {k: open(f"/proc/sys/{k}").read() for k in ("net/ipv4/ip_forward", "kernel/shmmax")}
    want_fwd = "0" if host["net/ipv4/ip_forward"].strip() == "1" else "1"

    def edit(cfg):
        cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": want_fwd, "kernel.shmmax": "123456789"}

    out = run_config(runtime, tmp_path, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax",
                     edit).stdout.split()
    assert out == [want_fwd, "123456789"]
    assert {k: open(f"/proc/sys/{k}").read() for k in host} == host  # the host's are untouched

    def bad(cfg):
        cfg["linux"]["sysctl"] = {"net.ipv4.no_such_knob": "1"}

    p = run_config(runtime, tmp_path, "true", bad, check=False, cid="c-sysctl-bad")
    assert p.returncode == 1
    assert "linux.sysctl net.ipv4.no_such_knob" in p.stderr and "/proc/sys/net/ipv4/no_such_knob" in p.stderr


def test_hostname_and_domainname(runtime, tmp_path):
    host = os.uname().nodename

    def edit(cfg):
        cfg["hostname"] = "box-one"
        cfg["domainname"] = "example.test"

    out = run_config(runtime, tmp_path, "hostname; uname -n; cat /proc/sys/kernel/domainname",
                     edit).stdout.split()
    assert out == ["box-one", "box-one", "example.test"]
    assert os.uname().nodename == host


# --- security --------------------------------------------------------------------------------

MKDIR_ERRNO = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}


@pytest.mark.parametrize("nnp", [True, False])
def test_seccomp_errno_on_mkdir(runtime, tmp_path, nnp):
    def edit(cfg):
        cfg["linux"]["seccomp"] = MKDIR_ERRNO
        cfg["process"]["noNewPrivileges"] = nnp

    out = run_config(runtime, tmp_path, "mkdir /tmp/d 2>&1; [ -d /tmp/d ] || echo no-dir; touch /tmp/f && echo touched; "
                     "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status", edit).stdout
    lines = out.splitlines()
    assert "Permission denied" in lines[0]  # errnoRet 13 is EACCES
    assert lines[1:3] == ["no-dir", "touched"]
    st = status_fields("\n".join(lines[3:]))
    assert st == {"NoNewPrivs": "1" if nnp else "0", "Seccomp": "2"}


def test_docker_default_seccomp_profile_runs_busybox(runtime, tmp_path):
    caps = sorted(DEFAULT_CAPS)

    def edit(cfg):
        cfg["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
        cfg["process"]["noNewPrivileges"] = False  # as Docker runs containers by default
        cfg["linux"]["seccomp"] = docker_default_profile(DEFAULT_CAPS, native_arch())

    script = ("ls / > /dev/null && id -u && date +%Y > /dev/null && mkdir /tmp/d && echo hi > /tmp/d/f && "
              "cat /tmp/d/f && rm -r /tmp/d && ps -o pid,comm | grep -q '^ *1 sh' && chown 1:1 /tmp && "
              "grep Seccomp: /proc/self/status && echo ok; unshare -u true 2>&1 || echo unshare-refused")
    out = run_config(runtime, tmp_path, script, edit).stdout.splitlines()
    assert out[:2] == ["0", "hi"]
    assert out[2].split() == ["Seccomp:", "2"]
    assert out[3] == "ok"
    assert "Operation not permitted" in out[4] and out[5] == "unshare-refused"


def test_no_new_privileges(runtime, tmp_path):
    for nnp in (True, False):
        def edit(cfg, nnp=nnp):
            cfg["process"]["noNewPrivileges"] = nnp

        out = run_config(runtime, tmp_path, "grep NoNewPrivs: /proc/self/status", edit,
                         cid=f"c-nnp-{int(nnp)}").stdout
        assert out.split() == ["NoNewPrivs:", "1" if nnp else "0"]


def test_capability_sets_of_a_non_root_process(runtime, tmp_path):
    def edit(cfg):
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
        cfg["process"]["capabilities"] = {
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"],
            "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
            "inheritable": ["CAP_CHOWN", "CAP_KILL"],
            "effective": ["CAP_KILL"],
            "ambient": ["CAP_CHOWN", "CAP_KILL"],
        }

    out = run_config(runtime, tmp_path, "grep ^Cap /proc/self/status; touch /tmp/f; "
                     "chown 0:0 /tmp/f && stat -c %u /tmp/f", edit).stdout
    st = status_fields(out)
    # exec as non-root: permitted and effective become the ambient set; the others stay
    assert st == {"CapInh": mask("CAP_CHOWN", "CAP_KILL"), "CapPrm": mask("CAP_CHOWN", "CAP_KILL"),
                  "CapEff": mask("CAP_CHOWN", "CAP_KILL"),
                  "CapBnd": mask("CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"),
                  "CapAmb": mask("CAP_CHOWN", "CAP_KILL")}
    assert out.splitlines()[-1] == "0"  # CAP_CHOWN (ambient) works


@pytest.mark.parametrize("nnp", [True, False])
def test_capability_sets_of_root(runtime, tmp_path, nnp):
    def edit(cfg):
        cfg["process"]["noNewPrivileges"] = nnp
        cfg["process"]["capabilities"] = {"bounding": ["CAP_KILL", "CAP_SETUID"],
                                          "permitted": ["CAP_KILL"], "effective": ["CAP_KILL"]}

    out = run_config(runtime, tmp_path, "grep ^Cap /proc/self/status; chown 1 /tmp 2>&1; true", edit).stdout
    st = status_fields(out)
    assert st["CapBnd"] == mask("CAP_KILL", "CAP_SETUID")
    if nnp:  # no_new_privs: exec cannot add to the permitted set
        assert st["CapPrm"] == st["CapEff"] == mask("CAP_KILL")
    else:  # exec as root: permitted and effective become the bounding set (the kernel's rule for uid 0)
        assert st["CapPrm"] == st["CapEff"] == mask("CAP_KILL", "CAP_SETUID")
    assert st["CapInh"] == st["CapAmb"] == "0" * 16
    assert "Operation not permitted" in out.splitlines()[-1]  # no CAP_CHOWN


def test_masked_and_readonly_paths(runtime, tmp_path):
    def edit(cfg):
        root = os.path.join(str(tmp_path / "c-cfg"), "rootfs")
        os.makedirs(f"{root}/etc/secret-dir")
        with open(f"{root}/etc/secret-dir/key", "w") as f:
            f.write("dir secret")
        with open(f"{root}/etc/secret-file", "w") as f:
            f.write("file secret")
        os.makedirs(f"{root}/data")
        cfg["linux"]["maskedPaths"] = ["/etc/secret-dir", "/etc/secret-file", "/no/such/path"]
        cfg["linux"]["readonlyPaths"] = ["/data", "/no/such/dir"]

    out = run_config(runtime, tmp_path,
                     "ls -A /etc/secret-dir | wc -l; echo x > /etc/secret-file; wc -c < /etc/secret-file; "
                     "touch /data/x 2>&1; touch /tmp/x && echo tmp-writable; "
                     "grep -E ' /(data|etc/secret-dir|etc/secret-file) ' /proc/self/mountinfo | cut -d' ' -f5,6",
                     edit).stdout.splitlines()
    assert out[0] == "0"
    assert out[1] == "0"  # the masked file is /dev/null: what is written there is gone
    assert "Read-only file system" in out[2]
    assert out[3] == "tmp-writable"
    mounts = dict(line.split() for line in out[4:])
    assert set(mounts) == {"/data", "/etc/secret-dir", "/etc/secret-file"}
    # as runc: a masked directory is a read-only tmpfs, a masked file a bind of /dev/null
    assert "ro" in mounts["/data"].split(",") and "ro" in mounts["/etc/secret-dir"].split(",")
    assert "rw" in mounts["/etc/secret-file"].split(",")


def test_linux_devices_are_created_and_allowed_by_the_resources_rules(runtime, tmp_path):
    bundle = str(tmp_path / "c-dev")
    cfg = make_bundle(bundle, ["sleep", "300"])
    cfg["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                "fileMode": 0o660, "uid": 1000, "gid": 0}]
    write_config(bundle, cfg)
    cid = runtime.track("c-dev")
    runtime("run", "-d", "--bundle", bundle, cid)
    probe = "stat -c '%F %t:%T %a %u:%g' /dev/fuse; exec 3<>/dev/fuse && echo opened"
    # as runc: linux.devices makes the node; access is what linux.resources.devices allows
    # (here: the default config's "deny all" and runc's default rules, which lack 10:229)
    p = runtime("exec", cid, "sh", "-c", probe, check=False)
    assert p.stdout.splitlines() == ["character special file a:e5 660 1000:0"]
    assert "Operation not permitted" in p.stderr
    with open(os.path.join(runtime.root, cid, "state.json")) as f:
        devices = json.load(f)["cgroup"]["paths"]["devices"]
    with open(os.path.join(devices, "devices.list")) as f:
        assert not [r for r in f.read().splitlines() if r.startswith("c 10:229")]
    runtime("delete", "--force", cid)

    cfg["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 10, "minor": 229,
                                                 "access": "rw"})
    write_config(bundle, cfg)
    runtime("run", "-d", "--bundle", bundle, cid)
    out = runtime("exec", cid, "sh", "-c", probe).stdout.splitlines()
    # (root opens it through its group: it has no CAP_DAC_OVERRIDE here)
    assert out == ["character special file a:e5 660 1000:0", "opened"]
    with open(os.path.join(devices, "devices.list")) as f:
        assert "c 10:229 rw" in f.read().splitlines()
    runtime("delete", "--force", cid)


# --- resources ---------------------------------------------------------------------------------

def test_memory_limit_oom_kills_and_is_reported(runtime, tmp_path, request_cleanup):
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["sleep", "300"])
    cfg["linux"]["resources"]["memory"] = {"limit": 16 << 20}
    write_config(bundle, cfg)
    cid = runtime.track("c-oom")
    runtime("run", "-d", "--bundle", bundle, cid)
    with open(os.path.join(runtime.root, cid, "state.json")) as f:
        mem = json.load(f)["cgroup"]["paths"]["memory"]
    log = open(tmp_path / "events.log", "w+")
    request_cleanup.append(log.close)
    ev = subprocess.Popen([RUNTIME, "--root", runtime.root, "events", "--interval", "100ms", cid],
                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop_events() -> None:
        if ev.poll() is None:
            os.kill(ev.pid, signal.SIGTERM)
        ev.wait(10)

    request_cleanup.append(stop_events)
    time.sleep(0.5)  # events has read the OOM count it starts from
    # dd's 64 MiB buffer, filled from /dev/zero, cannot fit in 16 MiB: the kernel kills it
    p = runtime("exec", cid, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1", check=False)
    assert p.returncode == 137
    with open(os.path.join(mem, "memory.oom_control")) as f:
        assert status_fields(f.read().replace(" ", ":"))["oom_kill"] == "1"
    deadline = time.monotonic() + 10
    while True:
        log.seek(0)
        events = [json.loads(line) for line in log.read().splitlines() if line.startswith("{")]
        if any(e["type"] == "oom" for e in events):
            break
        assert time.monotonic() < deadline, f"no oom event; got {events}"
        time.sleep(0.1)
    assert [e for e in events if e["type"] == "oom"] == [{"type": "oom", "id": cid}]
    assert any(e["type"] == "stats" for e in events)
    stats = json.loads(runtime("events", "--stats", cid).stdout)["data"]
    assert stats["memory"]["usage"]["failcnt"] > 0
    assert runtime.state(cid)["status"] == "running"  # only the exec'd process was killed
    runtime("delete", "--force", cid)
    assert ev.wait(10) == 0  # events ends when the container does
    # the container's own process OOM-killed: run returns 128+SIGKILL
    cfg["process"]["args"] = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    write_config(bundle, cfg)
    assert runtime("run", "--bundle", bundle, "c-oom2", check=False).returncode == 137


# --- namespaces ----------------------------------------------------------------------------------

def test_a_new_network_namespace_has_its_loopback_up(runtime, tmp_path):
    # as runc: lo is brought up in a network namespace the runtime creates; a TCP connection
    # over 127.0.0.1 works inside
    out = run_config(runtime, tmp_path, "ip -o link show lo; ip -o -4 addr show lo | tr -s ' ' | cut -d' ' -f4; "
                     "(nc -l -p 5555 > /tmp/got &); "
                     "for i in $(seq 50); do echo over-lo | nc -w 2 127.0.0.1 5555 2>/dev/null && break; sleep 0.1; done; "
                     "for i in $(seq 50); do [ -s /tmp/got ] && break; sleep 0.1; done; cat /tmp/got").stdout.splitlines()
    assert ",UP," in out[0] or ",UP>" in out[0]
    assert out[1:] == ["127.0.0.1/8", "over-lo"]


def _net_ns_id(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def test_network_namespace_joined_by_path_of_another_container(runtime, tmp_path):
    bundle_a = str(tmp_path / "a")
    make_bundle(bundle_a, ["sleep", "300"])
    a = runtime.track("c-ns-a")
    runtime("run", "-d", "--bundle", bundle_a, a)
    apid = runtime.state(a)["pid"]
    # a link only A's network namespace has (it goes away with the namespace)
    subprocess.run(["nsenter", f"--net=/proc/{apid}/ns/net", "ip", "link", "add", "skbr0",
                    "type", "bridge"], check=True)
    bundle_b = str(tmp_path / "b")
    cfg = make_bundle(bundle_b, ["sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/uts; "
                                 "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | sort"])
    cfg["linux"]["namespaces"] = [ns if ns["type"] != "network" else
                                  {"type": "network", "path": f"/proc/{apid}/ns/net"}
                                  for ns in cfg["linux"]["namespaces"]]
    write_config(bundle_b, cfg)
    out = runtime("run", "--bundle", bundle_b, "c-ns-b").stdout.splitlines()
    assert out[0] == _net_ns_id(apid) != _net_ns_id(os.getpid())
    assert out[1] != os.readlink(f"/proc/{apid}/ns/uts")  # only the network namespace is shared
    assert out[2:] == ["lo", "skbr0"]
    runtime("delete", "--force", a)


def test_network_namespace_made_with_ip_netns(runtime, tmp_path, request_cleanup):
    name = f"skiff-t-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    request_cleanup.append(lambda: subprocess.run(["ip", "netns", "delete", name], check=True))
    subprocess.run(["ip", "-n", name, "link", "add", "skbr1", "type", "bridge"], check=True)
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["sh", "-c", "stat -L -c %i /proc/self/ns/net; "
                               "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | sort"])
    cfg["linux"]["namespaces"] = [ns if ns["type"] != "network" else
                                  {"type": "network", "path": f"/run/netns/{name}"}
                                  for ns in cfg["linux"]["namespaces"]]
    write_config(bundle, cfg)
    out = runtime("run", "--bundle", bundle, "c-netns").stdout.splitlines()
    assert int(out[0]) == os.stat(f"/run/netns/{name}").st_ino
    assert out[1:] == ["lo", "skbr1"]
    # a path that is not there fails clearly, before anything is created
    cfg["linux"]["namespaces"] = [ns if ns["type"] != "network" else
                                  {"type": "network", "path": "/run/netns/skiff-no-such-ns"}
                                  for ns in cfg["linux"]["namespaces"]]
    write_config(bundle, cfg)
    p = runtime("run", "--bundle", bundle, "c-netns2", check=False)
    assert p.returncode == 1
    assert "/run/netns/skiff-no-such-ns" in p.stderr and "network" in p.stderr
    assert not os.path.exists(os.path.join(runtime.root, "c-netns2"))
