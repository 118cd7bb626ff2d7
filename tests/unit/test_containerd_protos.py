"""Generation of the containerd API modules from Debian's .proto files (skiff.containerd.protos)."""

from __future__ import annotations

import os
import shutil

import pytest

from skiff.containerd import protos


def test_imports_are_rerooted_and_weak_kept():
    text = ('syntax = "proto3";\n'
            'import "google/protobuf/any.proto";\n'
            'import weak "gogoproto/gogo.proto";\n'
            'import "github.com/containerd/containerd/api/types/mount.proto";\n'
            '  import weak "github.com/containerd/containerd/protobuf/plugin/fieldpath.proto";\n'
            'import "github.com/gogo/protobuf/gogoproto/gogo.proto";\n'
            'message X { string y = 1; } // import "not/an/import.proto"; stays\n')
    out = protos.rewrite_imports(text, "x.proto")
    assert 'import "google/protobuf/any.proto";' in out
    assert 'import weak "skiff_containerd_api/gogoproto/gogo.proto";' in out
    assert 'import "skiff_containerd_api/containerd/api/types/mount.proto";' in out
    assert '  import weak "skiff_containerd_api/containerd/protobuf/plugin/fieldpath.proto";' in out
    assert 'import "skiff_containerd_api/gogoproto/gogo.proto";' in out
    assert 'message X { string y = 1; } // import "not/an/import.proto"; stays' in out


def test_unknown_import_is_an_error():
    with pytest.raises(protos.ProtoError, match="x.proto: import 'example.com/other.proto'"):
        protos.rewrite_imports('import "example.com/other.proto";\n', "x.proto")


def test_sources_come_from_debian_packages():
    files = dict(protos.source_files())
    assert files["containerd/api/services/containers/v1/containers.proto"].startswith(
        "/usr/share/gocode/src/github.com/containerd/containerd/")
    assert files["gogoproto/gogo.proto"].startswith("/usr/share/gocode/src/github.com/gogo/protobuf/")
    for svc in ("version", "namespaces", "containers", "images", "content", "snapshots", "tasks", "events",
                "leases", "introspection", "diff"):
        assert protos.SERVICES[svc] in files


def test_missing_debian_package_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(protos, "CONTAINERD_SRC", str(tmp_path / "nothing"))
    with pytest.raises(protos.ProtoError, match="golang-github-containerd-containerd-dev"):
        protos.source_files()


def test_build_is_idempotent_and_rebuilds_when_a_source_changes(monkeypatch, tmp_path):
    # a private copy of the sources, so that one can be changed
    src = tmp_path / "src"
    shutil.copytree(protos.CONTAINERD_SRC + "/api", src / "api")
    for rel in ("protobuf/plugin", "runtime/v2/runc/options", "runtime/linux/runctypes", "runtime/v2/task"):
        shutil.copytree(os.path.join(protos.CONTAINERD_SRC, rel), src / rel)
    original = protos.CONTAINERD_SRC
    monkeypatch.setattr(protos, "CONTAINERD_SRC", str(src))
    monkeypatch.setattr(protos, "_EXTRA", tuple((str(src) if root == original else root, rel, staged)
                                                for root, rel, staged in protos._EXTRA))
    out = tmp_path / "out"
    base = protos.build(str(out))
    pkg = os.path.join(base, protos.PACKAGE)
    gen = os.path.join(pkg, "containerd/api/services/containers/v1/containers_pb2.py")
    grpc_gen = os.path.join(pkg, "containerd/api/services/containers/v1/containers_pb2_grpc.py")
    assert os.path.isfile(gen) and os.path.isfile(grpc_gen)
    assert protos.is_current(str(out))
    inode = os.stat(gen).st_ino
    protos.build(str(out))  # current: nothing is regenerated
    assert os.stat(gen).st_ino == inode
    assert [n for n in os.listdir(out) if n.startswith(".build-")] == []
    version = src / "api/services/version/v1/version.proto"
    version.write_text(version.read_text() + "\n// changed\n")
    assert not protos.is_current(str(out))
    protos.build(str(out))
    assert os.stat(gen).st_ino != inode
    assert protos.is_current(str(out))
    # nothing generated lands in the source tree of the package
    here = os.path.dirname(protos.__file__)
    assert not any(n.endswith("_pb2.py") for _d, _s, names in os.walk(here) for n in names)


def test_loaded_modules_speak_containerds_names_with_gogo_options():
    api = protos.load()
    svc = api.containers.DESCRIPTOR.services_by_name["Containers"]
    assert svc.full_name == "containerd.services.containers.v1.Containers"
    assert [m.name for m in svc.methods] == ["Get", "List", "ListStream", "Create", "Update", "Delete"]
    assert api.tasks.DESCRIPTOR.package == "containerd.services.tasks.v1"
    assert api.ev_container.ContainerCreate.DESCRIPTOR.full_name == "containerd.events.ContainerCreate"
    # gogo's options compiled: created_at carries (gogoproto.stdtime) = true
    gogo = api.module("gogoproto/gogo.proto")
    field = api.containers.Container.DESCRIPTOR.fields_by_name["created_at"]
    assert field.GetOptions().Extensions[gogo.stdtime] is True
    assert api.introspection.Plugin.DESCRIPTOR.fields_by_name["init_err"].message_type.full_name == "google.rpc.Status"
    assert protos.load() is api


def test_modules_are_imported_on_first_use_and_load_all_imports_every_one():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from skiff.containerd import protos\n"
        "api = protos.load()\n"
        "name = protos.API.module_name(protos.SERVICES['namespaces'])\n"
        "before = name in sys.modules\n"
        "assert api.namespaces.__name__ == name and name in sys.modules\n"
        "assert api.namespaces is api.namespaces\n"
        "try:\n"
        "    api.no_such_module\n"
        "except AttributeError as e:\n"
        "    err = str(e)\n"
        "api.load_all()\n"
        "every = [protos.API.module_name(p, g) for p in protos.SERVICES.values() for g in (False, True)]\n"
        "every += [protos.API.module_name(p) for p in protos.TYPES.values()]\n"
        "print(before, all(m in sys.modules for m in every), err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(None, 2) == ["False", "True", "containerd API: no module 'no_such_module'\n"]


def test_main_check_and_usage(capsys):
    assert protos.main(["check"]) == 0
    assert "current" in capsys.readouterr().out
    assert protos.main(["frobnicate"]) == 2
