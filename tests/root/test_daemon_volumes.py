"""Volumes and mounts through a real skiffd and the real docker CLI (issue 8): driver-option
volumes mounted only while used, a malicious image symlink at a mount target (each runtime
keeps the mount inside the container), volumes and references across a daemon restart,
anonymous volumes with ``rm -v`` / ``--rm``, the volume API details the CLI does not show.
Containers run with ``--network none``: networking is not what these tests are about."""

from __future__ import annotations

import json
import os

import pytest
from skiffd_util import Skiffd


@pytest.fixture
def skiffd(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    yield d
    d.stop()


def ok(r) -> str:
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr}"
    return r.stdout


def mounted_at(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@pytest.mark.root
def test_tmpfs_driver_volume_is_mounted_while_used(skiffd, state_dirs):
    ok(skiffd.docker("volume", "create", "--driver", "local", "--opt", "type=tmpfs", "--opt",
                     "device=tmpfs", "--opt", "o=size=2m", "--label", "k=v", "tv"))
    info = json.loads(ok(skiffd.docker("volume", "inspect", "tv")))[0]
    assert info["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=2m"}
    assert info["Labels"] == {"k": "v"}
    data = info["Mountpoint"]
    assert not mounted_at(data)
    ok(skiffd.docker("run", "--network", "none", "-d", "--name", "u1", "-v", "tv:/v", "busybox", "sleep", "300"))
    ok(skiffd.docker("run", "--network", "none", "-d", "--name", "u2", "-v", "tv:/v", "busybox", "sleep", "300"))
    assert mounted_at(data)
    ok(skiffd.docker("exec", "u1", "sh", "-c", "echo shared > /v/f"))
    assert ok(skiffd.docker("exec", "u2", "cat", "/v/f")) == "shared\n"
    out = ok(skiffd.docker("exec", "u2", "awk", '$2=="/v"{print $3, $4}', "/proc/mounts"))
    assert out.startswith("tmpfs ") and "size=2048k" in out
    ok(skiffd.docker("stop", "-t", "0", "u1"))
    assert mounted_at(data)                       # u2 still runs
    r = skiffd.docker("volume", "rm", "tv")
    assert r.returncode == 1 and "volume is in use" in r.stderr
    ok(skiffd.docker("rm", "-f", "u2"))
    assert not mounted_at(data)
    ok(skiffd.docker("rm", "u1"))
    ok(skiffd.docker("volume", "rm", "tv"))
    assert not os.path.exists(os.path.dirname(data))


@pytest.mark.root
@pytest.mark.parametrize("runtime", ["skiff-runc", "runc", "crun"])
def test_image_symlink_at_mount_target_stays_inside(skiffd, state_dirs, runtime):
    """An image whose /evil is a symlink to a host path (absolute and via ../..): a bind and a
    volume at /evil/... land in the container's root, never on the host."""
    outside = state_dirs.tmp / "outside"
    outside.mkdir()
    src = state_dirs.tmp / "src"
    src.mkdir()
    (src / "f").write_text("inside\n")
    ok(skiffd.docker("run", "--network", "none", "--name", "mk", "busybox", "sh", "-c",
                     f"ln -s {outside} /evil && ln -s ../../../../../../../..{outside} /evil2"))
    ok(skiffd.docker("commit", "mk", "evil:1"))
    ok(skiffd.docker("rm", "mk"))
    r = skiffd.docker("run", "--network", "none", "-d", "--name", "ev", "--runtime", runtime,
                      "-v", f"{src}:/evil", "-v", "evol:/evil2/sub", "evil:1", "sleep", "300")
    if runtime == "crun" and r.returncode != 0:
        # crun 1.8 resolves with openat2(RESOLVE_IN_ROOT) and does not create the missing
        # target a dangling symlink names: it refuses, which is as safe
        assert "openat2" in r.stderr and "No such file or directory" in r.stderr, r.stderr
        assert not mounted_at(str(outside)) and os.listdir(outside) == []
        ok(skiffd.docker("rm", "-f", "ev"))
        ok(skiffd.docker("volume", "rm", "evol"))
        return
    ok(r)
    assert not mounted_at(str(outside)) and not mounted_at(str(outside / "sub"))
    assert os.listdir(outside) == []
    # inside, the mounts are where the symlinks lead within the container's root
    assert ok(skiffd.docker("exec", "ev", "cat", f"{outside}/f")) == "inside\n"
    ok(skiffd.docker("exec", "ev", "sh", "-c", f"echo v > {outside}/sub/g"))
    vol = json.loads(ok(skiffd.docker("volume", "inspect", "evol")))[0]["Mountpoint"]
    assert open(os.path.join(vol, "g")).read() == "v\n"
    assert os.listdir(outside) == []
    ok(skiffd.docker("rm", "-f", "ev"))
    ok(skiffd.docker("volume", "rm", "evol"))


@pytest.mark.root
def test_volumes_survive_a_daemon_restart(skiffd):
    ok(skiffd.docker("run", "--network", "none", "--name", "keep", "-v", "pv:/data", "-v", "/anon", "busybox", "sh", "-c",
                     "echo persisted > /data/f; echo a > /anon/a"))
    mounts = json.loads(ok(skiffd.docker("inspect", "-f", "{{json .Mounts}}", "keep")))
    anon = [m["Name"] for m in mounts if m["Destination"] == "/anon"][0]
    skiffd.stop_daemon()
    skiffd.start()
    assert json.loads(ok(skiffd.docker("inspect", "-f", "{{json .Mounts}}", "keep"))) == mounts
    r = skiffd.docker("volume", "rm", "pv")
    assert r.returncode == 1 and "remove pv: volume is in use - [" in r.stderr
    assert ok(skiffd.docker("run", "--network", "none", "--rm", "-v", "pv:/data", "busybox", "cat", "/data/f")) == "persisted\n"
    ok(skiffd.docker("rm", "-v", "keep"))
    names = ok(skiffd.docker("volume", "ls", "-q")).split()
    assert anon not in names and "pv" in names
    ok(skiffd.docker("volume", "rm", "pv"))


@pytest.mark.root
def test_volume_api_details(skiffd):
    import docker

    api = docker.APIClient(base_url=f"unix://{skiffd.sock}", version="1.41")
    try:
        v = api.create_volume("named1", labels={"x": "1"})
        assert v["Name"] == "named1" and v["Driver"] == "local" and v["Scope"] == "local"
        anon = api.create_volume()["Name"]
        assert len(anon) == 64
        listed = {x["Name"] for x in api.volumes(filters={"label": "x=1"})["Volumes"]}
        assert listed == {"named1"}
        df = api.df()
        assert {x["Name"] for x in df["Volumes"]} == {"named1", anon}
        assert all(x["UsageData"]["RefCount"] == 0 for x in df["Volumes"])
        # API 1.41: prune takes named volumes too
        out = api.prune_volumes()
        assert sorted(out["VolumesDeleted"]) == sorted(["named1", anon])
        api2 = docker.APIClient(base_url=f"unix://{skiffd.sock}", version="1.44")
        api2.create_volume("named2")
        anon2 = api2.create_volume()["Name"]
        assert api2.prune_volumes()["VolumesDeleted"] == [anon2]
        assert api2.prune_volumes(filters={"all": "true"})["VolumesDeleted"] == ["named2"]
        with pytest.raises(docker.errors.NotFound, match="no such volume"):
            api2.inspect_volume("named2")
        with pytest.raises(docker.errors.APIError, match='invalid option key: "bogus"'):
            api2.create_volume("bad1", driver_opts={"bogus": "1"})
        r = skiffd.docker("run", "--network", "none", "--rm", "--mount", "type=bind,src=/no/such/dir,dst=/x", "busybox", "true")
        assert r.returncode == 125 and "bind source path does not exist: /no/such/dir" in r.stderr
    finally:
        api.close()


@pytest.mark.root
def test_driver_volume_of_a_running_container_survives_a_daemon_restart(skiffd):
    ok(skiffd.docker("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "lv"))
    data = json.loads(ok(skiffd.docker("volume", "inspect", "lv")))[0]["Mountpoint"]
    ok(skiffd.docker("run", "--network", "none", "-d", "--name", "live", "-v", "lv:/v", "busybox",
                     "sh", "-c", "echo kept > /v/f; exec sleep 300"))
    ok(skiffd.docker("run", "--network", "none", "--name", "gone", "-v", "lv:/v", "busybox", "true"))
    skiffd.stop_daemon()
    skiffd.start()
    assert mounted_at(data)                      # the running container still uses it
    assert ok(skiffd.docker("exec", "live", "cat", "/v/f")) == "kept\n"
    ok(skiffd.docker("rm", "-f", "live"))
    assert not mounted_at(data)
    ok(skiffd.docker("rm", "gone"))
    ok(skiffd.docker("volume", "rm", "lv"))
