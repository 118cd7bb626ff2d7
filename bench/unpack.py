#!/usr/bin/env python3
"""Layer unpack throughput: skiff's apply_layer against GNU `tar -x` on the same layers.

    python3 bench/unpack.py [-n 10] [-w 2] [--size-mb 200] [--layers 10] [--tmp DIR] [--baseline-src DIR]

Generates an image of about ``--size-mb`` MB (uncompressed) in ``--layers`` layers in a
temporary directory: per layer a mix of many small files (1-16 KiB, in nested directories),
some medium ones (64 KiB-1 MiB) and one large file, half random bytes and half repetitive
text, so gzip has something to do. Each layer is written uncompressed and gzip-compressed.
Then, every run into a fresh directory, all layers are extracted in order by:

1. ``tar -x`` (GNU tar, as root it keeps owners: ``--same-owner``), uncompressed layers;
2. skiff (``python3 bench/unpack.py --apply DIR LAYER...``: apply_layer per layer, delete
   mode, owners kept as root), uncompressed layers;
3. ``tar -xz`` and skiff on the gzip layers.

With ``--baseline-src DIR`` (the ``src`` directory of another checkout, e.g. a ``git worktree``
of an earlier commit), each table gets a third row applying with that tree's ``skiff``, so
that a change is measured before and after in the same alternating rounds.

skiff's rows include the Python start-up and the imports of the apply (about 0.05 s), as a
daemon would pay once; this script's own imports (argparse, subprocess, statistics, ...) are
made only after the ``--apply`` dispatch, so they are not counted. They run with their bytecode
cached, as an installed package has it: the modules the apply imports are compiled first into a cache in the temporary directory (``-X pycache_prefix``), so
that ``PYTHONDONTWRITEBYTECODE`` in the environment (this machine's sessions set it) does not
make every run compile ``skiff.images.layers`` from source (about 0.03 s more).

Layers are applied from their files, as skiffd applies content-store blobs: uncompressed ones
take apply_layer's path for regular files (pread of headers, copy_file_range of data, hashing
in a second thread); gzip ones are streamed through zlib.
Prints the tables of bench/compare.py and a throughput line per row (uncompressed MB of the
image / median seconds), then skiff's time measured inside its process around the applies
alone (what a daemon, started once, spends per image), with its ratio to tar's whole run.
Nothing is asserted; exit 0 when every command succeeded. The temporary directory is removed
at the end.
"""

from __future__ import annotations

import os
import sys

# (only what --apply needs is imported here: its row times the interpreter's start and the
# apply's own imports, not this script's; the rest is imported in main())
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import random


def precompile_main(layer: str, target: str, src: str | None = None) -> int:
    """Apply ``layer`` once, then write the bytecode of every module imported by then into the
    cache (``sys.pycache_prefix`` names it; py_compile writes even when bytecode writing is off)."""
    import importlib.util
    import py_compile

    apply_main(target, [layer], src=src)
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if f and f.endswith(".py") and os.path.exists(f):
            py_compile.compile(f, cfile=importlib.util.cache_from_source(f), doraise=True)
    return 0


def apply_main(target: str, layers: list[str], times: str | None = None, run: str = "",
               src: str | None = None) -> int:
    """Apply ``layers`` to ``target`` with the ``skiff`` package of ``src`` (default: this
    checkout's); with ``times``, append "RUN SECONDS" (the apply alone, without the
    interpreter's start and the imports) to that file."""
    sys.path.insert(0, src or os.path.join(REPO, "src"))
    from skiff.images.layers import apply_layer

    if times:
        import time
        t0 = time.perf_counter()
    for path in layers:
        with open(path, "rb") as f:
            apply_layer(f, target)
    if times:
        with open(times, "a") as out:
            out.write(f"{run} {time.perf_counter() - t0:.6f}\n")
    return 0


def in_process(times: str, first: int, runs: int) -> list[float]:
    """The in-process apply times of the timed runs (numbers first..first+runs-1)."""
    out = []
    try:
        with open(times) as f:
            for line in f:
                i, secs = line.split()
                if first <= int(i) < first + runs:
                    out.append(float(secs))
    except FileNotFoundError:
        pass
    return out


def make_layer(rng: random.Random, index: int, size: int) -> bytes:
    import io
    import tarfile

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
    if argv[:1] in (["--apply"], ["--precompile"]):
        # --apply [--times FILE RUN] [--src DIR] DIR LAYER...; --precompile [--src DIR] LAYER DIR
        what, rest = argv[0], argv[1:]
        times, run, src = None, "", None
        while rest[:1] in (["--times"], ["--src"]):
            if rest[0] == "--times":
                times, run, rest = rest[1], rest[2], rest[3:]
            else:
                src, rest = rest[1], rest[2:]
        if what == "--precompile":
            return precompile_main(rest[0], rest[1], src)
        return apply_main(rest[0], rest[1:], times, run, src)
    import argparse
    import gzip
    import random
    import shutil
    import statistics
    import subprocess
    import tempfile

    sys.path.insert(0, HERE)
    from compare import Command, compare, format_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=10)
    ap.add_argument("-w", "--warmup", type=int, default=2)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--tmp", default=None, help="where to work (default: $TMPDIR); /dev/shm leaves the disk out")
    ap.add_argument("--baseline-src", default=None, metavar="DIR",
                    help="also apply with the skiff package of this src directory (another checkout)")
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
        py = [sys.executable, "-X", f"pycache_prefix={tmp}/pycache", os.path.abspath(__file__)]
        srcs: list[tuple[str, list[str]]] = [("", [])]
        if args.baseline_src:
            srcs.append((" baseline", ["--src", os.path.abspath(args.baseline_src)]))
        for layer in (plain[0], gz[0]):
            for _, src_arg in srcs:
                os.mkdir(out + "-pre")
                subprocess.run([*py, "--precompile", *src_arg, layer, out + "-pre"], check=True)
                shutil.rmtree(out + "-pre")
        # (title, [(label, times file)], commands)
        tables: list[tuple[str, list[tuple[str, str]], list[Command]]] = []
        for title, tar_cmd, tar_name, files in (("uncompressed layers", tar_plain, "tar -x", plain),
                                                 ("gzip layers", tar_gz, "tar -xz", gz)):
            cmds = [Command(tar_cmd, name=tar_name, setup=setup, cleanup=cleanup)]
            inner_files = []
            for suffix, src_arg in srcs:
                times = os.path.join(tmp, f"times-{len(tables)}{suffix.strip()}")
                me = [*py, "--apply", "--times", times, "{i}", *src_arg, f"{out}{{i}}", *files]
                name = "skiff" + suffix + " apply_layer" + (" (gzip)" if files is gz else "")
                cmds.append(Command(me, name=name, setup=setup, cleanup=cleanup))
                inner_files.append((f"skiff{suffix}, apply alone", times))
            tables.append((title, inner_files, cmds))
        ok = True
        for title, inner_files, cmds in tables:
            results = compare(cmds, runs=args.runs, warmup=args.warmup, rss_runs=1)
            print(format_table(results, title=f"\n{title}"))
            for r in results:
                if r.error or not r.wall:
                    ok = False
                    continue
                med = statistics.median(r.wall)
                print(f"  {r.command.label():<32} {total / 1e6 / med:8.1f} MB/s")
            for label, times in inner_files:
                inner = in_process(times, args.warmup, args.runs)
                if inner and results[0].wall and not results[0].error:
                    med = statistics.median(inner)
                    base = statistics.median(results[0].wall)
                    print(f"  {label:<32} {total / 1e6 / med:8.1f} MB/s  ({med * 1000:.1f} ms median in the "
                          f"process, without the interpreter's start and imports: ratio {med / base:.2f})")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
