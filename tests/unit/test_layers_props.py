"""Property tests of the extractor and the differ (hypothesis).

- random trees -> tar -> apply -> write_diff -> apply again gives the same tree;
- random two-layer stacks: the diff taken by comparing trees, replayed on the lower tree,
  gives the upper tree;
- random layer stacks: delete mode on a plain tree and overlay mode in upper directories
  (user xattrs, no mount) agree on what each layer wrote (the mounted comparison is in
  tests/root/test_layers.py, which reuses ``layer_stacks``);
- random hostile names and link targets never write outside a sandbox;
- short reads from the underlying stream change nothing.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
import tempfile

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skiff.images.layers import LayerError, apply_layer, write_diff
from skiff.images.snapshots.fsutil import copy_tree, describe_tree

NAMES = ["a", "b", "c", "d.txt"]
# SKIFF_HYPOTHESIS_EXAMPLES=2000 for a thorough run by hand
EXAMPLES = int(os.environ.get("SKIFF_HYPOTHESIS_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- strategies ------------------------------------------------------------------------------

def _path(depth: int = 3):
    return st.lists(st.sampled_from(NAMES), min_size=1, max_size=depth).map("/".join)


@st.composite
def entries(draw, allow_whiteouts: bool = False):
    """One layer as an ordered list of (kind, path, extra) with its directories listed first."""
    out: list[tuple] = []
    kinds: dict[str, str] = {}
    for _ in range(draw(st.integers(1, 12))):
        path = draw(_path())
        parts = path.split("/")
        # a path below something this layer made a non-directory is skipped
        if any(kinds.get("/".join(parts[:i])) not in (None, "dir") for i in range(1, len(parts))):
            continue
        for i in range(1, len(parts)):
            p = "/".join(parts[:i])
            if p not in kinds:
                kinds[p] = "dir"
                out.append(("dir", p, draw(st.sampled_from([0o755, 0o700, 0o1777, 0o555]))))
        if path in kinds:
            continue
        choices = ["file", "file", "dir", "symlink", "hardlink", "fifo"]
        if allow_whiteouts:
            choices += ["whiteout", "opaque"]
        kind = draw(st.sampled_from(choices))
        if kind == "hardlink":
            files = [p for p, k in kinds.items() if k == "file"]
            if not files:
                kind = "file"
            else:
                out.append(("hardlink", path, draw(st.sampled_from(files))))
                kinds[path] = "hardlink"
                continue
        if kind == "file":
            data = draw(st.binary(max_size=300))
            mode = draw(st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o2711]))
            mtime = draw(st.integers(0, 2_000_000_000))
            xattr = draw(st.none() | st.binary(min_size=1, max_size=20))
            out.append(("file", path, (data, mode, mtime, xattr)))
        elif kind == "dir":
            out.append(("dir", path, draw(st.sampled_from([0o755, 0o700, 0o1777]))))
        elif kind == "symlink":
            target = draw(st.sampled_from(["a", "/a", "../a", "b/c", "/", ".", "nowhere", "../../.."]))
            out.append(("symlink", path, target))
        elif kind == "fifo":
            out.append(("fifo", path, 0o640))
        elif kind == "whiteout":
            out.append(("whiteout", path, None))
        else:
            out.append(("opaque", path, None))
        kinds[path] = kind
    return out


def to_tar(layer: list[tuple]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for kind, path, extra in layer:
            if kind in ("whiteout", "opaque"):
                d, b = os.path.split(path)
                name = os.path.join(d, ".wh." + b) if kind == "whiteout" else os.path.join(path, ".wh..wh..opq")
                t.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
                continue
            ti = tarfile.TarInfo(path)
            ti.mtime = 1_234_567_890
            data = None
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, extra
            elif kind == "file":
                payload, ti.mode, ti.mtime, xattr = extra
                ti.size = len(payload)
                data = io.BytesIO(payload)
                if xattr is not None:
                    ti.pax_headers = {"SCHILY.xattr.user.p": xattr.decode("utf-8", "surrogateescape")}
            elif kind == "symlink":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, extra, 0o777
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, extra
            elif kind == "fifo":
                ti.type, ti.mode = tarfile.FIFOTYPE, extra
            t.addfile(ti, data)
    return buf.getvalue()


layer_stacks = st.lists(entries(allow_whiteouts=True), min_size=1, max_size=4)


def tree(path: str, **kw) -> dict:
    """describe_tree without the root itself (not part of any layer: its mtime is when it was
    last written to)."""
    t = describe_tree(path, **kw)
    t.pop("")
    return t


def _apply_or_error(data: bytes, root: str, **kw) -> str | None:
    try:
        apply_layer(io.BytesIO(data), root, **kw)
    except LayerError as e:
        return type(e).__name__
    return None


# --- properties --------------------------------------------------------------------------------

@SETTINGS
@given(layer=entries())
def test_tree_tar_apply_diff_apply_round_trip(layer):
    with tempfile.TemporaryDirectory() as tmp:
        first, second = os.path.join(tmp, "1"), os.path.join(tmp, "2")
        os.mkdir(first)
        os.mkdir(second)
        err = _apply_or_error(to_tar(layer), first)
        if err is not None:  # a symlink loop in a directory path, a file below a file
            return
        out = io.BytesIO()
        write_diff([], first, out, mode="compare")
        apply_layer(io.BytesIO(out.getvalue()), second)
        assert tree(second) == tree(first)
        # and the diff of identical trees is empty
        empty = io.BytesIO()
        write_diff([first], second, empty, mode="compare")
        assert tarfile.open(fileobj=io.BytesIO(empty.getvalue())).getnames() == []


@SETTINGS
@given(lower=entries(), upper=entries(allow_whiteouts=True))
def test_compare_diff_replays_to_the_same_tree(lower, upper):
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        os.mkdir(base)
        if _apply_or_error(to_tar(lower), base):
            return
        changed = os.path.join(tmp, "changed")
        os.mkdir(changed)
        copy_tree(base, changed)
        if _apply_or_error(to_tar(upper), changed):
            return
        out = io.BytesIO()
        write_diff([base], changed, out, mode="compare")
        replay = os.path.join(tmp, "replay")
        os.mkdir(replay)
        copy_tree(base, replay)
        apply_layer(io.BytesIO(out.getvalue()), replay)
        assert describe_tree(replay, mtimes=False) == describe_tree(changed, mtimes=False)


def merged_view(layers: list[str]) -> dict:
    """What an overlay of upper directories ``layers`` (top first) shows, computed by hand:
    the reference model the overlay-mode extractor is checked against without a mount."""
    out: dict[str, tuple] = {}

    def walk(rel: str, stack: list[str]) -> None:
        names: dict[str, None] = {}
        for layer in stack:
            for n in sorted(os.listdir(os.path.join(layer, rel) if rel else layer)):
                names.setdefault(n, None)
        for n in sorted(names):
            crel = f"{rel}/{n}" if rel else n
            sub: list[str] = []
            for layer in stack:
                p = os.path.join(layer, crel)
                try:
                    s = os.lstat(p)
                except FileNotFoundError:
                    continue
                if stat.S_ISCHR(s.st_mode) and s.st_rdev == 0:
                    break
                if not stat.S_ISDIR(s.st_mode):
                    if not sub:
                        out[crel] = ("entry", layer)
                    break
                sub.append(layer)
                try:
                    if os.getxattr(p, "user.overlay.opaque") == b"y":
                        break
                except OSError:
                    pass
            if sub:
                out[crel] = ("dir", sub[0])
                walk(crel, sub)
    walk("", layers)
    return out


@SETTINGS
@given(stack=layer_stacks)
def test_overlay_mode_agrees_with_delete_mode(stack):
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, "plain")
        os.mkdir(plain)
        uppers: list[str] = []
        for i, layer in enumerate(stack):
            data = to_tar(layer)
            up = os.path.join(tmp, f"u{i}")
            os.mkdir(up)
            e1 = _apply_or_error(data, plain)
            e2 = _apply_or_error(data, up, whiteout="overlay", lowers=list(reversed(uppers)),
                                 overlay_xattr="user")
            assert e1 == e2
            if e1:
                return
            uppers.append(up)
        view = merged_view(list(reversed(uppers)))
        want = describe_tree(plain, mtimes=False)
        want.pop("")
        assert sorted(view) == sorted(want)
        for rel, (kind, layer) in view.items():
            got = describe_tree(os.path.join(layer, os.path.dirname(rel)) if os.path.dirname(rel) else layer,
                                mtimes=False).get(os.path.basename(rel))
            assert got is not None
            if kind == "entry":
                assert got[:2] == want[rel][:2], rel
                if want[rel][0] in ("file", "symlink"):
                    assert got[6][:-1] == want[rel][6][:-1], rel  # content / target (link groups differ)


HOSTILE_NAMES = st.sampled_from([
    "..", "../x", "a/../../x", "/", "/etc/passwd", "./a", "a//b", "../../../../../../tmp/x",
    "a/./../..", ".wh...", "a/.wh.", "x" * 300, "a/b/c/d/e/f", "\u00e9", "sp ace", "..a", "a..",
])


@settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=st.lists(st.tuples(st.sampled_from(["file", "dir", "symlink", "hardlink"]), HOSTILE_NAMES,
                                  HOSTILE_NAMES | st.sampled_from(["/", "..", "/etc", "../outside"])),
                        max_size=10))
def test_hostile_names_never_escape(members):
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        outside = os.path.join(tmp, "outside")
        os.makedirs(root)
        os.makedirs(outside)
        with open(os.path.join(outside, "secret"), "w") as f:
            f.write("s")
        layer = []
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for kind, name, target in members:
                ti = tarfile.TarInfo(name)
                if kind == "file":
                    ti.size = 3
                    t.addfile(ti, io.BytesIO(b"bad"))
                    continue
                ti.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
                ti.linkname = target
                t.addfile(ti)
                layer.append(ti)
        _apply_or_error(buf.getvalue(), root)
        assert sorted(os.listdir(tmp)) == ["outside", "root"]
        assert os.listdir(outside) == ["secret"]
        assert open(os.path.join(outside, "secret")).read() == "s"
        for dirpath, _dirs, files in os.walk(root):
            assert os.path.realpath(dirpath).startswith(os.path.realpath(root))
            for f in files:
                p = os.path.join(dirpath, f)
                if not os.path.islink(p):
                    assert os.stat(p).st_ino != os.stat(os.path.join(outside, "secret")).st_ino


class Trickle(io.RawIOBase):
    """A stream that hands out a few bytes per read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


@settings(max_examples=20, deadline=None)
@given(layer=entries(), step=st.integers(1, 700), how=st.sampled_from(["none", "gzip", "zstd"]))
def test_short_reads_change_nothing(layer, step, how):
    data = to_tar(layer)
    blob = {"none": data, "gzip": gzip.compress(data),
            "zstd": zstandard.ZstdCompressor().compress(data)}[how]
    with tempfile.TemporaryDirectory() as tmp:
        a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        os.mkdir(a)
        os.mkdir(b)
        e1 = _apply_or_error(blob, a)
        try:
            r = apply_layer(Trickle(blob, step), b)  # type: ignore[arg-type]
            e2 = None
        except LayerError as e:
            e2 = type(e).__name__
        assert e1 == e2
        if e1 is None:
            assert tree(a) == tree(b)
            assert r.size == len(data)
        shutil.rmtree(a, ignore_errors=True)
