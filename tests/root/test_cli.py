"""`skiff` against a real skiffd: terminals (through `script` and a pty of our own), exit codes,
and output compared with the real docker CLI's on the same daemon."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest
from skiffd_util import Skiffd

SKIFF = os.path.join(os.path.dirname(sys.executable), "skiff")
pytestmark = pytest.mark.root


@pytest.fixture
def skiffd(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    r = d.docker("image", "inspect", "busybox:latest")
    if r.returncode != 0:
        tar = os.path.join(os.path.dirname(__file__), "..", "..", "build", "images", "busybox.tar")
        assert d.docker("load", "-i", tar).returncode == 0
    yield d
    d.stop()


def skiff(d: Skiffd, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([SKIFF, *args], env=d.env, capture_output=True, text=True, input=input,
                          timeout=timeout)


def script(d: Skiffd, cmd: str, keys: list[tuple[float, str]], timeout: float = 60) -> tuple[int, str]:
    """Run CMD in `script`'s pseudo-terminal, typing each key string after its delay."""
    p = subprocess.Popen(["script", "-qec", cmd, "/dev/null"], env=d.env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.stdin is not None
    try:
        for delay, text in keys:
            time.sleep(delay)
            p.stdin.write(text.encode())
            p.stdin.flush()
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out.decode(errors="replace")


def test_tty_shell_size_and_exit_code(skiffd):
    rc, out = script(skiffd, f"stty rows 22 cols 77; {SKIFF} run -it --rm busybox sh -c 'stty size; tty; exec sh'",
                     [(2.0, "echo sum-$((40+2))\n"), (1.0, "exit 3\n")])
    assert rc == 3, out
    assert "22 77" in out and "/dev/pts/0" in out and "sum-42" in out
    skiffd.docker("run", "-d", "--name", "ex", "busybox", "sleep", "300")
    rc, out = script(skiffd, f"{SKIFF} exec -it ex sh -c 'tty; exit 6'", [])
    assert rc == 6 and "/dev/pts/" in out, out


def test_tty_detach_keys_and_attach_back(skiffd):
    rc, out = script(skiffd, f"{SKIFF} run -it --name dk busybox sh",
                     [(2.0, "echo before\n"), (0.5, "\x10\x11")])
    assert rc == 0, out
    assert skiff(skiffd, "inspect", "-f", "{{.State.Status}}", "dk").stdout.strip() == "running"
    rc, out = script(skiffd, f"{SKIFF} attach dk", [(1.5, "echo again\n"), (0.5, "exit 4\n")])
    assert rc == 4 and "again" in out, out
    assert skiff(skiffd, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "dk").stdout.strip() == "exited 4"
    # a custom detach sequence on attach leaves the container running too
    skiffd.docker("start", "dk")
    rc, out = script(skiffd, f"{SKIFF} attach --detach-keys ctrl-a,x dk", [(1.5, "\x01x")])
    assert rc == 0, out
    assert skiff(skiffd, "inspect", "-f", "{{.State.Running}}", "dk").stdout.strip() == "true"


def _read_until(fd: int, want: bytes, timeout: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while want not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"did not see {want!r} in {buf[-500:]!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            buf += data
    return buf


def test_tty_resize_on_sigwinch(skiffd):
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(SKIFF, [SKIFF, "run", "-it", "--rm", "busybox", "sh"], skiffd.env)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        _read_until(fd, b"# ", 60)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))   # the kernel sends SIGWINCH
        time.sleep(1)
        os.write(fd, b"stty size\n")
        assert b"33 111" in _read_until(fd, b"33 111", 30)
        os.write(fd, b"exit 0\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def test_run_exit_codes_and_errors(skiffd):
    assert skiff(skiffd, "run", "--rm", "busybox", "sh", "-c", "exit 3").returncode == 3
    r = skiff(skiffd, "run", "--rm", "busybox", "/no/such/binary")
    assert r.returncode == 127 and "Error response from daemon" in r.stderr
    assert skiff(skiffd, "run", "--rm", "busybox", "/etc").returncode == 126
    r = skiff(skiffd, "run", "--rm", "--pull", "never", "nosuchimage:zz", "true")
    assert r.returncode == 125 and "No such image" in r.stderr
    r = skiff(skiffd, "run", "--bogus", "busybox")
    assert r.returncode == 125 and "unknown flag: --bogus" in r.stderr
    r = skiff(skiffd, "inspect", "nosuch")
    assert r.returncode == 1 and r.stdout.strip() == "[]" and "No such object: nosuch" in r.stderr
    r = skiff(skiffd, "stop", "nosuch")
    assert r.returncode == 1 and r.stderr.strip() == "Error response from daemon: No such container: nosuch"
    r = subprocess.run([SKIFF, "-H", "unix:///nonexistent.sock", "ps"], capture_output=True, text=True)
    assert r.returncode == 1 and "Cannot connect to the Docker daemon at unix:///nonexistent.sock" in r.stderr
    assert skiff(skiffd, "run", "-i", "--rm", "busybox", "cat", input="through stdin\n").stdout == "through stdin\n"


DURATION = re.compile(r"(Less than a second|About an? (minute|hour)|\d+ (second|minute|hour|day|week|month|year)s?)")


def _steady(text: str) -> str:
    """Output with its human durations ("2 seconds ago", "Up 1 second") replaced and column
    padding collapsed: the two CLIs run a moment apart, so those may differ by a second."""
    return re.sub(r" {2,}", "  ", DURATION.sub("<t>", text))


def test_output_matches_docker_cli(skiffd):
    """ps, inspect, images, top, logs as the docker CLI prints them on the same daemon."""
    skiffd.docker("run", "-d", "--name", "same", "-l", "k=v", "busybox", "sh", "-c", "echo out; echo err >&2; sleep 300")
    skiffd.docker("run", "--name", "done", "busybox", "true")
    time.sleep(1)
    for args in (["ps"], ["ps", "-a"], ["ps", "-aq"], ["ps", "-a", "--no-trunc"],
                 ["ps", "-a", "--format", "table {{.Names}}\t{{.Labels}}\t{{.State}}"],
                 ["ps", "--filter", "name=same", "--format", "{{.ID}} {{json .Names}}"],
                 ["images"], ["images", "-q"], ["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"],
                 ["inspect", "-f", "{{.Name}} {{json .Config.Labels}} {{.State.Running}}", "same"],
                 ["inspect", "-f", "{{json .Config.Cmd}}", "busybox"],
                 ["logs", "same"], ["logs", "--tail", "1", "same"], ["wait", "done"],
                 ["history", "busybox"], ["version", "--format", "{{.Server.APIVersion}}"]):
        want = skiffd.docker(*args)
        got = skiff(skiffd, *args)
        assert (got.returncode, _steady(got.stdout), got.stderr) == \
            (want.returncode, _steady(want.stdout), want.stderr), args
    for args in (["inspect", "same"], ["inspect", "busybox"], ["inspect", "same", "busybox"]):
        want = skiffd.docker(*args)
        got = skiff(skiffd, *args)
        assert got.returncode == want.returncode == 0
        assert json.loads(got.stdout) == json.loads(want.stdout)
    want = skiffd.docker("top", "same").stdout.splitlines()
    got = skiff(skiffd, "top", "same").stdout.splitlines()
    assert got[0] == want[0] and len(got) == len(want)


def test_signals_are_forwarded_to_the_container(skiffd):
    p = subprocess.Popen([SKIFF, "run", "--rm", "busybox", "sh", "-c",
                          'trap "echo got-term; exit 5" TERM; echo ready; sleep 60 & wait'],
                         env=skiffd.env, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 5 and out == "got-term\n"


def test_more_commands_match_docker_cli(skiffd, tmp_path):
    """system df, network ls, volume ls, export | import, cp both ways."""
    assert skiff(skiffd, "volume", "create", "v1").stdout == "v1\n"
    assert skiff(skiffd, "network", "create", "n1").returncode == 0
    skiffd.docker("create", "--name", "c1", "-v", "v1:/data", "busybox", "true")
    for args in (["system", "df"], ["network", "ls"], ["volume", "ls"], ["network", "ls", "-q"],
                 ["volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "v1"]):
        want = skiffd.docker(*args)
        got = skiff(skiffd, *args)
        assert (got.returncode, got.stdout) == (want.returncode, want.stdout), args
    tar = tmp_path / "c1.tar"
    assert skiff(skiffd, "export", "-o", str(tar), "c1").returncode == 0
    r = skiff(skiffd, "import", "-c", 'CMD ["/bin/echo", "imported"]', str(tar), "imp:1")
    assert r.returncode == 0 and r.stdout.startswith("sha256:"), r.stderr
    assert skiff(skiffd, "run", "--rm", "imp:1").stdout == "imported\n"
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "sub" / "f").write_text("in a dir\n")
    skiffd.docker("run", "-d", "--name", "c2", "busybox", "sleep", "300")
    assert skiff(skiffd, "cp", str(tmp_path / "dir"), "c2:/tmp/").returncode == 0
    assert skiff(skiffd, "exec", "c2", "cat", "/tmp/dir/sub/f").stdout == "in a dir\n"
    assert skiff(skiffd, "cp", "c2:/tmp/dir", str(tmp_path / "back")).returncode == 0
    assert (tmp_path / "back" / "sub" / "f").read_text() == "in a dir\n"
    r = skiff(skiffd, "cp", "c2:/nope", str(tmp_path / "x"))
    assert r.returncode == 1 and "Could not find the file /nope" in r.stderr
    assert skiff(skiffd, "rm", "-f", "c1", "c2").returncode == 0
    assert skiff(skiffd, "rmi", "imp:1").returncode == 0
    assert skiff(skiffd, "network", "rm", "n1").stdout == "n1\n"
    assert skiff(skiffd, "volume", "rm", "v1").stdout == "v1\n"


def test_streamed_uploads_stats_stream_and_help(skiffd, tmp_path):
    """load from a file (Content-Length) and from a pipe (chunked), a tar on stdin for cp,
    `stats` over the daemon's stream, and --help without touching the daemon."""
    tar = os.path.join(os.path.dirname(__file__), "..", "..", "build", "images", "busybox.tar")
    r = skiff(skiffd, "load", "-i", tar)
    assert r.returncode == 0 and "Loaded image: busybox:latest" in r.stdout, r.stderr
    with open(tar, "rb") as f:
        p = subprocess.run(f"cat | {SKIFF} load", shell=True, env=skiffd.env, stdin=f, capture_output=True,
                           text=True, timeout=60)
    assert p.returncode == 0 and "Loaded image: busybox:latest" in p.stdout, p.stderr
    skiffd.docker("run", "-d", "--name", "st", "busybox", "sleep", "300")
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"from stdin\n"
        ti = tarfile.TarInfo("piped.txt")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    r2 = subprocess.run([SKIFF, "cp", "-", "st:/tmp"], env=skiffd.env, input=buf.getvalue(), capture_output=True,
                        timeout=60)
    assert r2.returncode == 0, r2.stderr
    assert skiff(skiffd, "exec", "st", "cat", "/tmp/piped.txt").stdout == "from stdin\n"
    sp = subprocess.Popen([SKIFF, "stats", "--format", "{{.Name}} {{.PIDs}}", "st"], env=skiffd.env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sp.stdout is not None
        first = sp.stdout.readline()
        second = sp.stdout.readline()     # a second redraw from the same stream
    finally:
        sp.kill()
        sp.wait()
    assert first == "st 1\n" and second == "st 1\n", (first, second)
    assert skiff(skiffd, "rm", "-f", "st").returncode == 0
    h = subprocess.run([SKIFF, "-H", "unix:///nonexistent/skiff.sock", "stats", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert h.returncode == 0 and h.stdout.startswith("Usage:  skiff stats [OPTIONS] [CONTAINER...]\n")
    assert "--no-stream" in h.stdout
