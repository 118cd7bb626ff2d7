#!/usr/bin/env python3
"""Layer unpack throughput: skiff's apply_layer against GNU `tar -x` on the same layers.

    python3 bench/unpack.py [-n 10] [-w 2] [--size-mb 200] [--layers 10] [--tmp DIR]

Generates an image of about ``--size-mb`` MB (uncompressed) in ``--layers`` layers in a
temporary directory: per layer a mix of many small files (1-16 KiB, in nested directories),
some medium ones (64 KiB-1 MiB) and one large file, half random bytes and half repetitive
text, so gzip has something to do. Each layer is written uncompressed and gzip-compressed.
Then, every run into a fresh directory, all layers are extracted in order by:

1. ``tar -x`` (GNU tar, as root it keeps owners: ``--same-owner``), uncompressed layers;
2. skiff (``python3 bench/unpack.py --apply DIR LAYER...``: apply_layer per layer, delete
   mode, owners kept as root), uncompressed layers;
3. ``tar -xz`` and skiff on the gzip layers.

skiff's rows include the Python start-up and imports (about 0.05 s), as a daemon would pay once.
They run with their bytecode cached, as an installed package has it: the modules the apply
imports are compiled first into a cache in the temporary directory (``-X pycache_prefix``), so
that ``PYTHONDONTWRITEBYTECODE`` in the environment (this machine's sessions set it) does not
make every run compile ``skiff.images.layers`` from source (about 0.03 s more).

Layers are applied from their files, as skiffd applies content-store blobs: uncompressed ones
take apply_layer's path for regular files (pread of headers, copy_file_range of data, hashing
in a second thread); gzip ones are streamed through zlib.
Prints the tables of bench/compare.py and a throughput line per row (uncompressed MB of the
image / median seconds). Nothing is asserted; exit 0 when every command succeeded. The
temporary directory is removed at the end.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import Command, compare, format_table

REPO = Path(__file__).resolve().parents[1]


def precompile_main(layer: str, target: str) -> int:
    """Apply ``layer`` once, then write the bytecode of every module imported by then into the
    cache (``sys.pycache_prefix`` names it; py_compile writes even when bytecode writing is off)."""
    import importlib.util
    import py_compile

    apply_main(target, [layer])
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if f and f.endswith(".py") and os.path.exists(f):
            py_compile.compile(f, cfile=importlib.util.cache_from_source(f), doraise=True)
    return 0


def apply_main(target: str, layers: list[str]) -> int:
    sys.path.insert(0, str(REPO / "src"))
    from skiff.images.layers import apply_layer

    for path in layers:
        with open(path, "rb") as f:
            apply_layer(f, target)
    return 0


def make_layer(rng: random.Random, index: int, size: int) -> bytes:
    out = io.BytesIO()
    text = (b"the quick brown fox jumps over the lazy dog %d\n" % index) * 64
    written = 0

    def content(n: int) -> bytes:
        if rng.random() < 0.5:
            return rng.randbytes(n)
        return (text * (n // len(text) + 1))[:n]

    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        dirs = set()

        def add_dir(path: str) -> None:
            parts = path.split("/")
            for i in range(1, len(parts) + 1):
                p = "/".join(parts[:i])
                if p not in dirs:
                    dirs.add(p)
                    ti = tarfile.TarInfo(p)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                    t.addfile(ti)

        def add_file(path: str, data: bytes) -> None:
            nonlocal written
            add_dir(os.path.dirname(path))
            ti = tarfile.TarInfo(path)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_700_000_000
            t.addfile(ti, io.BytesIO(data))
            written += len(data)

        big = size // 4
        add_file(f"layer{index}/big/blob.bin", content(big))
        n = 0
        while written < size * 5 // 8:
            add_file(f"layer{index}/medium/m{n:04d}.dat", content(rng.randint(64 << 10, 1 << 20)))
            n += 1
        n = 0
        while written < size:
            add_file(f"layer{index}/small/d{n // 100:03d}/f{n:05d}.txt", content(rng.randint(1 << 10, 16 << 10)))
            n += 1
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--apply"]:
        return apply_main(argv[1], argv[2:])
    if argv[:1] == ["--precompile"]:
        return precompile_main(argv[1], argv[2])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=10)
    ap.add_argument("-w", "--warmup", type=int, default=2)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--tmp", default=None, help="where to work (default: $TMPDIR); /dev/shm leaves the disk out")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="skiff-bench-unpack-", dir=args.tmp)
    try:
        rng = random.Random(42)
        plain, gz = [], []
        total = 0
        per_layer = args.size_mb * 1_000_000 // args.layers
        for i in range(args.layers):
            data = make_layer(rng, i, per_layer)
            total += len(data)
            p = os.path.join(tmp, f"layer{i}.tar")
            with open(p, "wb") as f:
                f.write(data)
            plain.append(p)
            with open(p + ".gz", "wb") as f:
                f.write(gzip.compress(data, compresslevel=6, mtime=0))
            gz.append(p + ".gz")
        gz_size = sum(os.path.getsize(p) for p in gz)
        print(f"image: {args.layers} layers, {total / 1e6:.1f} MB uncompressed, {gz_size / 1e6:.1f} MB gzip; "
              f"{args.runs} timed runs, {args.warmup} warm-up")
        out = os.path.join(tmp, "out")
        setup = f"rm -rf {out}{{i}} && mkdir {out}{{i}}"
        cleanup = f"rm -rf {out}{{i}}"
        same_owner = "--same-owner " if os.geteuid() == 0 else ""
        tar_plain = " && ".join(f"tar -x {same_owner}-f {p} -C {out}{{i}}" for p in plain)
        tar_gz = " && ".join(f"tar -xz {same_owner}-f {p} -C {out}{{i}}" for p in gz)
        py = [sys.executable, "-X", f"pycache_prefix={tmp}/pycache", str(Path(__file__).resolve())]
        for layer in (plain[0], gz[0]):
            os.mkdir(out + "-pre")
            subprocess.run([*py, "--precompile", layer, out + "-pre"], check=True)
            shutil.rmtree(out + "-pre")
        me = [*py, "--apply"]
        tables = [
            ("uncompressed layers", [
                Command(tar_plain, name="tar -x", setup=setup, cleanup=cleanup),
                Command([*me, f"{out}{{i}}", *plain], name="skiff apply_layer", setup=setup, cleanup=cleanup),
            ]),
            ("gzip layers", [
                Command(tar_gz, name="tar -xz", setup=setup, cleanup=cleanup),
                Command([*me, f"{out}{{i}}", *gz], name="skiff apply_layer (gzip)", setup=setup, cleanup=cleanup),
            ]),
        ]
        ok = True
        for title, cmds in tables:
            results = compare(cmds, runs=args.runs, warmup=args.warmup, rss_runs=1)
            print(format_table(results, title=f"\n{title}"))
            for r in results:
                if r.error or not r.wall:
                    ok = False
                    continue
                med = statistics.median(r.wall)
                print(f"  {r.command.label():<28} {total / 1e6 / med:8.1f} MB/s")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
