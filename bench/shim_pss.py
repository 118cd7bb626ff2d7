#!/usr/bin/env python3
"""Memory per idle container of the shim layer: skiff-shim (exec'd, and forked by the zygote)
against containerd 1.6's containerd-shim-runc-v2 (and podman's conmon when installed).

    .venv/bin/python bench/shim_pss.py [-n 50] [--no-containerd] [--no-plain] [--no-zygote]

For each program, N containers running `sleep` from the built-in busybox image are started and
left idle, then the shims' memory is read from /proc/PID/smaps_rollup: PSS (each shared page
divided among the processes mapping it, so the sum over all shims is what they cost together),
RSS, and private pages (Private_Clean + Private_Dirty). The table shows the sums and the
per-container cost (sum / N). For the zygote the zygote process itself is added to the sum (it
exists because of the shims), and shown on its own line too.

- skiff-shim: `start_shim` + `create` + `start` through skiff-runc (the venv's console script),
  one bundle per container (config.json pointing at one shared read-only rootfs), stdio
  /dev/null; "plain" runs `skiff-shim` (which daemonizes), "zygote" forks every shim from one
  pre-imported zygote.
- containerd: a private containerd 1.6 (its own root, state, socket and config under the
  temporary directory; the CRI plugin disabled) with Debian's runc; `ctr images import` of the
  built-in busybox archive, then `ctr run -d` N times. Its shims are found by their
  `-address` argument.
- conmon: measured only if `conmon` is installed (it is not by default here); issue 5 cites
  about 2 MiB for it.

The shim's modules are byte-compiled first (``compileall``): with PYTHONDONTWRITEBYTECODE set
and no .pyc files, every exec'd shim would compile its sources at start-up and keep a heap
twice as large (8 MiB PSS instead of 3.6 here), which is a property of the install, not of
the shim.

Everything lives under one temporary directory and is removed at the end: containers are
killed and deleted, containerd is stopped by its pid, shims are shut down (or killed by pid),
and no mount may remain under the directory. Exit status 0 when every program measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from skiff.images.builtin import make_bundle  # noqa: E402
from skiff.shim.client import ShimClient, start_shim, stop_zygote  # noqa: E402

LAYOUT = os.path.join(REPO, "build", "images", "busybox-oci")
ARCHIVE = os.path.join(REPO, "build", "images", "busybox.tar")
IMAGE = "docker.io/library/busybox:latest"


def smaps(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                out[parts[0][:-1]] = int(parts[1])
    return out


def measure(pids: list[int]) -> dict[str, float]:
    tot = {"Pss": 0, "Rss": 0, "Private": 0}
    for pid in pids:
        m = smaps(pid)
        tot["Pss"] += m["Pss"]
        tot["Rss"] += m["Rss"]
        tot["Private"] += m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)
    return {k: v / 1024 for k, v in tot.items()}  # MiB


def row(name: str, n: int, m: dict[str, float], per: int) -> str:
    return (f"{name:<34} {n:>5} {m['Pss']:>10.1f} {m['Pss'] / per:>10.2f} {m['Rss'] / per:>10.2f}"
            f" {m['Private'] / per:>11.2f}")


HEADER = (f"{'program':<34} {'procs':>5} {'PSS MiB':>10} {'PSS/ctr':>10} {'RSS/ctr':>10} "
          f"{'private/ctr':>11}")


def run_skiff(tmp: str, n: int, zygote: bool, runtime: str) -> list[str]:
    mode = "zygote" if zygote else "plain"
    base = os.path.join(tmp, mode)
    os.mkdir(base)
    rt_root = os.path.join(base, "rt")
    zsock = os.path.join(base, "z.sock") if zygote else ""
    clients: list[tuple[str, ShimClient]] = []
    lines = []
    try:
        t0 = time.monotonic()
        for i in range(n):
            cid = f"pss-{mode}-{i}"
            b = os.path.join(base, f"b{i}")
            os.mkdir(b)
            with open(os.path.join(tmp, "config.json")) as f:
                config = json.load(f)
            with open(os.path.join(b, "config.json"), "w") as f:
                json.dump(config, f)
            c = start_shim(cid, b, os.path.join(base, f"s{i}.sock"), namespace="bench", zygote=zsock)
            clients.append((cid, c))
            c.create(b, runtime, runtime_root=rt_root)
            c.start()
        started = time.monotonic() - t0
        time.sleep(1.0)  # let the last ones settle into their idle loop
        pids = [c.pid for _, c in clients]
        label = "skiff-shim (forked by the zygote)" if zygote else "skiff-shim (exec'd, daemonized)"
        m = measure(pids)
        if zygote:
            zpid = _zygote_pid(zsock)
            mz = measure([zpid])
            both = {k: m[k] + mz[k] for k in m}
            lines.append(row(label + " + zygote", n + 1, both, n))
            lines.append(row("  of which the zygote", 1, mz, n))
            lines.append(row("  of which the shims", n, m, n))
        else:
            lines.append(row(label, n, m, n))
        lines.append(f"  ({n} containers created and started in {started:.1f} s)")
    finally:
        for cid, c in clients:
            try:
                c.kill(signal.SIGKILL)
                c.wait(timeout=60)
                c.delete()
                c.shutdown()
            except Exception as e:
                print(f"cleanup of {cid}: {e}; killing its shim {c.pid}", file=sys.stderr)
                subprocess.run(["skiff-runc", "--root", rt_root, "delete", "--force", cid])
                try:
                    os.kill(c.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if zsock and os.path.exists(zsock):
            stop_zygote(zsock)
    return lines


def _zygote_pid(zsock: str) -> int:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(zsock)
    s.sendall(b'{"method": "ping"}\n')
    pid = json.loads(s.makefile("rb").readline())["pid"]
    s.close()
    return pid


def run_containerd(tmp: str, n: int) -> list[str]:
    base = os.path.join(tmp, "containerd")
    os.mkdir(base)
    sock = os.path.join(base, "c.sock")
    cfg = os.path.join(base, "config.toml")
    with open(cfg, "w") as f:
        f.write(f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
                f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
                f'[debug]\n  address = ""\n')
    log = open(os.path.join(base, "containerd.log"), "wb")
    proc = subprocess.Popen(["containerd", "--config", cfg], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    ctr = ["ctr", "-a", sock, "-n", "bench"]
    ids = []
    lines = []
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        subprocess.run([*ctr, "images", "import", ARCHIVE], check=True, stdout=subprocess.DEVNULL)
        t0 = time.monotonic()
        for i in range(n):
            cid = f"pss-ctrd-{i}"
            subprocess.run([*ctr, "run", "-d", IMAGE, cid, "sleep", "100000"], check=True,
                           stdout=subprocess.DEVNULL)
            ids.append(cid)
        started = time.monotonic() - t0
        time.sleep(1.0)
        shims = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in argv:
                shims.append(int(d))
        lines.append(row("containerd-shim-runc-v2 (1.6)", len(shims), measure(shims), n))
        lines.append(f"  ({n} containers run with ctr run -d in {started:.1f} s; "
                     f"containerd itself: {measure([proc.pid])['Pss']:.1f} MiB PSS)")
    finally:
        for cid in ids:
            subprocess.run([*ctr, "tasks", "kill", "-s", "SIGKILL", cid], stderr=subprocess.DEVNULL)
        for cid in ids:
            for _ in range(100):
                r = subprocess.run([*ctr, "tasks", "delete", cid], capture_output=True)
                if r.returncode == 0 or b"not found" in r.stderr:
                    break
                time.sleep(0.1)
            subprocess.run([*ctr, "containers", "delete", cid], stderr=subprocess.DEVNULL)
        proc.terminate()
        proc.wait(30)
        log.close()
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--no-containerd", action="store_true")
    ap.add_argument("--no-plain", action="store_true")
    ap.add_argument("--no-zygote", action="store_true")
    args = ap.parse_args()
    runtime = os.path.join(os.path.dirname(sys.executable), "skiff-runc")
    import compileall

    src = os.path.join(REPO, "src", "skiff")
    ok = compileall.compile_dir(os.path.join(src, "shim"), quiet=1)
    for f in ("__init__.py", "fastjson.py"):
        ok = compileall.compile_file(os.path.join(src, f), quiet=1) and ok
    if not ok:
        print("byte-compiling the shim's modules failed", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="shimpss-", dir="/tmp")
    ok = True
    out = [HEADER]
    try:
        bundle = os.path.join(tmp, "image")
        make_bundle(LAYOUT, bundle, ["sleep", "100000"])
        with open(os.path.join(bundle, "config.json")) as f:
            config = json.load(f)
        config["root"] = {"path": os.path.join(bundle, "rootfs"), "readonly": True}
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f)
        steps = []
        if not args.no_containerd:
            steps.append(("containerd", lambda: run_containerd(tmp, args.n)))
        if not args.no_plain:
            steps.append(("skiff-shim plain", lambda: run_skiff(tmp, args.n, False, runtime)))
        if not args.no_zygote:
            steps.append(("skiff-shim zygote", lambda: run_skiff(tmp, args.n, True, runtime)))
        for name, fn in steps:
            try:
                out += fn()
            except Exception as e:
                ok = False
                out.append(f"{name:<34} FAILED: {type(e).__name__}: {e}")
        if shutil.which("conmon"):
            out.append("conmon: installed but not measured by this script (needs podman)")
        else:
            out.append("conmon (podman): not installed here; issue 5 measured about 2 MiB")
    finally:
        with open("/proc/self/mountinfo") as f:
            left = [ln.split()[4] for ln in f if ln.split()[4].startswith(tmp)]
        if left:
            print(f"mounts remain under {tmp}: {left}; not removing it", file=sys.stderr)
            ok = False
        else:
            shutil.rmtree(tmp)
    print(f"{args.n} idle `sleep` containers per program; MiB; /ctr = sum divided by {args.n}")
    print("\n".join(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
