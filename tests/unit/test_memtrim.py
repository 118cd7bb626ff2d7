"""skiff.memtrim: malloc_trim, the arena limit and deferred imports (process-level memory settings
of skiffd and skiff-containerd)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from skiff import memtrim


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    """A package ``dfr_pkg`` on sys.path whose modules record that their code ran."""
    root = tmp_path / "dfr_pkg"
    root.mkdir()
    (root / "__init__.py").write_text("import builtins\nbuiltins.dfr_ran = getattr(builtins, 'dfr_ran', []) + ['pkg']\n"
                                      "VALUE = 41\n")
    (root / "sub.py").write_text("import builtins\nbuiltins.dfr_ran = getattr(builtins, 'dfr_ran', []) + ['sub']\n"
                                 "def answer():\n    return 42\n")
    (root / "broken.py").write_text("import builtins\nbuiltins.dfr_ran = getattr(builtins, 'dfr_ran', []) + ['broken']\n"
                                    "raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import builtins
    builtins.dfr_ran = []  # type: ignore[attr-defined]
    yield builtins
    for name in [m for m in sys.modules if m == "dfr_pkg" or m.startswith("dfr_pkg.")]:
        del sys.modules[name]
    del builtins.dfr_ran  # type: ignore[attr-defined]


def test_deferred_module_runs_on_first_attribute_access(pkg):
    assert memtrim.defer_import("dfr_pkg")
    assert memtrim.is_deferred("dfr_pkg")
    import dfr_pkg  # the import itself runs nothing
    assert pkg.dfr_ran == []
    held = dfr_pkg
    assert dfr_pkg.VALUE == 41
    assert pkg.dfr_ran == ["pkg"]
    assert not memtrim.is_deferred("dfr_pkg")
    # the same object is the module: references taken before see its contents
    assert held is sys.modules["dfr_pkg"] and held.VALUE == 41
    assert type(held).__name__ == "module"
    with pytest.raises(AttributeError):
        held.missing  # noqa: B018
    assert pkg.dfr_ran == ["pkg"]  # ran once


def test_from_import_of_a_deferred_module(pkg):
    assert memtrim.defer_import("dfr_pkg")
    from dfr_pkg import VALUE
    assert VALUE == 41 and pkg.dfr_ran == ["pkg"]


def test_submodule_deferred_without_importing_its_parent(pkg):
    assert memtrim.defer_import("dfr_pkg.sub")
    assert "dfr_pkg" not in sys.modules and pkg.dfr_ran == []
    from dfr_pkg import sub  # imports the parent (which runs), not the deferred child
    assert pkg.dfr_ran == ["pkg"]
    assert sub is sys.modules["dfr_pkg.sub"]
    assert sub.answer() == 42
    assert pkg.dfr_ran == ["pkg", "sub"]


def test_failing_module_is_dropped_and_imported_again_later(pkg):
    assert memtrim.defer_import("dfr_pkg.broken")
    import dfr_pkg.broken as broken
    with pytest.raises(RuntimeError, match="broken on purpose"):
        broken.anything  # noqa: B018
    assert "dfr_pkg.broken" not in sys.modules
    with pytest.raises(RuntimeError, match="broken on purpose"):
        import dfr_pkg.broken  # noqa: F401
    assert pkg.dfr_ran.count("broken") == 2


def test_defer_refuses_what_it_cannot_defer(pkg):
    assert not memtrim.defer_import("os")                    # imported already
    assert not memtrim.defer_import("dfr_pkg_no_such_module")
    assert not memtrim.defer_import("dfr_pkg.no_such_sub")
    assert "dfr_pkg" not in sys.modules


def test_defer_refuses_extension_modules():
    code = textwrap.dedent("""
        import sys
        from skiff import memtrim
        name = "_lzma"
        assert name not in sys.modules
        print(memtrim.defer_import(name), name in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_grpc_without_asyncio_when_deferred():
    """What skiff-containerd does at start-up: grpc imports, asyncio's code does not run (no ssl),
    and a synchronous server still serves; asyncio works when something uses it."""
    code = textwrap.dedent("""
        import sys
        from skiff import memtrim
        assert memtrim.defer_import("asyncio") and memtrim.defer_import("grpc.aio")
        import grpc
        from concurrent import futures
        server = grpc.server(futures.ThreadPoolExecutor(1))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            ch.unary_unary("/x.Y/Z")(b"", timeout=5)
        except grpc.RpcError as e:
            code = e.code().name
        server.stop(None)
        ch.close()
        print(code, memtrim.is_deferred("asyncio"), "ssl" in sys.modules, "asyncio.base_events" in sys.modules)
        import asyncio
        print(asyncio.run(asyncio.sleep(0, result="ran")), memtrim.is_deferred("asyncio"))
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    first, second = p.stdout.splitlines()
    assert first.split() == ["UNIMPLEMENTED", "True", "False", "False"]
    assert second.split() == ["ran", "False"]


def test_limit_arenas(monkeypatch):
    code = "from skiff import memtrim; print(memtrim.limit_arenas(1))"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "True"
    # MALLOC_ARENA_MAX in the environment wins (glibc applied it): reported as in force
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "MALLOC_ARENA_MAX": "4"})
    assert out.stdout.strip() == "True"

