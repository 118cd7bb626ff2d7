"""skiffd on a real Unix socket, driven by the real docker CLI and docker-py."""

from __future__ import annotations

import grp
import os
import socket
import stat
import subprocess
import time

import pytest
from skiffd_util import SKIFFD, Skiffd


@pytest.fixture
def skiffd(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    yield d
    d.stop()


@pytest.mark.root
def test_socket_and_pidfile(skiffd):
    st = os.stat(skiffd.sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    try:
        gid = grp.getgrnam("docker").gr_gid
    except KeyError:
        gid = 0
    assert (st.st_uid, st.st_gid) == (0, gid)
    with open(skiffd.pidfile) as f:
        assert int(f.read()) == skiffd.proc.pid
    assert skiffd.stop_daemon() == 0
    assert not os.path.exists(skiffd.sock) and not os.path.exists(skiffd.pidfile)
    log = open(skiffd.log).read().splitlines()
    assert any(" info skiff.daemon API listening on unix://" in line for line in log)
    assert log[-1].endswith(" info skiff.daemon stopped")


@pytest.mark.root
def test_docker_cli_version_info_events(skiffd):
    r = skiffd.docker("version")
    assert r.returncode == 0, r.stderr
    assert "Client:" in r.stdout and "Server: Skiff Engine" in r.stdout
    assert "API version:      1.47 (minimum version 1.24)" in r.stdout
    assert "1.47 (downgraded from 1.50)" in r.stdout

    r = skiffd.docker("info")
    assert r.returncode == 0, r.stderr
    assert "Storage Driver: overlayfs" in r.stdout
    assert "Default Runtime: skiff-runc" in r.stdout
    # the CLI prints the runtimes in Go map order (random): compare them as a set
    runtimes = [line.split(":", 1)[1].split() for line in r.stdout.splitlines()
                if line.strip().startswith("Runtimes:")]
    assert len(runtimes) == 1 and "skiff-runc" in runtimes[0], r.stdout
    assert "Cgroup Driver: cgroupfs" in r.stdout and "Cgroup Version: 1" in r.stdout

    # a bounded replay returns by itself (the helper's subprocess timeout would fail it otherwise)
    r = skiffd.docker("system", "events", "--since", "0", "--until", str(int(time.time())))
    assert r.returncode == 0, r.stderr

    r = skiffd.docker("ps")
    assert r.returncode == 0 and r.stdout.split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED",
                                                      "STATUS", "PORTS", "NAMES"]
    r = skiffd.docker("volume", "ls")
    assert r.returncode == 0 and r.stdout.split() == ["DRIVER", "VOLUME", "NAME"], r.stderr
    # an endpoint not built (plugins) answers 501 with a message that says so
    r = skiffd.docker("plugin", "ls")
    assert r.returncode == 1
    assert "Error response from daemon: GET /plugins: not implemented yet" in r.stderr


@pytest.mark.root
def test_docker_py(skiffd):
    import docker
    from docker.errors import APIError

    client = docker.DockerClient(base_url=f"unix://{skiffd.sock}")
    try:
        v = client.version()
        assert v["ApiVersion"] == "1.47" and v["Components"][0]["Name"] == "Engine"
        assert client.ping() is True
        assert client.info()["Driver"] == "overlayfs"
        low = docker.APIClient(base_url=f"unix://{skiffd.sock}", version="1.99")
        with pytest.raises(APIError) as e:
            low.version(api_version=True)
        assert e.value.status_code == 400
        assert e.value.explanation == "client version 1.99 is too new. Maximum supported API version is 1.47"
        low.close()
    finally:
        client.close()


@pytest.mark.root
def test_raw_too_new_and_unknown(skiffd):
    def get(path: str) -> bytes:
        s = socket.socket(socket.AF_UNIX)
        s.connect(skiffd.sock)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        s.close()
        return out

    out = get("/v1.99/version")
    assert out.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nContent-Type: application/json\r\n" in out
    assert out.endswith(b'{"message": "client version 1.99 is too new. Maximum supported API version is 1.47"}\n')
    out = get("/grpc")
    assert out.startswith(b"HTTP/1.1 404 ") and out.endswith(b'{"message": "page not found"}\n')


@pytest.mark.root
def test_refuses_tcp_without_tls_and_second_instance(skiffd, state_dirs):
    r = subprocess.run([SKIFFD, "-H", "tcp://127.0.0.1:23750", "--config-file", "/dev/null"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "refusing to listen on tcp://127.0.0.1:23750: TCP is served only with mutual TLS" in r.stderr
    # same pid file: the first daemon is running
    r = subprocess.run([SKIFFD, "-H", f"unix://{skiffd.sock}2", "--exec-root", str(state_dirs.run),
                        "--data-root", str(state_dirs.data), "--config-file", "/dev/null"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "is skiffd already running?" in r.stderr
    assert os.path.exists(skiffd.pidfile)
