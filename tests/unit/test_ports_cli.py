"""The skiff CLI's -p/--publish and --expose parsing, as docker's CLI does it (issue 8)."""

from __future__ import annotations

import pytest

from skiff.cli.container import _port_specs
from skiff.cli.http import CLIError


def test_single_ports_and_host_ips():
    exposed, bindings = _port_specs(["8080:80", "127.0.0.1:5353:53/udp", "127.0.0.1::443", "9000"], ["7000/udp"])
    assert exposed == {"80/tcp": {}, "53/udp": {}, "443/tcp": {}, "9000/tcp": {}, "7000/udp": {}}
    assert bindings == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}],
                        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
                        "443/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
                        "9000/tcp": [{"HostIp": "", "HostPort": ""}]}


def test_ranges_expand_per_container_port():
    exposed, bindings = _port_specs(["8000-8001:80-81", "127.0.0.1:9000-9001:90-91/udp", "100-101"],
                                    ["7000-7002"])
    assert bindings["80/tcp"] == [{"HostIp": "", "HostPort": "8000"}]
    assert bindings["81/tcp"] == [{"HostIp": "", "HostPort": "8001"}]
    assert bindings["91/udp"] == [{"HostIp": "127.0.0.1", "HostPort": "9001"}]
    assert bindings["100/tcp"] == bindings["101/tcp"] == [{"HostIp": "", "HostPort": ""}]
    assert {"7000/tcp", "7001/tcp", "7002/tcp"} <= set(exposed)


def test_host_range_with_one_container_port_stays_a_range():
    _exposed, bindings = _port_specs(["8000-8010:80", "[::1]:8020-8021:81"], [])
    assert bindings == {"80/tcp": [{"HostIp": "", "HostPort": "8000-8010"}],
                        "81/tcp": [{"HostIp": "::1", "HostPort": "8020-8021"}]}


@pytest.mark.parametrize("spec, msg", [
    ("8000-8002:80-81", "invalid ranges specified for container and host Ports: 80-81 and 8000-8002"),
    ("8000:x", "invalid containerPort: x"),
    ("81-80", "invalid containerPort: 81-80"),
    ("x:80", "invalid hostPort: x"),
    ("80/sctx", "invalid proto: sctx"),
    ("nope:1:80", "invalid IP address: nope"),
])
def test_refused_as_docker_does(spec, msg):
    with pytest.raises(CLIError) as e:
        _port_specs([spec], [])
    assert msg in str(e.value) and e.value.code == 125


def test_expose_refused():
    with pytest.raises(CLIError, match="invalid range format for --expose: 80-x"):
        _port_specs([], ["80-x"])
