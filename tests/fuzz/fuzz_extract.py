#!/usr/bin/env python3
"""atheris harness for the layer extractor: any input either applies or fails with LayerError,
and nothing is ever written outside the snapshot directory.

    python tests/fuzz/fuzz_extract.py [CORPUS_DIR ...] [-max_total_time=20] [libFuzzer flags]
    python tests/fuzz/fuzz_extract.py --make-corpus DIR    # seed inputs (tars of every kind)

The first input byte picks the mode (delete, overlay over a fixed lower tree, oci), the
compression wrapping (none, gzip, zstd: so the fuzzer reaches tar parsing behind each
decompressor) and the source (an in-memory stream, or a regular file: the path content-store
blobs take, with pread and copy_file_range); the rest is the layer stream. Each run works in a sandbox: ``root/`` (the
target), ``lower/`` (a lower layer with a symlink to / and files) and ``outside/`` (a decoy);
after the run, ``lower/`` and ``outside/`` must be unchanged and the sandbox must hold nothing
new. Any other exception, or an escape, is a crash atheris reports with the input.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import sys
import tarfile
import tempfile

import atheris

with atheris.instrument_imports():
    import zstandard

    from skiff.images.layers import LayerError, apply_layer
    from skiff.images.snapshots.fsutil import describe_tree

# SKIFF_FUZZ_DIR: where to make the sandbox (libFuzzer may end the process without running
# ``finally`` clauses, so the caller is the one to clean up there)
WORK = os.environ.get("SKIFF_FUZZ_DIR") or None
SANDBOX = tempfile.mkdtemp(prefix="skiff-fuzz-", dir=WORK)
ROOT = os.path.join(SANDBOX, "root")
LOWER = os.path.join(SANDBOX, "lower")
OUTSIDE = os.path.join(SANDBOX, "outside")
MODES = ("delete", "overlay", "oci")
LAYER_FILE = os.path.join(tempfile.mkdtemp(prefix="skiff-fuzz-layer-", dir=WORK), "layer")  # outside the sandbox


def _setup() -> tuple[dict, dict]:
    os.makedirs(OUTSIDE)
    with open(os.path.join(OUTSIDE, "secret"), "w") as f:
        f.write("secret\n")
    os.makedirs(os.path.join(LOWER, "etc"))
    with open(os.path.join(LOWER, "etc/passwd"), "w") as f:
        f.write("root:x:0:0::/:/bin/sh\n")
    os.symlink("/", os.path.join(LOWER, "up"))
    os.symlink("../../outside", os.path.join(LOWER, "out"))
    os.mkdir(ROOT)
    return describe_tree(OUTSIDE), describe_tree(LOWER)


OUTSIDE_TREE, LOWER_TREE = _setup()


def _reset_root() -> None:
    shutil.rmtree(ROOT)
    os.mkdir(ROOT)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    mode = MODES[data[0] % 3]
    wrap = (data[0] // 3) % 3
    body = data[1:]
    if wrap == 1:
        body = gzip.compress(body, mtime=0)
    elif wrap == 2:
        body = zstandard.ZstdCompressor().compress(body)
    kw = {"whiteout": mode}
    if mode == "overlay":
        kw["lowers"] = [LOWER]
        kw["overlay_xattr"] = "user"
    try:
        if (data[0] // 9) % 2:
            with open(LAYER_FILE, "wb") as f:
                f.write(body)
            with open(LAYER_FILE, "rb") as f:
                apply_layer(f, ROOT, **kw)
        else:
            apply_layer(io.BytesIO(body), ROOT, **kw)
    except LayerError:
        pass
    finally:
        if sorted(os.listdir(SANDBOX)) != ["lower", "outside", "root"]:
            raise AssertionError(f"escape: the sandbox now holds {sorted(os.listdir(SANDBOX))}")
        if describe_tree(OUTSIDE) != OUTSIDE_TREE:
            raise AssertionError("escape: outside/ changed")
        if describe_tree(LOWER) != LOWER_TREE:
            raise AssertionError("escape: the lower layer changed")
        _reset_root()


def make_corpus(directory: str) -> None:
    """Seed inputs: one mode byte followed by a tar of each interesting shape."""
    os.makedirs(directory, exist_ok=True)

    def tar(members, fmt=tarfile.PAX_FORMAT) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
            for name, kind, extra in members:
                ti = tarfile.TarInfo(name)
                ti.type = kind
                data = None
                if kind == tarfile.REGTYPE:
                    payload = extra or b"data"
                    ti.size = len(payload)
                    data = io.BytesIO(payload)
                elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                    ti.linkname = extra
                elif kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                    ti.devmajor, ti.devminor = extra
                t.addfile(ti, data)
        return out.getvalue()
    R, D, S, H = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
    seeds = {
        "plain": tar([("a", D, None), ("a/f", R, b"hello"), ("b", S, "a/f"), ("c", H, "a/f")]),
        "escape": tar([("l", S, "/"), ("l/etc/x", R, None), ("../x", R, None)]),
        "whiteouts": tar([("etc/.wh.passwd", R, b""), ("d/.wh..wh..opq", R, b""), ("up/.wh.x", R, b"")]),
        "through-lower": tar([("up/etc/y", R, None), ("out/z", R, None), ("h", H, "etc/passwd")]),
        "gnu-long": tar([("x" * 150, R, None), ("y" * 120, S, "z" * 130)], tarfile.GNU_FORMAT),
        "devices": tar([("dev/null", tarfile.CHRTYPE, (1, 3)), ("fifo", tarfile.FIFOTYPE, None)]),
        "replace": tar([("a", D, None), ("a", S, "/etc"), ("a/passwd", R, None)]),
        # plain files after the first of a directory take the inline paths; then the
        # directory becomes a link out, and a lower entry sits at a plain file's name
        "inline": tar([("d", D, None), ("d/a", R, None), ("d/b", R, b"x" * 70000), ("d", S, "/"),
                       ("d/c", R, None), ("d/etc/passwd", R, None), ("etc", D, None), ("etc/a", R, None),
                       ("etc/passwd", R, b"through?")]),
    }
    sparse = tarfile.TarInfo("sp")
    sparse.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "sp",
                          "GNU.sparse.realsize": "100000"}
    sparse.size = 1024
    seeds["sparse"] = sparse.tobuf(tarfile.PAX_FORMAT) + b"1\n4096\n5\n".ljust(512, b"\0") + \
        b"hello".ljust(512, b"\0") + b"\0" * 1024
    for name, blob in seeds.items():
        for prefix in (0, 1, 3, 9, 10):  # delete / overlay / delete over gzip / delete, overlay from a file
            with open(os.path.join(directory, f"{name}-{prefix}"), "wb") as f:
                f.write(bytes([prefix]) + blob)


def main() -> None:
    try:
        if len(sys.argv) == 3 and sys.argv[1] == "--make-corpus":
            make_corpus(sys.argv[2])
            return
        atheris.Setup(sys.argv, TestOneInput)
        atheris.Fuzz()
    finally:
        shutil.rmtree(SANDBOX, ignore_errors=True)
        shutil.rmtree(os.path.dirname(LAYER_FILE), ignore_errors=True)


if __name__ == "__main__":
    main()
