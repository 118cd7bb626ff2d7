"""skiff.containerd.tasks_core without a kernel: runtime choice, shim errors as gRPC codes, shim
events as containerd's task events, the namespace cgroup rule, and the recovery of a bundle
whose shim is gone."""

from __future__ import annotations

import json
import os
import stat

import pytest

from skiff.containerd import protos
from skiff.containerd.config import Config
from skiff.containerd.tasks_core import (
    LOST_SHIM_EXIT_STATUS,
    RuntimeChoice,
    TaskManager,
    _namespace_cgroup,
    choose_runtime,
    rpc_error,
)
from skiff.images.errors import InvalidArgument, NotFound
from skiff.shim import protocol as P
from skiff.shim.client import Event, ShimClient

api = protos.load()


@pytest.fixture
def config(tmp_path):
    return Config(root=str(tmp_path / "root"), state=str(tmp_path / "state"),
                  address=str(tmp_path / "c.sock")).validate()


@pytest.fixture
def published():
    return []


@pytest.fixture
def manager(config, published):
    return TaskManager(config, api, lambda ns, topic, msg: published.append((ns, topic, msg)))


@pytest.mark.parametrize("name,expected", [
    ("", "skiff-runc"), ("io.containerd.runc.v2", "skiff-runc"), ("io.containerd.runc.v1", "skiff-runc"),
    ("skiff-runc", "skiff-runc"), ("runc", "runc"), ("crun", "crun")])
def test_runtime_names(config, name, expected):
    rt = choose_runtime(config, name, "ns1")
    assert rt.name == expected
    assert rt.root == os.path.join(config.state, expected, "ns1")
    assert rt.args == []


def test_unknown_runtime_is_invalid_argument(config):
    with pytest.raises(InvalidArgument) as e:
        choose_runtime(config, "nosuch", "default")
    assert "runtime 'nosuch': not configured" in str(e.value)


def test_crun_runs_through_a_wrapper_that_hides_cgroup2(config):
    rt = choose_runtime(config, "crun", "default")
    assert rt.binary == os.path.join(config.state, "runtimes", "crun.sh")
    st = os.stat(rt.binary)
    assert stat.S_IMODE(st.st_mode) == 0o700
    with open(rt.binary) as f:
        text = f.read()
    assert text.startswith("#!/bin/sh\nexec unshare --mount --propagation private sh -c ")
    assert text.rstrip().endswith('crun "$@"') and "umount -l /sys/fs/cgroup/unified" in text
    assert choose_runtime(config, "crun", "default").binary == rt.binary  # rewritten only when changed


def test_systemd_cgroup_and_args_pass_as_global_flags(config):
    config.runtimes["runc"].systemd_cgroup = True
    config.runtimes["runc"].args = ["--debug"]
    config.runtimes["runc"].root = "/run/x"
    rt = choose_runtime(config, "runc", "default")
    assert rt.args == ["--systemd-cgroup", "--debug"] and rt.root == "/run/x"
    assert RuntimeChoice.from_json(json.loads(json.dumps(rt.to_json()))) == rt


@pytest.mark.parametrize("code,grpc_name", [
    (P.NOT_FOUND, "NOT_FOUND"), (P.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    (P.ALREADY_EXISTS, "ALREADY_EXISTS"), (P.UNKNOWN, "UNKNOWN"), (P.UNAVAILABLE, "UNAVAILABLE"),
    ("Bogus", "UNKNOWN")])
def test_shim_errors_keep_their_code(code, grpc_name):
    e = rpc_error(P.ShimError(code, "process already finished"), "kill task t1")
    assert e.code == grpc_name
    assert str(e) == "kill task t1: process already finished"


def test_get_unknown_task(manager):
    with pytest.raises(NotFound) as e:
        manager.get("default", "t1")
    assert "task t1: not found in namespace default" in str(e.value)
    assert manager.tasks_of("default") == []


class _FakeTask:
    namespace = "ns1"
    id = "c1"
    bundle = "/b/c1"
    io = ("/f/in", "/f/out", "/f/err", False)


@pytest.mark.parametrize("ev,topic,fields", [
    (Event(1, "create", "c1", 0, {"pid": 42, "bundle": "/b/c1"}), "/tasks/create",
     {"container_id": "c1", "bundle": "/b/c1", "pid": 42}),
    (Event(2, "start", "c1", 0, {"pid": 42}), "/tasks/start", {"container_id": "c1", "pid": 42}),
    (Event(3, "exec_added", "c1", 0, {"exec_id": "e1"}), "/tasks/exec-added", {"container_id": "c1", "exec_id": "e1"}),
    (Event(4, "exec_started", "c1", 0, {"exec_id": "e1", "pid": 50}), "/tasks/exec-started",
     {"container_id": "c1", "exec_id": "e1", "pid": 50}),
    (Event(5, "paused", "c1", 0), "/tasks/paused", {"container_id": "c1"}),
    (Event(6, "resumed", "c1", 0), "/tasks/resumed", {"container_id": "c1"}),
    (Event(7, "oom", "c1", 0), "/tasks/oom", {"container_id": "c1"}),
    (Event(8, "exit", "c1", 0, {"exec_id": "e1", "pid": 50, "exit_status": 3, "exited_at": 1_500_000_000_123}),
     "/tasks/exit", {"container_id": "c1", "id": "e1", "pid": 50, "exit_status": 3}),
    (Event(9, "exit", "c1", 0, {"exec_id": "", "pid": 42, "exit_status": 137, "exited_at": 5}),
     "/tasks/exit", {"container_id": "c1", "id": "c1", "pid": 42, "exit_status": 137}),
    (Event(10, "delete", "c1", 0, {"exec_id": "", "pid": 42, "exit_status": 1, "exited_at": 5}),
     "/tasks/delete", {"container_id": "c1", "id": "c1", "pid": 42, "exit_status": 1}),
])
def test_shim_events_become_task_events(manager, published, ev, topic, fields):
    manager.publish_event(_FakeTask(), ev)  # type: ignore[arg-type]
    [(ns, got_topic, msg)] = published
    assert (ns, got_topic) == ("ns1", topic)
    for k, v in fields.items():
        assert getattr(msg, k) == v, k
    if ev.type == "create":
        assert (msg.io.stdin, msg.io.stdout, msg.io.stderr) == _FakeTask.io[:3]
    if ev.type == "exit" and ev.fields["exited_at"] == 1_500_000_000_123:
        assert (msg.exited_at.seconds, msg.exited_at.nanos) == (1500, 123)


def test_unknown_shim_event_is_not_published(manager, published):
    manager.publish_event(_FakeTask(), Event(1, "bogus", "c1", 0))  # type: ignore[arg-type]
    assert published == []


@pytest.mark.parametrize("path,expected", [
    ("/ns1/c1", "/ns1"), ("/other/c1", ""), ("ns1/c1", ""), ("system.slice:ns1:c1", ""), (None, "")])
def test_namespace_cgroup(tmp_path, path, expected):
    spec: dict = {"linux": {"cgroupsPath": path}} if path is not None else {}
    (tmp_path / "config.json").write_text(json.dumps(spec))
    assert _namespace_cgroup(str(tmp_path), "ns1") == expected


def test_recover_cleans_up_a_bundle_whose_shim_is_gone(manager, config, published):
    bundle = os.path.join(manager.bundle_path("ns1", "c1"))
    os.makedirs(os.path.join(bundle, "rootfs"))
    (open(os.path.join(bundle, "config.json"), "w")).close()
    with open(os.path.join(bundle, "runtime.json"), "w") as f:
        json.dump(RuntimeChoice("fake", "/bin/true", "", []).to_json(), f)
    with open(os.path.join(bundle, "shim.pid"), "w") as f:
        f.write("999999999\n")  # no such process
    with open(os.path.join(bundle, "address"), "w") as f:
        f.write(os.path.join(config.state, "nowhere.sock"))
    assert manager.recover() == []
    assert not os.path.exists(bundle)
    assert not os.path.exists(os.path.dirname(bundle))  # the namespace's directory went too
    [(ns, topic, msg)] = published
    assert (ns, topic, msg.container_id, msg.exit_status) == ("ns1", "/tasks/exit", "c1", LOST_SHIM_EXIT_STATUS)


def test_recover_removes_a_bundle_without_runtime_record(manager):
    bundle = manager.bundle_path("default", "broken")
    os.makedirs(bundle)
    assert manager.recover() == []
    assert not os.path.exists(bundle)


def test_socket_paths_are_short_and_distinct(manager):
    a = manager.socket_path("default", "x" * 76)
    b = manager.socket_path("default", "y" * 76)
    assert a != b and len(a) < len(manager.socket_dir) + 25
    assert isinstance(ShimClient(a).socket_path, str)


def test_kill_of_a_task_deleted_meanwhile_is_not_found():
    """Tasks.Kill racing Tasks.Delete: the shim is shutting down (a broken pipe). containerd says
    NotFound ("process already finished"), which clients (skiffd's rm -f) take as done."""
    from types import SimpleNamespace

    from skiff.containerd.rpc import RpcError
    from skiff.containerd.services.tasks import TasksService

    class Client:
        def kill(self, signal, *, all=False, exec_id=""):
            raise P.ShimError(P.UNAVAILABLE, "shim /x: kill: Broken pipe")

    task = SimpleNamespace(id="c1", closed=True, client=Client())
    svc = object.__new__(TasksService)
    svc._task = lambda context, cid: ("skiff", task)
    req = SimpleNamespace(container_id="c1", exec_id="", all=True, signal=9)
    kill = TasksService.Kill.__wrapped__
    with pytest.raises(NotFound, match=r"kill task c1: process already finished"):
        kill(svc, req, None)
    task.closed = False          # not deleted: the shim's failure is reported as it is
    with pytest.raises(RpcError, match="Broken pipe") as ei:
        kill(svc, req, None)
    assert ei.value.code == "UNAVAILABLE"
