"""skiff.daemon.specgen: Docker create bodies -> OCI runtime specs, and their validation.

The create bodies below are what the docker CLI 28.2.2 sent (captured on a logging socket):
``docker run --rm -it -m 64m --cap-drop ALL --read-only --tmpfs /tmp busybox sh`` and
``docker run --rm busybox echo hi``. Every generated spec is checked against the OCI schema.
"""

from __future__ import annotations

import copy
import json
import os
import signal

import pytest

from skiff.daemon import specgen as sg
from skiff.daemon.api.errors import InvalidParameter
from skiff.oci.validate import validate_config
from skiff.runtime.caps import NAMES

CID = "4f" * 32
SHORT = CID[:12]
IMAGE = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
         "Cmd": ["sh"]}
# this machine's bounding set lacks CAP_SYS_RESOURCE: so does the fake host's
HOST_CAPS = [c for c in NAMES if c != "CAP_SYS_RESOURCE"]
ETC = {"/etc/hosts": "/d/c/hosts", "/etc/resolv.conf": "/d/c/resolv.conf",
       "/etc/hostname": "/d/c/hostname"}

_HC_DEFAULTS = json.loads("""{"Binds":null,"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},
"NetworkMode":"default","PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},
"AutoRemove":true,"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"CapAdd":null,
"CapDrop":null,"CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,
"GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"",
"Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,
"UTSMode":"","UsernsMode":"","ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,
"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":[],
"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],"BlkioDeviceWriteIOps":[],"CpuPeriod":0,
"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"",
"Devices":[],"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,
"MemorySwap":0,"MemorySwappiness":-1,"OomKillDisable":false,"PidsLimit":0,"Ulimits":[],
"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"MaskedPaths":null,
"ReadonlyPaths":null}""")
_CFG_DEFAULTS = json.loads("""{"Hostname":"","Domainname":"","User":"","AttachStdin":false,
"AttachStdout":true,"AttachStderr":true,"Tty":false,"OpenStdin":false,"StdinOnce":false,
"Env":null,"Cmd":["echo","hi"],"Image":"busybox","Volumes":{},"WorkingDir":"",
"Entrypoint":null,"OnBuild":null,"Labels":{}}""")


def cli_body(cfg: dict | None = None, **host: object) -> tuple[dict, dict]:
    """(Config, HostConfig) as the CLI sends them for ``docker run --rm busybox echo hi``,
    with changes."""
    c = copy.deepcopy(_CFG_DEFAULTS)
    c.update(cfg or {})
    h = copy.deepcopy(_HC_DEFAULTS)
    h.update(host)
    return c, h


def typical_body() -> tuple[dict, dict]:
    """``docker run --rm -it -m 64m --cap-drop ALL --read-only --tmpfs /tmp busybox sh``."""
    return cli_body({"AttachStdin": True, "Tty": True, "OpenStdin": True, "StdinOnce": True,
                     "Cmd": ["sh"]},
                    CapDrop=["ALL"], ReadonlyRootfs=True, Tmpfs={"/tmp": ""}, Memory=67108864)


class FakeDevices:
    """devices_at / host_devices without device nodes (unit tests cannot mknod)."""

    def __init__(self) -> None:
        self.nodes = {"/dev/fuse": ("c", 10, 229), "/dev/sda": ("b", 8, 0)}
        self.dirs = {"/dev/snd": [("controlC0", "c", 116, 2), ("pcm/p0", "c", 116, 3)]}

    @staticmethod
    def _dev(path: str, t: str, ma: int, mi: int) -> dict:
        return {"path": path, "type": t, "major": ma, "minor": mi, "fileMode": 0o660,
                "uid": 0, "gid": 0}

    def devices_at(self, path: str) -> list[dict]:
        if path in self.nodes:
            return [self._dev("", *self.nodes[path])]
        if path in self.dirs:
            return [self._dev(rel, t, ma, mi) for rel, t, ma, mi in self.dirs[path]]
        if path == "/etc":
            return []
        raise FileNotFoundError(2, "No such file or directory", path)

    def host_devices(self) -> list[dict]:
        return [self._dev("/dev/null", "c", 1, 3), self._dev("/dev/sda", "b", 8, 0)]


def make_si(**kw: object) -> sg.SysInfo:
    fd = FakeDevices()
    args: dict = {"caps": list(HOST_CAPS), "cgroup_unified": False, "swap_limit": True,
                  "blkio_weight": True, "ncpus": 2, "arch": "amd64", "kernel": "6.1.0",
                  "devices_at": fd.devices_at, "host_devices": fd.host_devices,
                  "path_exists": lambda p: p in ("/srv", "/srv/data", "/tmp")}
    args.update(kw)
    return sg.SysInfo(**args)


SI = make_si()


def build(cfg: dict, host: dict, si: sg.SysInfo = SI, image: dict | None = None,
          **kw: object) -> dict:
    """validate_create + merge_config + build_spec, as skiffd does; the spec is schema-checked."""
    sg.validate_create(cfg, host, si=si)
    merged = sg.merge_config(cfg, IMAGE if image is None else image)
    args: dict = {"id": CID, "config": merged, "host": host, "image_config": IMAGE,
                  "etc_files": dict(ETC), "sysinfo": si}
    args.update(kw)
    spec = sg.build_spec(sg.SpecInput(**args))
    validate_config(spec)
    json.dumps(spec)  # JSON-able
    return spec


def mount(spec: dict, dest: str) -> dict:
    found = [m for m in spec["mounts"] if m["destination"] == dest]
    assert len(found) == 1, (dest, found)
    return found[0]


def allowed_syscalls(spec: dict) -> set[str]:
    return {n for c in spec["linux"]["seccomp"]["syscalls"] if c["action"] == "SCMP_ACT_ALLOW"
            and not c.get("args") for n in c["names"]}


DEFAULT_DEVICE_RULES = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
    {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
]
DEFAULT_MOUNTS = ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue",
                  "/dev/shm"]


# --- the two reference bodies, field by field ------------------------------------------------

def test_typical_run_body_field_by_field() -> None:
    cfg, host = typical_body()
    assert sg.validate_create(cfg, host, si=SI) == []
    spec = build(cfg, host)
    assert spec["ociVersion"] == "1.0.2-dev"
    p = spec["process"]
    assert p["terminal"] is True
    assert "consoleSize" not in p  # the CLI sent [0, 0]
    assert p["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert p["args"] == ["sh"]
    assert p["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        f"HOSTNAME={SHORT}", "TERM=xterm"]
    assert p["cwd"] == "/"
    assert p["capabilities"] == {"bounding": [], "effective": [], "permitted": []}
    assert "rlimits" not in p and "noNewPrivileges" not in p
    assert p["oomScoreAdj"] == 0
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert spec["hostname"] == SHORT
    assert [m["destination"] for m in spec["mounts"]] == [
        *DEFAULT_MOUNTS, "/tmp", "/etc/resolv.conf", "/etc/hostname", "/etc/hosts"]
    # read-only rootfs: /sys, /sys/fs/cgroup were ro already; /proc, /dev* stay writable
    assert mount(spec, "/proc")["options"] == ["nosuid", "noexec", "nodev"]
    assert mount(spec, "/sys")["options"] == ["nosuid", "noexec", "nodev", "ro"]
    assert mount(spec, "/dev/shm")["options"] == ["nosuid", "noexec", "nodev", "mode=1777",
                                                  "size=67108864"]
    assert mount(spec, "/tmp") == {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                   "options": ["noexec", "nosuid", "nodev", "rprivate"]}
    assert mount(spec, "/etc/hosts") == {"destination": "/etc/hosts", "type": "bind",
                                         "source": "/d/c/hosts",
                                         "options": ["rbind", "ro", "rprivate"]}
    lx = spec["linux"]
    assert lx["resources"] == {
        "devices": DEFAULT_DEVICE_RULES,
        "memory": {"limit": 67108864, "swap": 134217728, "disableOOMKiller": False}}
    assert lx["cgroupsPath"] == f"/skiff/{CID}"
    assert lx["sysctl"] == {"net.ipv4.ping_group_range": "0 2147483647",
                            "net.ipv4.ip_unprivileged_port_start": "0"}
    assert lx["namespaces"] == [{"type": t} for t in ("mount", "network", "uts", "pid", "ipc")]
    assert "devices" not in lx
    assert lx["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert lx["seccomp"]["architectures"][0] == "SCMP_ARCH_X86_64"
    # no capability at all: the cap-dependent groups are out
    assert "chroot" not in allowed_syscalls(spec) and "read" in allowed_syscalls(spec)
    assert lx["maskedPaths"] == list(sg.MASKED_PATHS)
    assert lx["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                   "/proc/sysrq-trigger"]
    assert "annotations" not in spec and "hooks" not in spec


def test_default_run_body() -> None:
    cfg, host = cli_body()
    spec = build(cfg, host)
    p = spec["process"]
    assert p["terminal"] is False
    assert p["args"] == ["echo", "hi"]
    assert p["env"][1] == f"HOSTNAME={SHORT}" and len(p["env"]) == 2
    assert p["capabilities"]["bounding"] == list(sg.DEFAULT_CAPS)
    assert p["capabilities"]["effective"] == p["capabilities"]["permitted"] == list(sg.DEFAULT_CAPS)
    assert spec["root"] == {"path": "rootfs", "readonly": False}
    assert mount(spec, "/etc/hosts")["options"] == ["rbind", "rprivate"]
    assert spec["linux"]["resources"] == {"devices": DEFAULT_DEVICE_RULES,
                                          "memory": {"disableOOMKiller": False}}
    assert "chroot" in allowed_syscalls(spec)  # CAP_SYS_CHROOT is a default cap
    assert "mount" not in allowed_syscalls(spec)


def test_docker_py_minimal_body() -> None:
    """docker-py sends only what the user set."""
    cfg: dict = {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "default"}}
    host = cfg.pop("HostConfig")
    spec = build(cfg, host)
    assert spec["process"]["args"] == ["true"]
    assert spec["linux"]["namespaces"][1] == {"type": "network"}


def test_dockerd_20_10_differences_are_only_the_documented_ones() -> None:
    """What a private dockerd 20.10 wrote for the typical body (config.json of its bundle),
    compared with ours; the differences are the ones this module chooses."""
    cfg, host = typical_body()
    cfg.update({"Tty": False, "Cmd": ["sleep", "30"]})
    spec = build(cfg, host)
    dockerd: dict = {
        "process": {"user": {"uid": 0, "gid": 0, "additionalGids": [0]},
                    "args": ["sleep", "30"], "cwd": "/", "oomScoreAdj": 0},
        "mounts": ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue",
                   "/dev/shm", "/tmp", "/etc/resolv.conf", "/etc/hostname", "/etc/hosts"],
        "memory": {"limit": 67108864, "swap": 134217728, "disableOOMKiller": False},
        "namespaces": [{"type": "mount"}, {"type": "network"}, {"type": "uts"},
                       {"type": "pid"}, {"type": "ipc"}],
        # dockerd 20.10's list; newer moby (and this module) add /proc/interrupts and
        # /sys/devices/virtual/powercap (GHSA-6fw5-f8r9-fgfm, GHSA-jq35-85cj-fj4p)
        "masked": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                   "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                   "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
    }
    for k, v in dockerd["process"].items():
        assert spec["process"][k] == v, k
    assert [m["destination"] for m in spec["mounts"]] == dockerd["mounts"]
    assert spec["linux"]["resources"]["memory"] == dockerd["memory"]
    assert spec["linux"]["namespaces"] == dockerd["namespaces"]
    assert [p for p in spec["linux"]["maskedPaths"] if p in dockerd["masked"]] == dockerd["masked"]
    assert set(spec["linux"]["maskedPaths"]) - set(dockerd["masked"]) == {
        "/proc/interrupts", "/sys/devices/virtual/powercap"}


# --- command, env, user, workdir --------------------------------------------------------------

@pytest.mark.parametrize("cfg, image, args", [
    ({"Cmd": None, "Entrypoint": None}, {"Cmd": ["sh"]}, ["sh"]),
    ({"Cmd": ["echo", "x"], "Entrypoint": None}, {"Cmd": ["sh"]}, ["echo", "x"]),
    ({"Cmd": None, "Entrypoint": None}, {"Entrypoint": ["/init"], "Cmd": ["-v"]}, ["/init", "-v"]),
    ({"Cmd": ["a"], "Entrypoint": None}, {"Entrypoint": ["/init"], "Cmd": ["-v"]}, ["/init", "a"]),
    ({"Cmd": None, "Entrypoint": ["echo"]}, {"Entrypoint": ["/init"], "Cmd": ["-v"]}, ["echo"]),
    ({"Cmd": ["x", "y"], "Entrypoint": ["echo"]}, {"Cmd": ["sh"]}, ["echo", "x", "y"]),
    # --entrypoint "": the image's entrypoint goes, and so does its Cmd
    ({"Cmd": ["echo", "hi"], "Entrypoint": [""]}, {"Entrypoint": ["/init"], "Cmd": ["-v"]},
     ["echo", "hi"]),
    # Entrypoint [] (not null): no image entrypoint, image Cmd kept
    ({"Cmd": None, "Entrypoint": []}, {"Entrypoint": ["/init"], "Cmd": ["-v"]}, ["-v"]),
    ({"Cmd": "ls -l", "Entrypoint": None}, {}, ["ls -l"]),
])
def test_merged_command(cfg: dict, image: dict, args: list[str]) -> None:
    assert sg.merged_command(cfg, image) == (args, "")


@pytest.mark.parametrize("cfg, image", [
    ({"Cmd": None, "Entrypoint": [""]}, {"Entrypoint": ["/init"], "Cmd": ["-v"]}),
    ({"Cmd": None, "Entrypoint": None}, {}),
    ({"Cmd": [], "Entrypoint": []}, {"Cmd": []}),
])
def test_no_command(cfg: dict, image: dict) -> None:
    assert sg.merged_command(cfg, image) == ([], "no command specified")
    with pytest.raises(InvalidParameter, match="no command specified"):
        sg.merge_config(cfg, image)


def test_merge_config_fields() -> None:
    img = {"User": "daemon", "Env": ["PATH=/img", "A=img", "B=img"], "Labels": {"l": "img", "m": "img"},
           "WorkingDir": "/w", "StopSignal": "SIGQUIT", "ExposedPorts": {"80/tcp": {}},
           "Volumes": {"/v": {}}, "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5}}
    c = sg.merge_config({"Env": ["A=me"], "Labels": {"l": "me"}, "Cmd": ["x"],
                         "Healthcheck": {"Retries": 3}}, img)
    assert c["User"] == "daemon" and c["WorkingDir"] == "/w" and c["StopSignal"] == "SIGQUIT"
    assert c["Env"] == ["A=me", "PATH=/img", "B=img"]
    assert c["Labels"] == {"l": "me", "m": "img"}
    assert c["ExposedPorts"] == {"80/tcp": {}} and c["Volumes"] == {"/v": {}}
    assert c["Healthcheck"] == {"Retries": 3, "Test": ["CMD", "true"], "Interval": 5}
    assert c["Entrypoint"] is None and c["Cmd"] == ["x"]


def test_env_order_override_and_unset() -> None:
    cfg, host = cli_body({"Env": ["FOO=bar", "HOSTNAME=mine", "PATH"], "Tty": True})
    spec = build(cfg, host, image={"Env": ["PATH=/x", "TERM=vt100"], "Cmd": ["sh"]})
    # the image's PATH is a plain Env entry after merging; "PATH" (no =) unsets it
    assert spec["process"]["env"] == ["HOSTNAME=mine", "TERM=vt100", "FOO=bar"]


def test_hostname_domainname_workdir() -> None:
    cfg, host = cli_body({"Hostname": "box1", "Domainname": "example.org", "WorkingDir": "/tmp"})
    spec = build(cfg, host)
    assert spec["hostname"] == "box1" and spec["domainname"] == "example.org"
    assert spec["process"]["cwd"] == "/tmp"
    assert "HOSTNAME=box1" in spec["process"]["env"]


def test_console_size_with_tty() -> None:
    cfg, host = cli_body({"Tty": True}, ConsoleSize=[30, 100])
    assert build(cfg, host)["process"]["consoleSize"] == {"height": 30, "width": 100}
    cfg, host = cli_body({"Tty": False}, ConsoleSize=[30, 100])
    assert "consoleSize" not in build(cfg, host)["process"]


def test_numeric_user_and_group_add() -> None:
    cfg, host = cli_body({"User": "1000:1000"}, GroupAdd=["27"])
    spec = build(cfg, host)
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 27]}
    # a non-root user gets the bounding set only, as dockerd 20.10
    assert spec["process"]["capabilities"] == {"bounding": list(sg.DEFAULT_CAPS)}


def test_user_names_need_the_rootfs() -> None:
    cfg, host = cli_body({"User": "nobody"})
    with pytest.raises(InvalidParameter, match="resolve_user"):
        build(cfg, host)
    spec = build(cfg, host, user={"uid": 65534, "gid": 65534, "additionalGids": [65534]})
    assert spec["process"]["user"]["uid"] == 65534


PASSWD = ("root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
          "# comment\nalice:x:1000:1000::/home/alice:/bin/sh\n")
GROUP = "root:x:0:\ndaemon:x:1:\nwheel:x:10:root,alice\nalice:x:1000:\nstaff:x:50:alice\n"


@pytest.mark.parametrize("user, group_add, want", [
    ("", None, {"uid": 0, "gid": 0, "additionalGids": [0, 10]}),
    ("root", None, {"uid": 0, "gid": 0, "additionalGids": [0, 10]}),
    ("alice", None, {"uid": 1000, "gid": 1000, "additionalGids": [1000, 10, 50]}),
    ("1000", None, {"uid": 1000, "gid": 1000, "additionalGids": [1000, 10, 50]}),
    ("alice:daemon", None, {"uid": 1000, "gid": 1, "additionalGids": [1]}),
    ("alice:77", None, {"uid": 1000, "gid": 77, "additionalGids": [77]}),
    ("4242", None, {"uid": 4242, "gid": 0, "additionalGids": [0]}),
    ("4242:4242", ["staff", "99"], {"uid": 4242, "gid": 4242, "additionalGids": [4242, 50, 99]}),
])
def test_parse_user(user: str, group_add: list[str] | None, want: dict) -> None:
    assert sg.parse_user(user, PASSWD, GROUP, group_add) == want


@pytest.mark.parametrize("user, group_add, msg", [
    ("bob", None, "unable to find user bob"),
    ("alice:nogroup", None, "unable to find group nogroup"),
    ("1:2:3", None, "invalid user"),
    ("alice", ["nope"], "Unable to find group nope"),
])
def test_parse_user_errors(user: str, group_add: list[str] | None, msg: str) -> None:
    with pytest.raises(InvalidParameter, match=msg):
        sg.parse_user(user, PASSWD, GROUP, group_add)


def test_resolve_user_reads_inside_the_rootfs(tmp_path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "lib").mkdir()
    (root / "lib/group").write_text(GROUP)
    # an absolute symlink means the container's /lib/group, never the host's
    os.symlink("/lib/group", root / "etc/group")
    assert sg.resolve_user(str(root), "alice") == {"uid": 1000, "gid": 1000,
                                                   "additionalGids": [1000, 10, 50]}
    # a symlink out of the rootfs stays in it: /etc/passwd -> ../../../../etc/shadow-ish
    os.remove(root / "etc/passwd")
    os.symlink("../../../../../../../../etc/hostname", root / "etc/passwd")
    assert sg.resolve_user(str(root), "1234") == {"uid": 1234, "gid": 0, "additionalGids": [0]}
    with pytest.raises(InvalidParameter, match="unable to find user alice"):
        sg.resolve_user(str(root), "alice")


def test_resolve_user_refuses_special_files(tmp_path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.mkfifo(root / "etc/passwd")
    with pytest.raises(InvalidParameter, match="not a regular file"):
        sg.resolve_user(str(root), "alice")


def test_resolve_user_without_files(tmp_path) -> None:
    assert sg.resolve_user(str(tmp_path), "") == {"uid": 0, "gid": 0, "additionalGids": [0]}


# --- init, signals ---------------------------------------------------------------------------

def test_init() -> None:
    cfg, host = cli_body(Init=True)
    spec = build(cfg, host, init_path="/usr/bin/tini-static")
    assert spec["process"]["args"] == ["/sbin/docker-init", "--", "echo", "hi"]
    assert mount(spec, "/sbin/docker-init") == {"destination": "/sbin/docker-init", "type": "bind",
                                                "source": "/usr/bin/tini-static",
                                                "options": ["bind", "ro"]}
    # not with the host's pid namespace
    cfg, host = cli_body(Init=True, PidMode="host")
    spec = build(cfg, host, init_path="/usr/bin/tini-static")
    assert spec["process"]["args"] == ["echo", "hi"]


@pytest.mark.parametrize("cfg, image, sig", [
    ({}, {}, signal.SIGTERM),
    ({"StopSignal": "SIGKILL"}, {}, signal.SIGKILL),
    ({"StopSignal": "quit"}, {}, signal.SIGQUIT),
    ({"StopSignal": "9"}, {}, 9),
    ({}, {"StopSignal": "SIGUSR1"}, signal.SIGUSR1),
    ({"StopSignal": "RTMIN+3"}, {}, signal.SIGRTMIN + 3),
    ({"StopSignal": "nope"}, {}, signal.SIGTERM),
])
def test_stop_signal(cfg: dict, image: dict, sig: int) -> None:
    assert sg.stop_signal(cfg, image) == int(sig)


@pytest.mark.parametrize("raw, n", [("64m", 64 << 20), ("1.5g", 3 << 29), ("1024", 1024),
                                    ("10k", 10240), ("2MiB", 2 << 20)])
def test_parse_memory(raw: str, n: int) -> None:
    assert sg.parse_memory(raw) == n


# --- capabilities and security ---------------------------------------------------------------

@pytest.mark.parametrize("host, caps", [
    ({"CapAdd": ["NET_ADMIN"]}, [*sg.DEFAULT_CAPS, "CAP_NET_ADMIN"]),
    ({"CapAdd": ["cap_sys_admin"]}, [*sg.DEFAULT_CAPS, "CAP_SYS_ADMIN"]),
    ({"CapDrop": ["CHOWN", "CAP_KILL"]},
     [c for c in sg.DEFAULT_CAPS if c not in ("CAP_CHOWN", "CAP_KILL")]),
    ({"CapDrop": ["ALL"], "CapAdd": ["NET_BIND_SERVICE"]}, ["CAP_NET_BIND_SERVICE"]),
    ({"CapAdd": ["ALL"], "CapDrop": ["MKNOD"]}, [c for c in HOST_CAPS if c != "CAP_MKNOD"]),
    ({"Privileged": True}, HOST_CAPS),
])
def test_capabilities(host: dict, caps: list[str]) -> None:
    cfg, h = cli_body(**host)
    spec = build(cfg, h)
    assert spec["process"]["capabilities"]["bounding"] == caps
    assert spec["process"]["capabilities"]["effective"] == caps


@pytest.mark.parametrize("host, msg", [
    ({"CapAdd": ["FOO"]}, 'invalid CapAdd: unknown capability: "CAP_FOO"'),
    ({"CapDrop": ["CAP_NOPE"]}, 'invalid CapDrop: unknown capability: "CAP_NOPE"'),
    # known to Linux, absent from this host's bounding set: dockerd refuses it too
    ({"CapAdd": ["SYS_RESOURCE"]}, "capability not supported by your kernel"),
])
def test_capability_errors(host: dict, msg: str) -> None:
    cfg, h = cli_body(**host)
    with pytest.raises(InvalidParameter, match=msg):
        sg.validate_create(cfg, h, si=SI)


def test_host_caps_override() -> None:
    cfg, h = cli_body(Privileged=True)
    spec = build(cfg, h, host_caps=["CAP_CHOWN", "CAP_KILL"])
    assert spec["process"]["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_KILL"]


def test_seccomp_follows_the_capabilities() -> None:
    cfg, h = cli_body(CapAdd=["SYS_ADMIN", "SYS_PTRACE"])
    allowed = allowed_syscalls(build(cfg, h))
    assert {"mount", "umount2", "ptrace", "setns", "unshare"} <= allowed
    cfg, h = cli_body()
    allowed = allowed_syscalls(build(cfg, h))
    assert not {"mount", "umount2", "setns", "unshare"} & allowed


def test_seccomp_unconfined_and_privileged() -> None:
    cfg, h = cli_body(SecurityOpt=["seccomp=unconfined"])
    assert "seccomp" not in build(cfg, h)["linux"]
    cfg, h = cli_body(Privileged=True)
    assert "seccomp" not in build(cfg, h)["linux"]


CUSTOM_PROFILE = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
    {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}


@pytest.mark.parametrize("privileged", [False, True])
def test_seccomp_custom_profile(privileged: bool) -> None:
    cfg, h = cli_body(SecurityOpt=["seccomp=" + json.dumps(CUSTOM_PROFILE)], Privileged=privileged)
    sc = build(cfg, h)["linux"]["seccomp"]
    assert sc["defaultAction"] == "SCMP_ACT_ALLOW"
    names = [c["names"] for c in sc["syscalls"]]
    # the SYS_ADMIN group applies only when the container has SYS_ADMIN (privileged has all)
    assert names == ([["chmod"], ["mount"]] if privileged else [["chmod"]])


@pytest.mark.parametrize("opt, msg", [
    ("seccomp={not json", "Decoding seccomp profile failed"),
    ('seccomp={"syscalls": [{"name": "a", "names": ["b"]}]}', "Decoding seccomp profile failed"),
    ("apparmor=docker-default", "AppArmor profiles are not supported"),
    ("label=type:svirt_t", "SELinux labels are not supported"),
    ("no-new-privileges=maybe", "invalid --security-opt 2"),
    ("bogus", "invalid --security-opt 1"),
    ("foo=bar", "invalid --security-opt 2"),
])
def test_security_opt_errors(opt: str, msg: str) -> None:
    cfg, h = cli_body(SecurityOpt=[opt])
    with pytest.raises(InvalidParameter, match=msg):
        sg.validate_create(cfg, h, si=SI)


@pytest.mark.parametrize("opts, nnp", [
    (["no-new-privileges"], True), (["no-new-privileges:true"], True),
    (["no-new-privileges=true"], True), (["no-new-privileges=false"], None),
    (["apparmor=unconfined", "label=disable"], None),
])
def test_no_new_privileges(opts: list[str], nnp: bool | None) -> None:
    cfg, h = cli_body(SecurityOpt=opts)
    assert build(cfg, h)["process"].get("noNewPrivileges") == nnp


def test_privileged_spec() -> None:
    cfg, h = cli_body(Privileged=True, Devices=[
        {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/myfuse", "CgroupPermissions": "rwm"},
        {"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "r"}])
    spec = build(cfg, h)
    lx = spec["linux"]
    assert mount(spec, "/sys")["options"] == ["nosuid", "noexec", "nodev"]
    assert mount(spec, "/sys/fs/cgroup")["options"] == ["nosuid", "noexec", "nodev"]
    assert "maskedPaths" not in lx and "readonlyPaths" not in lx
    assert lx["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    # the host's devices, plus a mapping to another path (the same path is there already)
    assert [d["path"] for d in lx["devices"]] == ["/dev/null", "/dev/sda", "/dev/myfuse"]
    assert lx["namespaces"] == [{"type": t} for t in ("mount", "network", "uts", "pid", "ipc")]


def test_privileged_keeps_explicit_masked_paths() -> None:
    cfg, h = cli_body(Privileged=True, MaskedPaths=["/proc/kcore"], ReadonlyPaths=[])
    lx = build(cfg, h)["linux"]
    assert lx["maskedPaths"] == ["/proc/kcore"] and "readonlyPaths" not in lx


def test_writable_cgroups() -> None:
    cfg, h = cli_body(SecurityOpt=["writable-cgroups"])
    assert mount(build(cfg, h), "/sys/fs/cgroup")["options"] == ["nosuid", "noexec", "nodev"]
    cfg, h = cli_body(Privileged=True, SecurityOpt=["writable-cgroups=false"])
    assert "ro" in mount(build(cfg, h), "/sys/fs/cgroup")["options"]


# --- devices ---------------------------------------------------------------------------------

def test_devices_and_cgroup_rules() -> None:
    cfg, h = cli_body(Devices=[
        {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rw"},
        {"PathOnHost": "/dev/snd", "PathInContainer": "/dev/sound", "CgroupPermissions": "rwm"}],
        DeviceCgroupRules=["c 42:* rmw", "a *:* r"])
    lx = build(cfg, h)["linux"]
    assert [(d["path"], d["type"], d["major"], d["minor"]) for d in lx["devices"]] == [
        ("/dev/fuse", "c", 10, 229), ("/dev/sound/controlC0", "c", 116, 2),
        ("/dev/sound/pcm/p0", "c", 116, 3)]
    assert lx["resources"]["devices"] == DEFAULT_DEVICE_RULES + [
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
        {"allow": True, "type": "c", "major": 116, "minor": 2, "access": "rwm"},
        {"allow": True, "type": "c", "major": 116, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 42, "access": "rmw"},
        {"allow": True, "type": "a", "access": "r"}]


@pytest.mark.parametrize("host, msg", [
    ({"Devices": [{"PathOnHost": "/dev/nope", "PathInContainer": "/dev/x",
                   "CgroupPermissions": "rwm"}]}, 'adding custom device "/dev/nope"'),
    ({"Devices": [{"PathOnHost": "/etc", "PathInContainer": "/dev/x",
                   "CgroupPermissions": "rwm"}]}, "not a device node"),
])
def test_device_errors_at_build(host: dict, msg: str) -> None:
    cfg, h = cli_body(**host)
    with pytest.raises(InvalidParameter, match=msg):
        build(cfg, h)


# --- mounts ----------------------------------------------------------------------------------

def test_binds_mounts_and_tmpfs() -> None:
    cfg, h = cli_body(
        Binds=["/srv:/data:ro", "/srv/data:/rw", "/srv:/deep/a/b:rslave"],
        Mounts=[{"Type": "bind", "Source": "/srv", "Target": "/m", "ReadOnly": True},
                {"Type": "bind", "Source": "/srv", "Target": "/n",
                 "BindOptions": {"NonRecursive": True, "Propagation": "rshared"}},
                {"Type": "tmpfs", "Target": "/scratch",
                 "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1777, "Options": [["exec"]]}}],
        Tmpfs={"/run": "size=64m,mode=755,exec", "/var/tmp": "ro,noexec"})
    spec = build(cfg, h)
    assert mount(spec, "/data") == {"destination": "/data", "type": "bind", "source": "/srv",
                                    "options": ["rbind", "ro", "rprivate"]}
    assert mount(spec, "/rw")["options"] == ["rbind", "rprivate"]
    assert mount(spec, "/deep/a/b")["options"] == ["rbind", "rslave"]
    assert mount(spec, "/m")["options"] == ["rbind", "ro", "rprivate"]
    assert mount(spec, "/n")["options"] == ["bind", "rshared"]
    assert mount(spec, "/scratch")["options"] == ["nosuid", "nodev", "rprivate", "mode=1777",
                                                  "size=64m", "exec"]
    assert mount(spec, "/run")["options"] == ["nosuid", "nodev", "rprivate", "size=64m",
                                              "mode=755", "exec"]
    assert mount(spec, "/var/tmp")["options"] == ["nosuid", "nodev", "rprivate", "ro", "noexec"]
    assert spec["linux"]["rootfsPropagation"] == "shared"
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/deep/a/b") > dests.index("/etc/hosts")  # parents first (by depth)


def test_bind_of_the_data_root_parent_is_rslave() -> None:
    cfg, h = cli_body(Binds=["/tmp:/h:ro"])
    spec = build(cfg, h, data_root="/tmp/skiff/data")
    assert mount(spec, "/h")["options"] == ["rbind", "ro", "rslave"]
    assert "rootfsPropagation" not in spec["linux"]


def test_user_mount_replaces_default_and_dev() -> None:
    cfg, h = cli_body(Tmpfs={"/dev/shm": "size=1m", "/dev": ""})
    spec = build(cfg, h)
    dests = [m["destination"] for m in spec["mounts"]]
    # a user /dev drops every default mount under /dev
    assert dests[:3] == ["/proc", "/sys", "/sys/fs/cgroup"]
    assert mount(spec, "/dev/shm")["options"][-1] == "size=1m"


@pytest.mark.parametrize("host, size", [({}, 67108864), ({"ShmSize": 33554432}, 33554432)])
def test_shm_size(host: dict, size: int) -> None:
    cfg, h = cli_body(**host)
    assert mount(build(cfg, h), "/dev/shm")["options"][-1] == f"size={size}"


def test_ipc_modes() -> None:
    cfg, h = cli_body(IpcMode="none")
    spec = build(cfg, h)
    assert "/dev/shm" not in [m["destination"] for m in spec["mounts"]]
    assert {"type": "ipc"} in spec["linux"]["namespaces"]
    cfg, h = cli_body(IpcMode="host")
    spec = build(cfg, h)
    assert {"type": "ipc"} not in spec["linux"]["namespaces"]
    assert mount(spec, "/dev/shm") == {"destination": "/dev/shm", "type": "bind",
                                       "source": "/dev/shm", "options": ["rbind", "rprivate"]}


@pytest.mark.parametrize("host, msg", [
    # issue 8: named and anonymous volumes are accepted; these are still errors
    ({"Binds": ["vol1:/data:rshared"]}, "propagation applies to bind mounts only"),
    ({"Binds": ["/srv:/data:nocopy"]}, "nocopy applies to volumes only"),
    ({"Binds": ["/srv:/data:bogus"]}, "invalid mode: bogus"),
    ({"Binds": ["/srv:/data:ro,rw"]}, "invalid mode: ro,rw"),
    ({"Binds": ["/srv:data"]}, "must be absolute"),
    ({"Binds": ["/srv:/"]}, "destination can't be '/'"),
    ({"Binds": ["/srv:/a", "/tmp:/a/"]}, "Duplicate mount point: /a"),
    ({"Binds": ["/srv:/a"], "Tmpfs": {"/a": ""}}, "Duplicate mount point: /a"),
    ({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v",
                  "VolumeOptions": {"Subpath": "x"}}]}, "Subpath is not supported"),
    ({"Mounts": [{"Type": "bind", "Source": "/nope", "Target": "/v"}]},
     "bind source path does not exist: /nope"),
    ({"Mounts": [{"Type": "bind", "Source": "/srv", "Target": ""}]}, "Target must not be empty"),
    ({"Mounts": [{"Type": "tmpfs", "Source": "x", "Target": "/t"}]}, "Source must not be specified"),
    ({"Mounts": [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"Options": [["uid", "1"]]}}]},
     "invalid option: uid"),
    ({"Mounts": [{"Type": "weird", "Target": "/t"}]}, "mount type unknown"),
    ({"Mounts": [{"Type": "bind", "Source": "/srv", "Target": "/t",
                  "BindOptions": {"Propagation": "sideways"}}]}, "invalid propagation mode"),
    ({"Tmpfs": {"/t": "size=1m,bogus"}}, 'Invalid tmpfs option "bogus"'),
    ({"Tmpfs": {"t": ""}}, "must be absolute"),
    ({"Tmpfs": {"/": ""}}, "destination can't be '/'"),
    ({"VolumeDriver": "nfs"}, "volume drivers other than local"),
])
def test_mount_errors(host: dict, msg: str) -> None:
    cfg, h = cli_body(**host)
    with pytest.raises(InvalidParameter, match=msg):
        sg.validate_create(cfg, h, si=SI)


def test_bind_create_mountpoint_skips_the_existence_check() -> None:
    cfg, h = cli_body(Mounts=[{"Type": "bind", "Source": "/nope", "Target": "/v",
                               "BindOptions": {"CreateMountpoint": True}}])
    assert mount(build(cfg, h), "/v")["source"] == "/nope"


# --- namespaces ------------------------------------------------------------------------------

@pytest.mark.parametrize("host, types, extra", [
    ({"NetworkMode": "none"}, ["mount", "network", "uts", "pid", "ipc"], {}),
    ({"NetworkMode": "bridge"}, ["mount", "network", "uts", "pid", "ipc"], {}),
    ({"NetworkMode": "host"}, ["mount", "uts", "pid", "ipc"], {}),
    ({"PidMode": "host"}, ["mount", "network", "uts", "ipc"], {}),
    ({"UTSMode": "host"}, ["mount", "network", "pid", "ipc"], {}),
    ({"CgroupnsMode": "private"}, ["mount", "network", "uts", "pid", "ipc", "cgroup"], {}),
    ({"CgroupnsMode": "host"}, ["mount", "network", "uts", "pid", "ipc"], {}),
    ({}, ["mount", "network", "uts", "pid", "ipc", "cgroup"], {"cgroup_unified": True}),
])
def test_namespaces(host: dict, types: list[str], extra: dict) -> None:
    cfg, h = cli_body(**host)
    spec = build(cfg, h, si=make_si(**extra))
    assert [n["type"] for n in spec["linux"]["namespaces"]] == types
    if host.get("UTSMode") == "host":
        assert "hostname" not in spec
    if host.get("NetworkMode") == "host":
        assert "sysctl" not in spec["linux"]


def test_join_network_namespace_path() -> None:
    cfg, h = cli_body()
    spec = build(cfg, h, netns_path="/run/netns/x")
    assert spec["linux"]["namespaces"][1] == {"type": "network", "path": "/run/netns/x"}


@pytest.mark.parametrize("host, msg", [
    # issue 8 networking: user networks, container: and published ports are accepted; these not
    ({"NetworkMode": "my net!"}, "invalid network mode"),
    ({"NetworkMode": "container:"}, "no container given"),
    ({"NetworkMode": "none", "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}},
     "port publishing and the container type network mode"),
    ({"PortBindings": {"80-90/tcp": [{"HostIp": "", "HostPort": "8080"}]}}, 'invalid port specification: "80-90"'),
    ({"Links": ["a:b"]}, "legacy container links"),
    ({"IpcMode": "container:abc"}, "sharing another container's IPC namespace"),
    ({"IpcMode": "weird"}, "invalid IPC mode: weird"),
    ({"PidMode": "container:abc"}, "sharing another container's PID namespace"),
    ({"PidMode": "x"}, "invalid PID mode: x"),
    ({"UTSMode": "x"}, "invalid UTS mode: x"),
    ({"CgroupnsMode": "x"}, "invalid cgroup namespace mode: x"),
    ({"UsernsMode": "private"}, "invalid USER mode"),
    ({"Cgroup": "container:x"}, "Cgroup"),
    ({"Isolation": "hyperv"}, "invalid isolation 'hyperv' on linux"),
])
def test_namespace_and_network_errors(host: dict, msg: str) -> None:
    cfg, h = cli_body(**host)
    with pytest.raises(InvalidParameter, match=msg):
        sg.validate_create(cfg, h, si=SI)


# --- resources -------------------------------------------------------------------------------

@pytest.mark.parametrize("host, want", [
    ({"Memory": 64 << 20, "MemorySwap": -1},
     {"memory": {"limit": 64 << 20, "disableOOMKiller": False}}),
    ({"Memory": 64 << 20, "MemorySwap": 128 << 20, "MemoryReservation": 32 << 20,
      "MemorySwappiness": 10, "OomKillDisable": True},
     {"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20, "swappiness": 10,
                 "disableOOMKiller": True}}),
    ({"NanoCpus": 1500000000}, {"cpu": {"quota": 150000, "period": 100000}}),
    ({"CpuShares": 512, "CpuPeriod": 50000, "CpuQuota": 25000, "CpusetCpus": "0-1",
      "CpusetMems": "0"},
     {"cpu": {"shares": 512, "quota": 25000, "period": 50000, "cpus": "0-1", "mems": "0"}}),
    ({"PidsLimit": 8}, {"pids": {"limit": 8}}),
    ({"PidsLimit": -1}, {}),
    ({"PidsLimit": None}, {}),
    ({"BlkioWeight": 300}, {"blockIO": {"weight": 300}}),
    ({"BlkioWeightDevice": [{"Path": "/dev/sda", "Weight": 200}],
      "BlkioDeviceReadBps": [{"Path": "/dev/sda", "Rate": 1048576}],
      "BlkioDeviceWriteIOps": [{"Path": "/dev/sda", "Rate": 100}]},
     {"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": 200}],
                  "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                  "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]}}),
])
def test_resources(host: dict, want: dict) -> None:
    cfg, h = cli_body(**host)
    r = build(cfg, h)["linux"]["resources"]
    got = {k: v for k, v in r.items() if k != "devices"}
    want = {"memory": {"disableOOMKiller": False}, **want}
    assert got == want


def test_host_without_swap_accounting_or_blkio_weight() -> None:
    si = make_si(swap_limit=False, blkio_weight=False)
    cfg, h = cli_body(Memory=64 << 20, BlkioWeight=300)
    assert sg.validate_create(cfg, h, si=si) == [
        "Your kernel does not support swap limit capabilities or the cgroup is not mounted. "
        "Memory limited without swap.",
        "Your kernel does not support Block I/O weight or the cgroup is not mounted. "
        "Weight discarded."]
    r = build(cfg, h, si=si)["linux"]["resources"]
    assert r["memory"] == {"limit": 64 << 20, "disableOOMKiller": False}
    assert "blockIO" not in r


def test_cgroup_v2_drops_swappiness() -> None:
    si = make_si(cgroup_unified=True)
    cfg, h = cli_body(MemorySwappiness=10)
    assert "memory swappiness" in sg.validate_create(cfg, h, si=si)[0]
    assert "swappiness" not in build(cfg, h, si=si)["linux"]["resources"]["memory"]


def test_rlimits_oom_score_annotations_sysctls() -> None:
    cfg, h = cli_body(Ulimits=[{"Name": "nofile", "Soft": 1024, "Hard": 2048},
                               {"Name": "core", "Soft": -1, "Hard": -1}],
                      OomScoreAdj=500, Annotations={"a": "b"},
                      Sysctls={"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000",
                               "fs.mqueue.msg_max": "20"})
    spec = build(cfg, h)
    assert spec["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024},
        {"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 2**64 - 1}]
    assert spec["process"]["oomScoreAdj"] == 500
    assert spec["annotations"] == {"a": "b"}
    assert spec["linux"]["sysctl"] == {
        "net.ipv4.ping_group_range": "0 2147483647", "net.ipv4.ip_unprivileged_port_start": "0",
        "net.ipv4.ip_forward": "1", "kernel.shmmax": "1000", "fs.mqueue.msg_max": "20"}


@pytest.mark.parametrize("host, cgroup_parent, path", [
    ({}, "/skiff", f"/skiff/{CID}"),
    ({}, "/", f"/{CID}"),
    ({"CgroupParent": "/mine"}, "/skiff", f"/mine/{CID}"),
    ({"CgroupParent": "rel"}, "/skiff", f"/rel/{CID}"),
])
def test_cgroups_path(host: dict, cgroup_parent: str, path: str) -> None:
    cfg, h = cli_body(**host)
    assert build(cfg, h, cgroup_parent=cgroup_parent)["linux"]["cgroupsPath"] == path


@pytest.mark.parametrize("host, msg", [
    ({"Memory": -1}, "must not be negative"),
    ({"Memory": 4 << 20}, "Minimum memory limit allowed is 6MB"),
    ({"Memory": 64 << 20, "MemorySwap": 32 << 20},
     "Minimum memoryswap limit should be larger than memory limit"),
    ({"MemorySwap": 64 << 20}, "You should always set the Memory limit when using Memoryswap"),
    ({"MemorySwappiness": 101}, "valid memory swappiness range is 0-100"),
    ({"MemoryReservation": 1 << 20}, "Minimum memory reservation allowed is 6MB"),
    ({"Memory": 16 << 20, "MemoryReservation": 32 << 20},
     "Minimum memory limit can not be less than memory reservation limit"),
    ({"KernelMemory": 1 << 30}, "KernelMemory is not supported"),
    ({"KernelMemoryTCP": 1 << 20}, "KernelMemoryTCP is not supported"),
    ({"NanoCpus": 1000000000, "CpuPeriod": 100000}, "Nano CPUs and CPU Period cannot both be set"),
    ({"NanoCpus": 1000000000, "CpuQuota": 100000}, "Nano CPUs and CPU Quota cannot both be set"),
    ({"NanoCpus": 3000000000}, "range of CPUs is from 0.01 to 2.00"),
    ({"CpuPeriod": 10}, "CPU cfs period can not be less than 1ms"),
    ({"CpuQuota": 10}, "CPU cfs quota can not be less than 1ms"),
    ({"CpuShares": -2}, "invalid CPU shares"),
    ({"CpusetCpus": "0-x"}, "Invalid value 0-x for cpuset cpus"),
    ({"CpusetCpus": "0-7"}, "Requested CPUs are not available"),
    ({"CpuRealtimeRuntime": 950000}, "real-time scheduler is not supported"),
    ({"CpuCount": 2}, "Windows only"),
    ({"IOMaximumIOps": 5}, "Invalid QoS settings"),
    ({"BlkioWeight": 5}, "Range of blkio weight is from 10 to 1000"),
    ({"PidsLimit": "8"}, "PidsLimit: expected an integer"),
    ({"ShmSize": -1}, "SHM size can not be less than 0"),
    ({"OomScoreAdj": 1001}, "range for oom score adj is"),
    ({"Ulimits": [{"Name": "nofiles", "Soft": 1, "Hard": 1}]}, "invalid ulimit type: nofiles"),
    ({"Ulimits": [{"Name": "nofile", "Soft": 4, "Hard": 2}]}, "soft limit must be less than"),
    ({"Sysctls": {"kernel.panic": "1"}}, 'sysctl "kernel.panic" is not in a separate kernel'),
    ({"Sysctls": {"net.ipv4.ip_forward": "1"}, "NetworkMode": "host"},
     "not allowed in the host's network namespace"),
    ({"Sysctls": {"kernel.sem": "1"}, "IpcMode": "host"}, "not allowed in the host's IPC"),
    ({"Sysctls": {"kernel.hostname": "x"}}, "conflicts with the container's hostname"),
    ({"Devices": [{"PathOnHost": "/dev/fuse", "CgroupPermissions": "rwx"}]},
     "invalid device cgroup permissions"),
    ({"DeviceCgroupRules": ["c 1:3"]}, "invalid device cgroup rule format"),
    ({"DeviceRequests": [{"Driver": "nvidia", "Count": -1}]}, "GPUs"),
    ({"StorageOpt": {"size": "1G"}}, "StorageOpt"),
    ({"Annotations": {"": "x"}}, "annotation key"),
    ({"MaskedPaths": ["proc/kcore"]}, "must be an absolute path"),
])
def test_resource_and_option_errors(host: dict, msg: str) -> None:
    cfg, h = cli_body(**host)
    with pytest.raises(InvalidParameter, match=msg):
        sg.validate_create(cfg, h, si=SI)


# --- restart policy, AutoRemove, Config checks ----------------------------------------------

@pytest.mark.parametrize("policy, auto_remove, msg", [
    ({"Name": "always", "MaximumRetryCount": 3}, False,
     "maximum retry count can only be used with 'on-failure'$"),
    ({"Name": "unless-stopped", "MaximumRetryCount": -1}, False, "and cannot be negative"),
    ({"Name": "on-failure", "MaximumRetryCount": -1}, False,
     "maximum retry count cannot be negative"),
    ({"Name": "sometimes"}, False, "unknown policy 'sometimes'"),
    ({"Name": "always"}, True, "can't create 'AutoRemove' container with restart policy"),
    ({"Name": "on-failure", "MaximumRetryCount": 2}, True, "AutoRemove"),
])
def test_restart_policy_errors(policy: dict, auto_remove: bool, msg: str) -> None:
    cfg, h = cli_body(RestartPolicy=policy, AutoRemove=auto_remove)
    with pytest.raises(InvalidParameter, match=msg):
        sg.validate_create(cfg, h, si=SI)


@pytest.mark.parametrize("policy", [{"Name": "on-failure", "MaximumRetryCount": 2},
                                    {"Name": "always"}, {"Name": "unless-stopped"},
                                    {"Name": "", "MaximumRetryCount": 5}, {"Name": "no"}])
def test_restart_policies_accepted(policy: dict) -> None:
    cfg, h = cli_body(RestartPolicy=policy, AutoRemove=False)
    assert sg.validate_create(cfg, h, si=SI) == []


@pytest.mark.parametrize("cfg, msg", [
    ({"WorkingDir": "tmp"}, "the working directory 'tmp' is invalid"),
    ({"StopSignal": "SIGNOPE"}, "Invalid signal: SIGNOPE"),
    ({"Env": ["=x"]}, "invalid environment variable: =x"),
    ({"Hostname": "h" * 65}, "is too long"),
    ({"Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000}},
     "Interval in Healthcheck cannot be less than 1ms"),
    ({"Healthcheck": {"Retries": -1}}, "Retries in Healthcheck cannot be negative"),
    ({"Volumes": {"data": {}}}, "must be absolute"),   # issue 8: absolute ones are volumes
    ({"MacAddress": "02:42:ac:11:00:02"}, "MacAddress"),
    ({"User": "a:b:c"}, "invalid user"),
    ({"Cmd": [1, 2]}, "Cmd: expected a string or an array of strings"),
])
def test_config_errors(cfg: dict, msg: str) -> None:
    c, h = cli_body(cfg)
    with pytest.raises(InvalidParameter, match=msg):
        sg.validate_create(c, h, si=SI)


def test_error_is_a_400() -> None:
    cfg, h = cli_body(Memory=1)
    with pytest.raises(InvalidParameter) as e:
        sg.validate_create(cfg, h, si=SI)
    assert e.value.status == 400


def test_warnings() -> None:
    cfg, h = cli_body(OomKillDisable=True)
    assert sg.validate_create(cfg, h, si=SI) == [
        "OOM killer is disabled for the container, but no memory limit is set, this can "
        "result in the system running out of resources."]
    with pytest.raises(InvalidParameter, match="cgroup v2"):
        sg.validate_create(cfg, h, si=make_si(cgroup_unified=True))


# --- adapt_host_config, SysInfo --------------------------------------------------------------

def test_adapt_host_config() -> None:
    h = sg.adapt_host_config({"Memory": 64 << 20, "OomKillDisable": None}, SI)
    assert h["MemorySwap"] == 128 << 20 and h["ShmSize"] == 64 << 20
    assert h["IpcMode"] == "private" and h["CgroupnsMode"] == "host"
    assert h["OomKillDisable"] is False and h["NetworkMode"] == "default"
    assert sg.adapt_host_config({}, make_si(cgroup_unified=True))["CgroupnsMode"] == "private"
    kept = sg.adapt_host_config({"MemorySwap": -1, "Memory": 64 << 20, "ShmSize": 1 << 20,
                                 "IpcMode": "host"}, SI)
    assert (kept["MemorySwap"], kept["ShmSize"], kept["IpcMode"]) == (-1, 1 << 20, "host")


def test_sysinfo_detect_reads_this_host() -> None:
    si = sg.SysInfo.detect()
    assert si.caps and all(c in NAMES for c in si.caps)
    assert si.ncpus == os.cpu_count()
    assert si.arch  # Docker's name of this machine's architecture
    assert isinstance(si.cgroup_unified, bool) and isinstance(si.swap_limit, bool)


def test_device_helpers_on_this_host() -> None:
    """/dev/null exists everywhere and needs no privilege to stat."""
    assert sg.devices_at("/dev/null") == [{"path": "", "type": "c", "major": 1, "minor": 3,
                                           "fileMode": 0o666, "uid": 0, "gid": 0}]
    assert sg.device_info("/etc/hostname") is None
    devs = sg.host_devices()
    assert any(d["path"] == "/dev/null" for d in devs)
    assert not any(d["path"].startswith(("/dev/pts/", "/dev/shm/")) or d["path"] == "/dev/console"
                   for d in devs)


# --- exec, hostname --------------------------------------------------------------------------

def test_exec_process() -> None:
    cfg, h = cli_body({"Env": ["A=1"], "WorkingDir": "/tmp", "Hostname": "box"},
                      Ulimits=[{"Name": "nofile", "Soft": 10, "Hard": 10}],
                      SecurityOpt=["no-new-privileges"])
    merged = sg.merge_config(cfg, IMAGE)
    spec = build(cfg, h)
    p = sg.exec_process(spec, merged, h, {"Cmd": ["ls", "-l"], "Env": ["B=2", "A=3"],
                                          "Tty": True, "ConsoleSize": [24, 80]}, si=SI)
    assert p["args"] == ["ls", "-l"]
    assert p["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "HOSTNAME=box", "TERM=xterm", "A=3", "B=2"]
    assert p["cwd"] == "/tmp" and p["terminal"] is True
    assert p["consoleSize"] == {"height": 24, "width": 80}
    assert p["user"] == spec["process"]["user"]
    assert p["rlimits"] == spec["process"]["rlimits"] and p["noNewPrivileges"] is True
    assert p["capabilities"] == spec["process"]["capabilities"]
    assert spec["process"]["args"] == ["echo", "hi"]  # the container's spec is left alone
    p = sg.exec_process(spec, merged, h, {"Cmd": "id", "User": "1000:50", "Privileged": True,
                                          "WorkingDir": "/"}, si=SI)
    assert p["user"] == {"uid": 1000, "gid": 50, "additionalGids": [50]}
    assert p["capabilities"]["effective"] == HOST_CAPS
    assert p["cwd"] == "/" and p["terminal"] is False and "consoleSize" not in p
    p = sg.exec_process(spec, merged, h, {"Cmd": ["id"], "User": "nobody"},
                        user={"uid": 65534, "gid": 65534, "additionalGids": [65534]}, si=SI)
    assert p["user"]["uid"] == 65534
    validate_config({**spec, "process": p})


@pytest.mark.parametrize("body, msg", [
    ({"Cmd": []}, "No exec command specified"),
    ({"Cmd": ["x"], "Env": ["=1"]}, "invalid environment variable"),
    ({"Cmd": ["x"], "WorkingDir": "rel"}, "needs to be an absolute path"),
    ({"Cmd": ["x"], "User": "nobody"}, "resolve_user"),
])
def test_exec_process_errors(body: dict, msg: str) -> None:
    cfg, h = cli_body()
    spec = build(cfg, h)
    with pytest.raises(InvalidParameter, match=msg):
        sg.exec_process(spec, sg.merge_config(cfg, IMAGE), h, body, si=SI)


def test_default_hostname() -> None:
    assert sg.default_hostname(CID, {"NetworkMode": "default"}) == SHORT
    assert sg.default_hostname(CID, {"NetworkMode": "host"}) == os.uname().nodename
    cfg, h = cli_body(NetworkMode="host")
    spec = build(cfg, h)
    assert spec["hostname"] == os.uname().nodename
    assert f"HOSTNAME={os.uname().nodename}" in spec["process"]["env"]


@pytest.mark.parametrize("cfg, host, msg", [
    ({"Bogus": 1}, {}, "unknown Config field 'Bogus'"),
    ({}, {"Capabilities": ["CAP_CHOWN"]}, "unknown HostConfig field 'Capabilities'"),
    ({}, {"DiskQuota": 5}, "unknown HostConfig field 'DiskQuota'"),
])
def test_unknown_fields_with_values_are_refused(cfg: dict, host: dict, msg: str) -> None:
    c, h = cli_body(cfg, **host)
    with pytest.raises(InvalidParameter, match=msg):
        sg.validate_create(c, h, si=SI)


def test_unknown_fields_without_values_are_accepted() -> None:
    c, h = cli_body({"Bogus": None}, Capabilities=None, DiskQuota=0)
    assert sg.validate_create(c, h, si=SI) == []


def test_many_flags_cli_body() -> None:
    """What the CLI sent for ``docker run -d --name x --restart on-failure:2 --init
    -u 1000:1000 -w /tmp -e A=1 --entrypoint "" --privileged --security-opt no-new-privileges
    --security-opt seccomp=unconfined --cap-add NET_ADMIN --ulimit nofile=1024:2048
    --pids-limit 8 --cpus 1.5 --memory-swap 128m -m 64m --shm-size 32m
    --sysctl net.ipv4.ip_forward=1 --tmpfs /run:size=64m,mode=1777 -v /tmp:/h:ro
    --mount type=bind,src=/tmp,dst=/m,readonly --device /dev/fuse:/dev/xfuse:rw
    --network none --hostname hh --oom-score-adj 100 --cpu-shares 512 --cpuset-cpus 0
    --blkio-weight 300 busybox echo hi``."""
    cfg, h = cli_body(
        {"Hostname": "hh", "User": "1000:1000", "AttachStdout": False, "AttachStderr": False,
         "Env": ["A=1"], "WorkingDir": "/tmp", "Entrypoint": [""]},
        Binds=["/tmp:/h:ro"], NetworkMode="none",
        RestartPolicy={"Name": "on-failure", "MaximumRetryCount": 2}, AutoRemove=False,
        CapAdd=["CAP_NET_ADMIN"], OomScoreAdj=100, Privileged=True,
        SecurityOpt=["no-new-privileges", "seccomp=unconfined"],
        Tmpfs={"/run": "size=64m,mode=1777"}, ShmSize=33554432,
        Sysctls={"net.ipv4.ip_forward": "1"}, CpuShares=512, Memory=67108864,
        NanoCpus=1500000000, BlkioWeight=300, CpusetCpus="0",
        Devices=[{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/xfuse",
                  "CgroupPermissions": "rw"}],
        MemorySwap=134217728, PidsLimit=8, Ulimits=[{"Name": "nofile", "Hard": 2048, "Soft": 1024}],
        Mounts=[{"Type": "bind", "Source": "/tmp", "Target": "/m", "ReadOnly": True}], Init=True)
    h["NetworkingConfig"] = None  # not a HostConfig field, no value: accepted
    spec = build(cfg, h, init_path="/usr/bin/tini-static")
    p, lx = spec["process"], spec["linux"]
    assert p["args"] == ["/sbin/docker-init", "--", "echo", "hi"]
    assert p["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000]}
    assert p["capabilities"] == {"bounding": HOST_CAPS}
    assert p["noNewPrivileges"] is True and p["oomScoreAdj"] == 100 and p["cwd"] == "/tmp"
    assert p["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "HOSTNAME=hh", "A=1"]
    assert "seccomp" not in lx and "maskedPaths" not in lx
    assert lx["resources"]["memory"] == {"limit": 67108864, "swap": 134217728,
                                         "disableOOMKiller": False}
    assert lx["resources"]["cpu"] == {"shares": 512, "quota": 150000, "period": 100000,
                                      "cpus": "0"}
    assert lx["resources"]["pids"] == {"limit": 8}
    assert lx["resources"]["blockIO"] == {"weight": 300}
    assert lx["sysctl"]["net.ipv4.ip_forward"] == "1"
    assert [d["path"] for d in lx["devices"]] == ["/dev/null", "/dev/sda", "/dev/xfuse"]
    assert mount(spec, "/run")["options"] == ["noexec", "nosuid", "nodev", "rprivate",
                                              "size=64m", "mode=1777"]
    assert mount(spec, "/h")["options"] == ["rbind", "ro", "rprivate"]
    assert mount(spec, "/m")["options"] == ["rbind", "ro", "rprivate"]
    assert mount(spec, "/dev/shm")["options"][-1] == "size=33554432"
    assert spec["hostname"] == "hh"


# --- volumes (issue 8): parsed here, resolved by skiff.daemon.volumes --------------------------
def test_volume_mounts_become_binds_and_explicit_binds_win() -> None:
    cfg, h = cli_body({"Volumes": {"/img": {}}}, Binds=["named:/data:ro", "/anon", "/srv:/img"],
                      Mounts=[{"Type": "volume", "Source": "", "Target": "/m",
                               "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}}}])
    vm = [("/data", "/vols/named/_data", True), ("/anon", "/vols/x/_data", False),
          ("/m", "/vols/y/_data", False), ("/img", "/vols/z/_data", False)]
    spec = build(cfg, h, volume_mounts=vm)
    assert mount(spec, "/data") == {"destination": "/data", "type": "bind",
                                    "source": "/vols/named/_data", "options": ["rbind", "ro", "rprivate"]}
    assert mount(spec, "/anon")["options"] == ["rbind", "rprivate"]
    assert mount(spec, "/m")["source"] == "/vols/y/_data"
    assert mount(spec, "/img")["source"] == "/srv"      # the bind wins over the image's volume
    ms = {m.destination: m for m in sg.user_mounts(h, SI)}
    assert (ms["/data"].kind, ms["/data"].name, ms["/data"].ro) == ("volume", "named", True)
    assert (ms["/anon"].kind, ms["/anon"].name) == ("volume", "")
    assert (ms["/m"].nocopy, ms["/m"].vol_labels) == (True, {"a": "b"})


def test_unresolved_volume_is_an_error() -> None:
    cfg, h = cli_body(Binds=["named:/data"])
    with pytest.raises(InvalidParameter, match=r"volumes at \['/data'\] were not resolved"):
        build(cfg, h)
