"""skiffd's containerd client and supervisor without a server: gRPC errors as API errors, event
decoding, request building, the ``containerd`` config key, and skiff-containerd honouring a
container's ``containerd.runc.v1.Options``."""

from __future__ import annotations

import asyncio
import os
import socket

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyPB

from skiff.containerd import protos
from skiff.containerd.config import Config
from skiff.containerd.tasks_core import choose_runtime
from skiff.daemon.api.errors import (
    ApiError,
    Conflict,
    InvalidParameter,
    NotFound,
    NotImplementedYet,
    Unavailable,
)
from skiff.daemon.config import ConfigError, DaemonConfig, merge, read_file
from skiff.daemon.containerd import supervisor
from skiff.daemon.containerd.client import Containerd, map_error, message_to_dict
from skiff.daemon.main import load_config
from skiff.images.errors import InvalidArgument
from skiff.images.metadata import AnyValue

api = protos.load()


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize("code,cls,status", [
    (grpc.StatusCode.NOT_FOUND, NotFound, 404),
    (grpc.StatusCode.ALREADY_EXISTS, Conflict, 409),
    (grpc.StatusCode.FAILED_PRECONDITION, Conflict, 409),
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidParameter, 400),
    (grpc.StatusCode.UNAVAILABLE, Unavailable, 503),
    (grpc.StatusCode.UNIMPLEMENTED, NotImplementedYet, 501),
    (grpc.StatusCode.INTERNAL, ApiError, 500),
    (grpc.StatusCode.UNKNOWN, ApiError, 500),
])
def test_grpc_errors_map_to_api_errors_keeping_the_message(code, cls, status):
    err = map_error(FakeRpcError(code, "container abc: not found"))
    assert type(err) is cls and err.status == status
    assert str(err) == "container abc: not found"


def test_unavailable_names_the_address():
    err = map_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused"), "/run/x/c.sock")
    assert str(err) == "containerd at /run/x/c.sock: connection refused"


def _client() -> Containerd:
    async def make() -> Containerd:
        return Containerd("/nonexistent/c.sock")     # no call made: the channel connects lazily
    return asyncio.run(make())


def test_task_exit_envelope_decodes_every_field():
    c = _client()
    ev = api.ev_task.TaskExit(container_id="c1", id="c1", pid=4242, exit_status=0)
    ev.exited_at.FromNanoseconds(1_700_000_000_123_456_789)
    env = api.events.Envelope(namespace="skiff", topic="/tasks/exit",
                              event=AnyPB(type_url="containerd.events.TaskExit", value=ev.SerializeToString()))
    env.timestamp.FromNanoseconds(1_700_000_000_200_000_000)
    out = c.decode_envelope(env)
    assert out.timestamp_ns == 1_700_000_000_200_000_000
    assert (out.namespace, out.topic) == ("skiff", "/tasks/exit")
    # exit_status 0 is present (defaults are kept), the timestamp is nanoseconds
    assert out.event == {"container_id": "c1", "id": "c1", "pid": 4242, "exit_status": 0,
                         "exited_at": 1_700_000_000_123_456_789}


def test_oom_and_create_events_decode():
    c = _client()
    oom = api.ev_task.TaskOOM(container_id="c2")
    env = api.events.Envelope(namespace="skiff", topic="/tasks/oom",
                              event=AnyPB(type_url="containerd.events.TaskOOM", value=oom.SerializeToString()))
    assert c.decode_envelope(env).event == {"container_id": "c2"}
    create = api.ev_task.TaskCreate(container_id="c3", bundle="/b", pid=7, io=api.ev_task.TaskIO(stdout="/o"))
    create.rootfs.add(type="overlay", source="overlay", options=["lowerdir=/l"])
    env = api.events.Envelope(namespace="skiff", topic="/tasks/create",
                              event=AnyPB(type_url="containerd.events.TaskCreate", value=create.SerializeToString()))
    ev = c.decode_envelope(env).event
    assert ev["pid"] == 7 and ev["io"]["stdout"] == "/o" and ev["io"]["terminal"] is False
    assert ev["rootfs"] == [{"type": "overlay", "source": "overlay", "target": "", "options": ["lowerdir=/l"]}]


def test_unknown_event_type_is_an_error():
    c = _client()
    with pytest.raises(ApiError, match="unknown type 'example.Nope'"):
        c.decode_any(AnyPB(type_url="example.Nope", value=b""))


def test_metrics_types_decode_when_first_needed():
    c = _client()
    c.decode_envelope(api.events.Envelope(namespace="skiff", topic="/tasks/oom", event=AnyPB(
        type_url="containerd.events.TaskOOM", value=api.ev_task.TaskOOM(container_id="c").SerializeToString())))
    assert "io.containerd.cgroups.v1.Metrics" not in c._types()   # events only, so far
    for pb in (api.cgroups_v1, api.cgroups_v2):
        m = pb.Metrics()
        m.pids.current = 3
        got = c.decode_any(AnyPB(type_url=f"types.containerd.io/{m.DESCRIPTOR.full_name}",
                                 value=m.SerializeToString()))
        assert type(got).DESCRIPTOR.full_name == m.DESCRIPTOR.full_name and got.pids.current == 3
    with pytest.raises(ApiError, match="unknown type 'example.Nope'"):
        c.decode_any(AnyPB(type_url="example.Nope", value=b""))


def test_message_to_dict_maps_and_any():
    img = api.images.Image(name="docker.io/library/busybox:latest", labels={"a": "b"},
                           target=api.descriptor.Descriptor(media_type="m", digest="sha256:00", size=3))
    d = message_to_dict(img)
    assert d["labels"] == {"a": "b"} and d["target"]["size"] == 3 and d["created_at"] == 0
    c = api.containers.Container(id="x", spec=AnyPB(type_url="t", value=b"{}"))
    assert message_to_dict(c)["spec"] == {"type_url": "t", "value": b"{}"}


def test_calls_on_a_dead_socket_raise_unavailable(tmp_path):
    async def go() -> None:
        with pytest.raises(Unavailable) as e:
            await Containerd.connect(str(tmp_path / "none.sock"))
        assert str(tmp_path / "none.sock") in str(e.value)
    asyncio.run(go())


# --- config and supervisor ------------------------------------------------------------------

def test_containerd_address_default_and_configured(tmp_path):
    cfg = DaemonConfig(exec_root="/run/x")
    assert cfg.containerd_address() == "/run/x/containerd.sock"
    assert merge({"containerd": "unix:///run/c.sock"}, {}).containerd_address() == "/run/c.sock"
    with pytest.raises(ConfigError, match="containerd: 'rel.sock': expected an absolute socket path"):
        merge({"containerd": "rel.sock"}, {}).validate()
    f = tmp_path / "daemon.json"
    f.write_text('{"containerd": "/run/y.sock"}')
    assert read_file(str(f)) == {"containerd": "/run/y.sock"}
    (tmp_path / "empty.json").write_text("")
    cfg2, _ = load_config(["--config-file", str(tmp_path / "empty.json"), "--containerd", "/run/z.sock"])
    assert cfg2.containerd == "/run/z.sock"
    with pytest.raises(ConfigError, match="specified both as a flag and in the configuration file: containerd"):
        load_config(["--config-file", str(f), "--containerd", "/run/z.sock"])


def test_answers_tells_a_listening_socket_from_a_stale_one(tmp_path):
    path = str(tmp_path / "s.sock")
    assert supervisor.answers(path) is False           # missing
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        assert supervisor.answers(path) is True
    finally:
        srv.close()
    assert os.path.exists(path) and supervisor.answers(path) is False   # stale: refused


def test_configured_containerd_that_does_not_answer_is_not_started(tmp_path):
    cfg = merge({"containerd": str(tmp_path / "c.sock"), "exec-root": str(tmp_path / "run"),
                 "data-root": str(tmp_path / "data")}, {})
    with pytest.raises(Unavailable, match=r"nothing answers there \(the configured containerd is not started"):
        supervisor.ensure_containerd_sync(cfg)
    assert not (tmp_path / "run").exists()


def test_paths_of_the_supervised_containerd():
    cfg = DaemonConfig(data_root="/var/lib/s", exec_root="/run/s")
    assert supervisor.paths(cfg) == {
        "root": "/var/lib/s/containerd", "state": "/run/s/containerd", "address": "/run/s/containerd.sock",
        "log": "/run/s/containerd.log", "pidfile": "/run/s/containerd/containerd.pid"}


# --- skiff-containerd: containerd.runc.v1.Options -------------------------------------------

@pytest.fixture
def ccfg(tmp_path):
    return Config(root=str(tmp_path / "root"), state=str(tmp_path / "state"),
                  address=str(tmp_path / "c.sock")).validate()


def _opts(**kw: object) -> AnyValue:
    return AnyValue("containerd.runc.v1.Options", api.runc_options.Options(**kw).SerializeToString())


def test_binary_name_of_an_unconfigured_runtime_runs_that_binary(ccfg, tmp_path):
    binary = tmp_path / "my-runtime"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    rt = choose_runtime(ccfg, "io.containerd.runc.v2", "skiff", _opts(binary_name=str(binary)))
    assert rt.binary == str(binary) and rt.args == []
    assert rt.name.startswith("binary-")
    assert rt.root == os.path.join(ccfg.state, rt.name, "skiff")
    # the same binary always gets the same root
    assert choose_runtime(ccfg, "io.containerd.runc.v2", "skiff", _opts(binary_name=str(binary))).root == rt.root


def test_binary_name_of_a_configured_runtime_uses_its_settings(ccfg):
    crun = ccfg.runtimes["crun"].resolved_binary()
    if not os.path.isabs(crun):
        pytest.fail("crun is installed on this machine (see DEVELOPERS); cannot find it")
    rt = choose_runtime(ccfg, "io.containerd.runc.v2", "skiff", _opts(binary_name=crun))
    assert rt.name == "crun" and rt.binary.endswith("runtimes/crun.sh")   # the cgroup2-hiding wrapper
    assert rt.root == os.path.join(ccfg.state, "crun", "skiff")


def test_root_and_systemd_cgroup_options(ccfg):
    rt = choose_runtime(ccfg, "runc", "skiff", _opts(root="/run/custom", systemd_cgroup=True))
    assert rt.name == "runc" and rt.root == "/run/custom" and rt.args == ["--systemd-cgroup"]


def test_empty_options_change_nothing(ccfg):
    assert choose_runtime(ccfg, "runc", "ns", AnyValue("", b"")) == choose_runtime(ccfg, "runc", "ns")


@pytest.mark.parametrize("options,message", [
    (AnyValue("containerd.runhcs.v1.Options", b""), "runtime options of type 'containerd.runhcs.v1.Options' "
                                                   "are not supported"),
    (AnyValue("containerd.runc.v1.Options", b"\xff\xff"), "not a valid containerd.runc.v1.Options"),
    (_opts(criu_path="/usr/sbin/criu"), "runtime option criu_path is not supported"),
    (_opts(no_pivot_root=True), "runtime option no_pivot_root is not supported"),
    (_opts(binary_name="no-such-runtime-binary"), "runtime binary 'no-such-runtime-binary': not found in PATH"),
    (_opts(binary_name="/nonexistent/runc"), "runtime binary /nonexistent/runc: No such file or directory"),
])
def test_bad_runtime_options_are_refused(ccfg, options, message):
    with pytest.raises(InvalidArgument) as e:
        choose_runtime(ccfg, "io.containerd.runc.v2", "skiff", options)
    assert message in str(e.value)


def test_image_list_is_kept_while_nothing_changed_it(tmp_path):
    """list_images asks containerd again after any image change skiffd makes or hears of, and
    always when the event monitor is not subscribed."""
    async def main() -> None:
        cd = Containerd(f"unix://{tmp_path}/none.sock", "skiff")
        asked: list[str] = []

        async def call(method, request, lease=""):
            asked.append(type(request).__name__)
            if type(request).__name__ == "ListImagesRequest":
                return api.images.ListImagesResponse(images=[api.images.Image(
                    name=f"x:{len(asked)}", target=api.descriptor.Descriptor(digest="sha256:" + "a" * 64))])
            return api.images.CreateImageResponse(image=api.images.Image(name="y"))
        cd._call = call   # type: ignore[method-assign]
        try:
            first = await cd.list_images()
            assert [r.name for r in await cd.list_images()] != [r.name for r in first]   # not live: asked again
            cd.image_events_live = True
            kept = await cd.list_images()
            assert await cd.list_images() == kept and asked.count("ListImagesRequest") == 3
            await cd.create_image("y", kept[0].target)             # our own change
            assert await cd.list_images() != kept
            again = await cd.list_images()
            cd.images_changed()                                     # an event heard
            assert await cd.list_images() != again
            assert await cd.list_images(["name==x"]) and asked.count("ListImagesRequest") == 6   # filtered: always asked
        finally:
            await cd.close()

    asyncio.run(main())
