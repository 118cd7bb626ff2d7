"""skiff-containerd's gRPC services, in process, over a real Unix socket, through the
generated containerd 1.6 stubs (the same wire a Go client speaks). No root needed: the
native snapshotter and plain directories only."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import threading

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyPB
from google.protobuf.empty_pb2 import Empty
from google.protobuf.field_mask_pb2 import FieldMask

from skiff.containerd import protos
from skiff.containerd.config import Config
from skiff.containerd.server import Server, ServerError
from skiff.containerd.services.tasks import CHECKPOINT_MESSAGE

api = protos.load()


class Client:
    """Stubs of every service, with the namespace (and lease) headers containerd's client sends."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(f"unix:{address}")
        for name in ("version", "namespaces", "containers", "images", "content", "snapshots", "tasks",
                     "events", "leases", "introspection", "diff"):
            grpc_mod = getattr(api, name + "_grpc")
            stub = [v for k, v in vars(grpc_mod).items() if k.endswith("Stub")][0]
            setattr(self, name, stub(self.channel))

    @staticmethod
    def md(ns: str | None = "default", lease: str | None = None) -> list[tuple[str, str]]:
        out = []
        if ns is not None:
            out.append(("containerd-namespace", ns))
        if lease is not None:
            out.append(("containerd-lease", lease))
        return out

    def close(self) -> None:
        self.channel.close()


def make_config(base, name: str = "", address: str | None = None, state: str | None = None) -> Config:
    """A config under ``base`` (the socket owned by whoever runs the tests)."""
    return Config(root=str(base / f"root{name}"), state=state or str(base / f"state{name}"),
                  address=address or str(base / f"c{name}.sock"), snapshotter="native",
                  uid=os.geteuid(), gid=os.getegid()).validate()


@pytest.fixture
def server(tmp_path):
    cfg = make_config(tmp_path)
    srv = Server(cfg)
    srv.start()
    yield srv
    srv.stop(grace=1)


@pytest.fixture
def client(server):
    c = Client(server.config.address)
    yield c
    c.close()


def code_of(excinfo) -> grpc.StatusCode:
    return excinfo.value.code()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_blob(client: Client, data: bytes, ref: str = "ref1", ns: str = "default", lease: str | None = None,
               labels: dict | None = None, chunk: int = 7):
    """The ingest protocol as containerd's remote writer speaks it: STAT, WRITEs, COMMIT."""
    W = api.content.WriteAction
    reqs = [api.content.WriteContentRequest(action=W.Value("STAT"), ref=ref, total=len(data), expected=sha(data))]
    off = 0
    for i in range(0, len(data), chunk):
        reqs.append(api.content.WriteContentRequest(action=W.Value("WRITE"), offset=off, data=data[i:i + chunk]))
        off += len(data[i:i + chunk])
    reqs.append(api.content.WriteContentRequest(action=W.Value("COMMIT"), offset=off, total=len(data),
                                                expected=sha(data), labels=labels or {}))
    return list(client.content.Write(iter(reqs), metadata=client.md(ns, lease)))


# --- the server itself --------------------------------------------------------------------

def test_socket_is_0660_and_pid_file_holds_our_pid(server):
    st = os.stat(server.config.address)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    with open(server.config.pid_file) as f:
        assert f.read().strip() == str(os.getpid())


def test_second_server_on_same_pid_file_is_refused(server, tmp_path):
    cfg = make_config(tmp_path, "2", state=server.config.state)
    with pytest.raises(ServerError, match="locked by a running skiff-containerd"):
        Server(cfg).start()
    assert not os.path.exists(tmp_path / "c2.sock")


def test_live_socket_is_not_taken_over(server, tmp_path):
    cfg = make_config(tmp_path, "2", address=server.config.address)
    with pytest.raises(ServerError, match="another server is listening"):
        Server(cfg).start()
    assert stat.S_ISSOCK(os.stat(server.config.address).st_mode)  # still there, still ours


def test_stale_socket_and_non_socket(tmp_path):
    import socket
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # a socket file nobody listens on
    cfg = make_config(tmp_path, address=path)
    srv = Server(cfg)
    srv.start()
    try:
        c = Client(path)
        assert c.version.Version(Empty()).version.startswith("v1.6.")
        c.close()
    finally:
        srv.stop(grace=1)
    assert not os.path.exists(path) and not os.path.exists(cfg.pid_file)
    regular = tmp_path / "file"
    regular.write_text("x")
    cfg2 = make_config(tmp_path, address=str(regular))
    with pytest.raises(ServerError, match="not a socket"):
        Server(cfg2).start()
    assert regular.read_text() == "x"


def test_version_and_server_uuid_persist(tmp_path):
    cfg = make_config(tmp_path)
    uuids = []
    for _ in range(2):
        srv = Server(cfg)
        srv.start()
        c = Client(cfg.address)
        v = c.version.Version(Empty())
        uuids.append(c.introspection.Server(Empty()).uuid)
        c.close()
        srv.stop(grace=1)
        assert v.version == "v1.6.0+skiff.0.1.0" and v.revision == "skiff-containerd-0.1.0"
    assert uuids[0] == uuids[1] and len(uuids[0]) == 36


def test_namespace_header_is_required_and_validated(client):
    with pytest.raises(grpc.RpcError) as e:
        client.images.List(api.images.ListImagesRequest(), metadata=client.md(None))
    assert code_of(e) == grpc.StatusCode.FAILED_PRECONDITION
    assert "namespace is required" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        client.images.List(api.images.ListImagesRequest(), metadata=client.md("bad/ns"))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT


def test_tasks_errors_without_a_task(client):
    assert list(client.tasks.List(api.tasks.ListTasksRequest(), metadata=client.md()).tasks) == []
    for call, req, code in (
            (client.tasks.Create, api.tasks.CreateTaskRequest(container_id="c"), grpc.StatusCode.NOT_FOUND),
            (client.tasks.Wait, api.tasks.WaitRequest(container_id="c"), grpc.StatusCode.NOT_FOUND),
            (client.tasks.Start, api.tasks.StartRequest(container_id=""), grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as e:
            call(req, metadata=client.md())
        assert code_of(e) == code, e.value.details()
    assert list(client.tasks.Metrics(api.tasks.MetricsRequest(filters=["id==c"]), metadata=client.md()).metrics) == []
    with pytest.raises(grpc.RpcError) as e:
        client.tasks.Metrics(api.tasks.MetricsRequest(filters=["id=="]), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        client.tasks.Checkpoint(api.tasks.CheckpointTaskRequest(container_id="c"), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.UNIMPLEMENTED
    assert CHECKPOINT_MESSAGE in e.value.details()


def test_health_check(client):
    check = client.channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
    assert check(b"") == b"\x08\x01"
    name = b"containerd.services.images.v1.Images"
    assert check(b"\x0a" + bytes([len(name)]) + name) == b"\x08\x01"
    with pytest.raises(grpc.RpcError) as e:
        check(b"\x0a\x03foo")
    assert code_of(e) == grpc.StatusCode.NOT_FOUND


# --- namespaces ---------------------------------------------------------------------------

def test_namespaces_crud_labels_and_delete_rules(client):
    N = api.namespaces
    client.namespaces.Create(N.CreateNamespaceRequest(namespace=N.Namespace(name="ns1", labels={"a": "1"})),
                             metadata=client.md())
    with pytest.raises(grpc.RpcError) as e:
        client.namespaces.Create(N.CreateNamespaceRequest(namespace=N.Namespace(name="ns1")), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.ALREADY_EXISTS
    got = client.namespaces.Get(N.GetNamespaceRequest(name="ns1"), metadata=client.md())
    assert dict(got.namespace.labels) == {"a": "1"}
    client.namespaces.Update(N.UpdateNamespaceRequest(namespace=N.Namespace(name="ns1", labels={"b": "2"}),
                                                      update_mask=FieldMask(paths=["labels.b"])),
                             metadata=client.md())
    client.namespaces.Update(N.UpdateNamespaceRequest(namespace=N.Namespace(name="ns1"),
                                                      update_mask=FieldMask(paths=["labels.a"])),
                             metadata=client.md())
    listed = client.namespaces.List(N.ListNamespacesRequest(), metadata=client.md())
    assert [(n.name, dict(n.labels)) for n in listed.namespaces] == [("ns1", {"b": "2"})]
    with pytest.raises(grpc.RpcError) as e:
        client.namespaces.Update(N.UpdateNamespaceRequest(namespace=N.Namespace(name="ns1"),
                                                          update_mask=FieldMask(paths=["name"])),
                                 metadata=client.md())
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    # a namespace with an image (or a snapshot) cannot be deleted
    write_blob(client, b"x" * 10, ns="ns1")
    client.images.Create(api.images.CreateImageRequest(image=api.images.Image(
        name="img", target=api.descriptor.Descriptor(media_type="application/octet-stream", digest=sha(b"x" * 10),
                                                     size=10))), metadata=client.md("ns1"))
    with pytest.raises(grpc.RpcError) as e:
        client.namespaces.Delete(N.DeleteNamespaceRequest(name="ns1"), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.FAILED_PRECONDITION
    assert "must be empty" in e.value.details() and "images" in e.value.details()
    client.images.Delete(api.images.DeleteImageRequest(name="img", sync=True), metadata=client.md("ns1"))
    client.snapshots.Prepare(api.snapshots.PrepareSnapshotRequest(snapshotter="native", key="k"),
                             metadata=client.md("ns1"))
    with pytest.raises(grpc.RpcError) as e:
        client.namespaces.Delete(N.DeleteNamespaceRequest(name="ns1"), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.FAILED_PRECONDITION
    assert 'snapshots on "native" snapshotter' in e.value.details()
    client.snapshots.Remove(api.snapshots.RemoveSnapshotRequest(snapshotter="native", key="k"),
                            metadata=client.md("ns1"))
    client.namespaces.Delete(N.DeleteNamespaceRequest(name="ns1"), metadata=client.md())
    with pytest.raises(grpc.RpcError) as e:
        client.namespaces.Get(N.GetNamespaceRequest(name="ns1"), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.NOT_FOUND


# --- content ------------------------------------------------------------------------------

def test_content_write_info_read_list_update_delete(client):
    data = bytes(range(256)) * 50
    resps = write_blob(client, data, labels={"l": "v"}, chunk=4096)
    W = api.content.WriteAction
    assert resps[0].action == W.Value("STAT") and resps[0].offset == 0 and resps[0].total == len(data)
    assert resps[-1].action == W.Value("COMMIT") and resps[-1].offset == len(data)
    assert resps[-1].digest == sha(data)
    info = client.content.Info(api.content.InfoRequest(digest=sha(data)), metadata=client.md()).info
    assert (info.digest, info.size, dict(info.labels)) == (sha(data), len(data), {"l": "v"})
    # ranged and whole reads, in order, with offsets
    parts = list(client.content.Read(api.content.ReadContentRequest(digest=sha(data), offset=100, size=1000),
                                     metadata=client.md()))
    assert b"".join(p.data for p in parts) == data[100:1100] and parts[0].offset == 100
    assert b"".join(p.data for p in client.content.Read(api.content.ReadContentRequest(digest=sha(data)),
                                                        metadata=client.md())) == data
    with pytest.raises(grpc.RpcError) as e:
        list(client.content.Read(api.content.ReadContentRequest(digest=sha(data), offset=len(data) + 1),
                                 metadata=client.md()))
    assert code_of(e) == grpc.StatusCode.OUT_OF_RANGE
    # labels: set one key, remove another, with a field mask
    client.content.Update(api.content.UpdateRequest(info=api.content.Info(digest=sha(data), labels={"m": "w"}),
                                                    update_mask=FieldMask(paths=["labels.m", "labels.l"])),
                          metadata=client.md())
    listed = [i for r in client.content.List(api.content.ListContentRequest(), metadata=client.md()) for i in r.info]
    assert [(i.digest, dict(i.labels)) for i in listed] == [(sha(data), {"m": "w"})]
    assert [i for r in client.content.List(api.content.ListContentRequest(filters=["labels.m==x"]),
                                           metadata=client.md()) for i in r.info] == []
    with pytest.raises(grpc.RpcError) as e:
        client.content.Update(api.content.UpdateRequest(info=api.content.Info(digest=sha(data)),
                                                        update_mask=FieldMask(paths=["size"])),
                              metadata=client.md())
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    # namespaces are separate
    with pytest.raises(grpc.RpcError) as e:
        client.content.Info(api.content.InfoRequest(digest=sha(data)), metadata=client.md("other"))
    assert code_of(e) == grpc.StatusCode.NOT_FOUND
    client.content.Delete(api.content.DeleteContentRequest(digest=sha(data)), metadata=client.md())
    with pytest.raises(grpc.RpcError) as e:
        client.content.Info(api.content.InfoRequest(digest=sha(data)), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        client.content.Info(api.content.InfoRequest(digest="sha256:xyz"), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT


def test_content_write_cancelled_by_the_client_leaves_a_resumable_ingest(client, caplog):
    W = api.content.WriteAction
    hold = threading.Event()

    def requests():
        yield api.content.WriteContentRequest(action=W.Value("STAT"), ref="half", total=10)
        yield api.content.WriteContentRequest(action=W.Value("WRITE"), offset=0, data=b"12345")
        hold.wait(30)  # the client goes away before sending the rest

    call = client.content.Write(requests(), metadata=client.md())
    got = [next(call), next(call)]
    assert [r.offset for r in got] == [0, 5]
    call.cancel()
    hold.set()
    st = client.content.Status(api.content.StatusRequest(ref="half"), metadata=client.md()).status
    assert (st.offset, st.total) == (5, 10)
    assert "internal error" not in caplog.text


def test_content_write_existing_blob_is_already_exists(client):
    write_blob(client, b"hello")
    with pytest.raises(grpc.RpcError) as e:
        write_blob(client, b"hello", ref="again")
    assert code_of(e) == grpc.StatusCode.ALREADY_EXISTS
    st = client.content.ListStatuses(api.content.ListStatusesRequest(), metadata=client.md())
    assert list(st.statuses) == []


def test_content_ingest_resume_status_and_abort(client):
    W = api.content.WriteAction
    data = b"0123456789" * 10
    first = [api.content.WriteContentRequest(action=W.Value("STAT"), ref="r", total=len(data), expected=sha(data)),
             api.content.WriteContentRequest(action=W.Value("WRITE"), offset=0, data=data[:40])]
    out = list(client.content.Write(iter(first), metadata=client.md()))
    assert out[-1].offset == 40
    st = client.content.Status(api.content.StatusRequest(ref="r"), metadata=client.md()).status
    assert (st.ref, st.offset, st.total, st.expected) == ("r", 40, len(data), sha(data))
    # resume at the offset the STAT reports; a write at the wrong offset is OUT_OF_RANGE
    with pytest.raises(grpc.RpcError) as e:
        list(client.content.Write(iter([
            api.content.WriteContentRequest(action=W.Value("STAT"), ref="r"),
            api.content.WriteContentRequest(action=W.Value("WRITE"), offset=10, data=b"x")]),
            metadata=client.md()))
    assert code_of(e) == grpc.StatusCode.OUT_OF_RANGE
    out = list(client.content.Write(iter([
        api.content.WriteContentRequest(action=W.Value("STAT"), ref="r"),
        api.content.WriteContentRequest(action=W.Value("COMMIT"), offset=40, data=data[40:], total=len(data),
                                        expected=sha(data))]), metadata=client.md()))
    assert out[0].offset == 40 and out[0].digest == sha(data[:40])
    assert out[1].digest == sha(data)
    # a wrong digest at commit keeps the ingest (FAILED_PRECONDITION), abort removes it
    bad = b"abc"
    with pytest.raises(grpc.RpcError) as e:
        list(client.content.Write(iter([
            api.content.WriteContentRequest(action=W.Value("STAT"), ref="bad"),
            api.content.WriteContentRequest(action=W.Value("COMMIT"), data=bad, expected=sha(b"abd"))]),
            metadata=client.md()))
    assert code_of(e) == grpc.StatusCode.FAILED_PRECONDITION
    refs = [s.ref for s in client.content.ListStatuses(api.content.ListStatusesRequest(), metadata=client.md()).statuses]
    assert refs == ["bad"]
    client.content.Abort(api.content.AbortRequest(ref="bad"), metadata=client.md())
    with pytest.raises(grpc.RpcError) as e:
        client.content.Status(api.content.StatusRequest(ref="bad"), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        list(client.content.Write(iter([api.content.WriteContentRequest(action=W.Value("STAT"))]),
                                  metadata=client.md()))
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert "first message must have a reference" in e.value.details()


# --- images, containers, leases -------------------------------------------------------------

def test_images_crud_with_field_masks_and_filters(client):
    Im = api.images
    write_blob(client, b"manifest")
    desc = api.descriptor.Descriptor(media_type="application/vnd.oci.image.manifest.v1+json", digest=sha(b"manifest"),
                                     size=8)
    created = client.images.Create(Im.CreateImageRequest(image=Im.Image(name="a:1", target=desc, labels={"x": "1"})),
                                   metadata=client.md()).image
    assert created.name == "a:1" and created.target.digest == desc.digest and created.created_at.seconds > 0
    with pytest.raises(grpc.RpcError) as e:
        client.images.Create(Im.CreateImageRequest(image=Im.Image(name="a:1", target=desc)), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as e:
        client.images.Create(Im.CreateImageRequest(image=Im.Image(name="", target=desc)), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    client.images.Create(Im.CreateImageRequest(image=Im.Image(name="b:2", target=desc)), metadata=client.md())
    up = client.images.Update(Im.UpdateImageRequest(image=Im.Image(name="a:1", labels={"y": "2"}),
                                                   update_mask=FieldMask(paths=["labels.y"])),
                              metadata=client.md()).image
    assert dict(up.labels) == {"x": "1", "y": "2"} and up.target.digest == desc.digest
    names = [i.name for i in client.images.List(Im.ListImagesRequest(filters=["labels.y==2"]),
                                                metadata=client.md()).images]
    assert names == ["a:1"]
    assert [i.name for i in client.images.List(Im.ListImagesRequest(filters=['name~="^b"']),
                                               metadata=client.md()).images] == ["b:2"]
    with pytest.raises(grpc.RpcError) as e:
        client.images.Update(Im.UpdateImageRequest(image=Im.Image(name="zzz", target=desc)), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.NOT_FOUND
    client.images.Delete(Im.DeleteImageRequest(name="a:1"), metadata=client.md())
    with pytest.raises(grpc.RpcError) as e:
        client.images.Get(Im.GetImageRequest(name="a:1"), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.NOT_FOUND


def spec_any() -> AnyPB:
    return AnyPB(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec",
                 value=json.dumps({"ociVersion": "1.0.2"}).encode())


def test_containers_crud_spec_extensions_and_stream(client):
    C = api.containers
    c = C.Container(id="c1", image="img", snapshotter="native", snapshot_key="c1", labels={"a": "1"},
                    runtime=C.Container.Runtime(name="io.containerd.runc.v2"), spec=spec_any())
    c.extensions["ext"].CopyFrom(AnyPB(type_url="x/y", value=b"\x01\x02"))
    got = client.containers.Create(C.CreateContainerRequest(container=c), metadata=client.md()).container
    assert got.id == "c1" and got.spec.value == spec_any().value and got.extensions["ext"].value == b"\x01\x02"
    with pytest.raises(grpc.RpcError) as e:
        client.containers.Create(C.CreateContainerRequest(container=c), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.ALREADY_EXISTS
    nospec = C.Container(id="c2", runtime=C.Container.Runtime(name="r"))
    with pytest.raises(grpc.RpcError) as e:
        client.containers.Create(C.CreateContainerRequest(container=nospec), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    upd = C.Container(id="c1", labels={"b": "2"})
    up = client.containers.Update(C.UpdateContainerRequest(container=upd, update_mask=FieldMask(paths=["labels"])),
                                  metadata=client.md()).container
    assert dict(up.labels) == {"b": "2"} and up.image == "img"
    with pytest.raises(grpc.RpcError) as e:
        client.containers.Update(C.UpdateContainerRequest(
            container=C.Container(id="c1", runtime=C.Container.Runtime(name="other")),
            update_mask=FieldMask(paths=["labels"])), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT  # the runtime name is immutable
    streamed = [m.container.id for m in client.containers.ListStream(C.ListContainersRequest(), metadata=client.md())]
    assert streamed == ["c1"]
    assert [x.id for x in client.containers.List(C.ListContainersRequest(filters=["labels.b==2"]),
                                                 metadata=client.md()).containers] == ["c1"]
    assert list(client.containers.List(C.ListContainersRequest(), metadata=client.md("other")).containers) == []
    client.containers.Delete(C.DeleteContainerRequest(id="c1"), metadata=client.md())
    with pytest.raises(grpc.RpcError) as e:
        client.containers.Get(C.GetContainerRequest(id="c1"), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.NOT_FOUND


def test_leases_resources_and_gc_on_sync_delete(client, server):
    L = api.leases
    lease = client.leases.Create(L.CreateRequest(id="l1", labels={"k": "v"}), metadata=client.md()).lease
    assert lease.id == "l1" and dict(lease.labels) == {"k": "v"}
    auto = client.leases.Create(L.CreateRequest(), metadata=client.md()).lease
    assert auto.id
    # content written under the lease is held by it, and goes when the lease goes
    write_blob(client, b"leased", lease="l1")
    res = client.leases.ListResources(L.ListResourcesRequest(id="l1"), metadata=client.md()).resources
    assert [(r.type, r.id) for r in res] == [("content", sha(b"leased"))]
    client.leases.AddResource(L.AddResourceRequest(id="l1", resource=L.Resource(id="snap", type="snapshots/native")),
                              metadata=client.md())
    with pytest.raises(grpc.RpcError) as e:
        client.leases.AddResource(L.AddResourceRequest(id="l1", resource=L.Resource(id="x", type="bogus")),
                                  metadata=client.md())
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    client.leases.DeleteResource(L.DeleteResourceRequest(id="l1", resource=L.Resource(id="snap",
                                                                                       type="snapshots/native")),
                                 metadata=client.md())
    ids = sorted(x.id for x in client.leases.List(L.ListRequest(), metadata=client.md()).leases)
    assert ids == sorted(["l1", auto.id])
    assert [x.id for x in client.leases.List(L.ListRequest(filters=["labels.k==v"]), metadata=client.md()).leases] == ["l1"]
    client.leases.Delete(L.DeleteRequest(id="l1", sync=True), metadata=client.md())
    with pytest.raises(grpc.RpcError) as e:
        client.content.Info(api.content.InfoRequest(digest=sha(b"leased")), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        client.leases.Delete(L.DeleteRequest(id="l1"), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.NOT_FOUND


def test_lease_ids_of_containerds_random_form_work_end_to_end(client):
    """containerd's client makes lease ids like '779406753-nrY-' (leases.WithRandomID)."""
    for lid in ("779406753-nrY-", "12-_abc", "-x", "a--b"):
        got = client.leases.Create(api.leases.CreateRequest(id=lid), metadata=client.md()).lease
        assert got.id == lid
        write_blob(client, lid.encode(), ref=lid, lease=lid)  # the lease header carries it too
        res = client.leases.ListResources(api.leases.ListResourcesRequest(id=lid), metadata=client.md()).resources
        assert [(r.type, r.id) for r in res] == [("content", sha(lid.encode()))]
    listed = sorted(x.id for x in client.leases.List(api.leases.ListRequest(), metadata=client.md()).leases)
    assert listed == sorted(["779406753-nrY-", "12-_abc", "-x", "a--b"])
    for lid in listed:
        client.leases.Delete(api.leases.DeleteRequest(id=lid), metadata=client.md())


def test_metadata_accepts_containerds_lease_ids(tmp_path):
    from skiff.images.metadata import MetaDB
    db = MetaDB(tmp_path / "m.db")
    try:
        with db.transaction() as tx:
            assert tx.create_lease("default", "779406753-nrY-").id == "779406753-nrY-"
    finally:
        db.close()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_snapshots_namespaced_prepare_commit_view_usage_and_diff_apply(client, tmp_path):
    S = api.snapshots
    md = client.md()
    # a layer applied through the Diff service into a prepared snapshot, as ctr's unpack does it
    tar = layer_tar({"hello.txt": b"hello world\n"})
    blob = gzip.compress(tar, mtime=0)
    write_blob(client, blob, ref="layer", chunk=1 << 20)
    mounts = client.snapshots.Prepare(S.PrepareSnapshotRequest(snapshotter="native", key="extract 1",
                                                               labels={"l": "1"}), metadata=md).mounts
    assert len(mounts) == 1 and mounts[0].type == "bind"
    applied = client.diff.Apply(api.diff.ApplyRequest(
        diff=api.descriptor.Descriptor(media_type="application/vnd.oci.image.layer.v1.tar+gzip",
                                       digest=sha(blob), size=len(blob)), mounts=mounts), metadata=md).applied
    assert applied.digest == sha(tar) and applied.size == len(tar)
    assert applied.media_type == "application/vnd.oci.image.layer.v1.tar"
    with open(os.path.join(mounts[0].source, "hello.txt"), "rb") as f:
        assert f.read() == b"hello world\n"
    client.snapshots.Commit(S.CommitSnapshotRequest(snapshotter="native", name="layer1", key="extract 1"), metadata=md)
    info = client.snapshots.Stat(S.StatSnapshotRequest(snapshotter="native", key="layer1"), metadata=md).info
    assert (info.name, info.parent, info.kind, dict(info.labels)) == ("layer1", "", S.Kind.Value("COMMITTED"), {})
    view = client.snapshots.View(S.ViewSnapshotRequest(snapshotter="native", key="v", parent="layer1"),
                                 metadata=md).mounts
    assert "ro" in view[0].options
    client.snapshots.Prepare(S.PrepareSnapshotRequest(snapshotter="native", key="rw", parent="layer1"), metadata=md)
    usage = client.snapshots.Usage(S.UsageRequest(snapshotter="native", key="layer1"), metadata=md)
    assert usage.inodes >= 1 and usage.size > 0
    listed = sorted((i.name, i.parent, i.kind) for r in client.snapshots.List(
        S.ListSnapshotsRequest(snapshotter="native"), metadata=md) for i in r.info)
    assert listed == [("layer1", "", 3), ("rw", "layer1", 2), ("v", "layer1", 1)]
    filtered = [i.name for r in client.snapshots.List(S.ListSnapshotsRequest(snapshotter="native",
                                                                             filters=["kind==active"]),
                                                      metadata=md) for i in r.info]
    assert filtered == ["rw"]
    # another namespace sees none of them, and may use the same keys
    assert [i for r in client.snapshots.List(S.ListSnapshotsRequest(snapshotter="native"),
                                             metadata=client.md("other")) for i in r.info] == []
    client.snapshots.Prepare(S.PrepareSnapshotRequest(snapshotter="native", key="rw"), metadata=client.md("other"))
    names = [n.name for n in client.namespaces.List(api.namespaces.ListNamespacesRequest(), metadata=md).namespaces]
    assert "other" in names  # a namespace exists from its first object on, a snapshot included
    with pytest.raises(grpc.RpcError) as e:
        client.snapshots.Prepare(S.PrepareSnapshotRequest(snapshotter="native", key="x", parent="layer1"),
                                 metadata=client.md("other"))
    assert code_of(e) == grpc.StatusCode.NOT_FOUND
    # labels update with a mask; a parent with children cannot go
    up = client.snapshots.Update(S.UpdateSnapshotRequest(snapshotter="native", info=S.Info(name="rw", labels={"z": "1"}),
                                                         update_mask=FieldMask(paths=["labels.z"])), metadata=md).info
    assert dict(up.labels) == {"z": "1"} and up.parent == "layer1"
    with pytest.raises(grpc.RpcError) as e:
        client.snapshots.Remove(S.RemoveSnapshotRequest(snapshotter="native", key="layer1"), metadata=md)
    assert code_of(e) == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        client.snapshots.List(S.ListSnapshotsRequest(snapshotter="btrfs"), metadata=md).next()
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    assert "snapshotter not loaded: btrfs" in e.value.details()
    # Diff: the changes of "rw" over its parent, as a gzip layer in the content store
    rw = client.snapshots.Mounts(S.MountsRequest(snapshotter="native", key="rw"), metadata=md).mounts
    with open(os.path.join(rw[0].source, "new.txt"), "wb") as f:
        f.write(b"new\n")
    d = client.diff.Diff(api.diff.DiffRequest(left=view, right=rw, media_type=""), metadata=md).diff
    assert d.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    blob2 = b"".join(p.data for p in client.content.Read(api.content.ReadContentRequest(digest=d.digest), metadata=md))
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob2))) as t:
        assert t.getnames() == ["new.txt"]
    info2 = client.content.Info(api.content.InfoRequest(digest=d.digest), metadata=md).info
    assert info2.labels["containerd.io/uncompressed"] == sha(gzip.decompress(blob2))
    for key in ("v", "rw", "layer1"):
        client.snapshots.Remove(S.RemoveSnapshotRequest(snapshotter="native", key=key), metadata=md)
    assert isinstance(client.snapshots.Cleanup(S.CleanupRequest(snapshotter="native"), metadata=md), Empty)
    with pytest.raises(grpc.RpcError) as e:
        client.snapshots.Stat(S.StatSnapshotRequest(snapshotter="native", key="layer1"), metadata=md)
    assert code_of(e) == grpc.StatusCode.NOT_FOUND


def test_snapshots_under_a_lease_survive_gc_until_the_lease_goes(client):
    S = api.snapshots
    client.leases.Create(api.leases.CreateRequest(id="L"), metadata=client.md())
    client.snapshots.Prepare(S.PrepareSnapshotRequest(snapshotter="native", key="k"), metadata=client.md(lease="L"))
    client.snapshots.Commit(S.CommitSnapshotRequest(snapshotter="native", name="n", key="k"),
                            metadata=client.md(lease="L"))
    res = client.leases.ListResources(api.leases.ListResourcesRequest(id="L"), metadata=client.md()).resources
    assert [(r.type, r.id) for r in res] == [("snapshots/native", "n")]
    # a collection (the sync delete of another lease runs one) keeps the leased snapshot
    client.leases.Create(api.leases.CreateRequest(id="M"), metadata=client.md())
    client.leases.Delete(api.leases.DeleteRequest(id="M", sync=True), metadata=client.md())
    assert client.snapshots.Stat(S.StatSnapshotRequest(snapshotter="native", key="n"), metadata=client.md()).info.name == "n"
    client.leases.Delete(api.leases.DeleteRequest(id="L", sync=True), metadata=client.md())
    with pytest.raises(grpc.RpcError) as e:
        client.snapshots.Stat(S.StatSnapshotRequest(snapshotter="native", key="n"), metadata=client.md())
    assert code_of(e) == grpc.StatusCode.NOT_FOUND


# --- events and introspection ---------------------------------------------------------------

class Collector:
    """Reads a subscription in a thread until ``count`` envelopes arrived."""

    def __init__(self, client: Client, filters: list[str], count: int) -> None:
        self.call = client.events.Subscribe(api.events.SubscribeRequest(filters=filters), metadata=client.md())
        self.got: list = []
        self.count = count
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            for env in self.call:
                self.got.append(env)
                if len(self.got) >= self.count:
                    break
        except grpc.RpcError:
            pass  # cancelled by the test
        self.done.set()

    def finish(self) -> list:
        assert self.done.wait(30), f"only {len(self.got)} of {self.count} events arrived"
        self.call.cancel()
        self.thread.join()
        return self.got


def decode(env):
    for m in api.event_modules():
        for cls in vars(m).values():
            if hasattr(cls, "DESCRIPTOR") and getattr(cls.DESCRIPTOR, "full_name", None) == env.event.type_url:
                msg = cls()
                msg.ParseFromString(env.event.value)
                return msg
    raise AssertionError(f"unknown event type {env.event.type_url}")


def wait_for_subscribers(server, n: int) -> None:
    import time
    deadline = time.monotonic() + 30
    while len(server.core.exchange._subs) < n:
        assert time.monotonic() < deadline, "subscription did not register"
        time.sleep(0.01)


def test_events_published_by_services_and_filters(client, server):
    everything = Collector(client, [], 4)
    only_images = Collector(client, ['topic~="/images/"'], 1)
    exact = Collector(client, ['topic=="/containers/delete"', 'namespace==other,topic=="/containers/create"'], 1)
    wait_for_subscribers(server, 3)
    write_blob(client, b"m")
    desc = api.descriptor.Descriptor(media_type="application/octet-stream", digest=sha(b"m"), size=1)
    client.images.Create(api.images.CreateImageRequest(image=api.images.Image(name="i", target=desc, labels={"a": "b"})),
                         metadata=client.md())
    C = api.containers
    client.containers.Create(C.CreateContainerRequest(container=C.Container(
        id="c", runtime=C.Container.Runtime(name="r"), spec=spec_any())), metadata=client.md())
    client.containers.Delete(C.DeleteContainerRequest(id="c"), metadata=client.md())
    client.events.Publish(api.events.PublishRequest(topic="/custom/thing", event=AnyPB(type_url="x.Y", value=b"")),
                          metadata=client.md("ns2"))
    got = everything.finish()
    assert [(e.namespace, e.topic) for e in got] == [("default", "/images/create"), ("default", "/containers/create"),
                                                     ("default", "/containers/delete"), ("ns2", "/custom/thing")]
    created = decode(got[0])
    assert created.name == "i" and dict(created.labels) == {"a": "b"}
    assert got[0].event.type_url == "containerd.services.images.v1.ImageCreate"
    assert decode(got[1]).runtime.name == "r"
    assert [e.topic for e in only_images.finish()] == ["/images/create"]
    assert [e.topic for e in exact.finish()] == ["/containers/delete"]


def test_events_filter_on_event_fields_forward_and_bad_topics(client, server):
    by_field = Collector(client, ['event.name=="wanted"'], 1)
    wait_for_subscribers(server, 1)
    ev = api.ev_image.ImageDelete(name="unwanted")
    client.events.Publish(api.events.PublishRequest(topic="/images/delete", event=AnyPB(
        type_url=ev.DESCRIPTOR.full_name, value=ev.SerializeToString())), metadata=client.md())
    ev2 = api.ev_image.ImageDelete(name="wanted")
    env = api.events.Envelope(namespace="shim", topic="/images/delete", event=AnyPB(
        type_url=ev2.DESCRIPTOR.full_name, value=ev2.SerializeToString()))
    env.timestamp.FromSeconds(1700000000)
    client.events.Forward(api.events.ForwardRequest(envelope=env), metadata=client.md())
    got = by_field.finish()
    assert [(e.namespace, decode(e).name, e.timestamp.seconds) for e in got] == [("shim", "wanted", 1700000000)]
    for topic in ("", "nope", "/", "/a//b"):
        with pytest.raises(grpc.RpcError) as e:
            client.events.Publish(api.events.PublishRequest(topic=topic, event=AnyPB(type_url="x")),
                                  metadata=client.md())
        assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        client.events.Forward(api.events.ForwardRequest(envelope=api.events.Envelope(namespace="n", topic="/t")),
                              metadata=client.md())
    assert code_of(e) == grpc.StatusCode.INVALID_ARGUMENT


def test_subscriptions_end_when_the_server_stops(tmp_path):
    cfg = make_config(tmp_path)
    srv = Server(cfg)
    srv.start()
    c = Client(cfg.address)
    col = Collector(c, [], 1)
    wait_for_subscribers(srv, 1)
    srv.stop(grace=5)
    assert col.done.wait(30)
    assert col.got == []
    c.close()
    assert not os.path.exists(cfg.address)


def test_introspection_plugins_and_filters(client, server):
    P = api.introspection
    plugins = client.introspection.Plugins(P.PluginsRequest(), metadata=client.md()).plugins
    by = {(p.type, p.id): p for p in plugins}
    for svc in ("containers", "content", "diff", "events", "images", "introspection", "leases", "namespaces",
                "snapshots", "tasks", "version", "healthcheck"):
        assert ("io.containerd.grpc.v1", svc) in by
    native = by[("io.containerd.snapshotter.v1", "native")]
    assert native.exports["root"] == server.core.snapshotter_roots["native"]
    assert [(p.os, p.architecture) for p in native.platforms][0][0] == "linux"
    task = by[("io.containerd.runtime.v2", "task")]
    assert not task.HasField("init_err")
    assert not by[("io.containerd.content.v1", "content")].HasField("init_err")
    snaps = client.introspection.Plugins(P.PluginsRequest(filters=["type==io.containerd.snapshotter.v1"]),
                                         metadata=client.md()).plugins
    assert sorted(p.id for p in snaps) == sorted(server.core.snapshotters) + sorted(server.core.snapshotter_errors)


def test_socket_owner_that_cannot_be_set_is_a_clear_error(tmp_path, monkeypatch):
    from skiff.containerd import server as server_mod

    def refuse(path, uid, gid):
        raise PermissionError(1, "Operation not permitted", path)
    monkeypatch.setattr(server_mod.os, "chown", refuse)
    cfg = make_config(tmp_path)
    cfg.uid = os.geteuid() + 1
    with pytest.raises(ServerError, match=r"cannot give it to uid \d+ gid \d+ \(grpc.uid, grpc.gid\): "
                                          "Operation not permitted"):
        Server(cfg).start()
    assert not os.path.exists(cfg.address) and not os.path.exists(cfg.pid_file)


def test_restart_collects_what_nothing_holds(tmp_path):
    cfg = make_config(tmp_path)
    S = api.snapshots
    srv = Server(cfg)
    srv.start()
    c = Client(cfg.address)
    try:
        c.leases.Create(api.leases.CreateRequest(id="old", labels={"containerd.io/gc.expire": "2000-01-01T00:00:00Z"}),
                        metadata=c.md())
        c.snapshots.Prepare(S.PrepareSnapshotRequest(snapshotter="native", key="orphan"), metadata=c.md(lease="old"))
        c.snapshots.Prepare(S.PrepareSnapshotRequest(snapshotter="native", key="kept",
                                                     labels={"containerd.io/gc.root": "x"}), metadata=c.md())
    finally:
        c.close()
        srv.stop(grace=1)
    srv = Server(cfg)
    srv.start()
    c = Client(cfg.address)
    try:
        keys = [i.name for r in c.snapshots.List(S.ListSnapshotsRequest(snapshotter="native"), metadata=c.md())
                for i in r.info]
        assert keys == ["kept"]
        assert list(c.leases.List(api.leases.ListRequest(), metadata=c.md()).leases) == []
    finally:
        c.close()
        srv.stop(grace=1)
