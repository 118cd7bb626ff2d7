"""`skiff build` (also `image build`, `builder build`) and `builder prune`, over the classic
builder's ``POST /build`` as the docker CLI drives it.

The context is sent as the docker CLI sends it: a tar of the context directory made while it is
uploaded (chunked; never held whole in memory), ``.dockerignore`` applied with
``skiff.dockerignore`` (the Dockerfile and ``.dockerignore`` are always sent), entries in walk
order (each directory's names sorted), uid/gid 0, modes kept, symlinks as symlinks, hard links as
links; a Dockerfile from outside the context or from stdin (``-f -``) travels inside the tar
under a generated name ``.dockerfile.<20 hex>`` that is appended to ``.dockerignore``. A context
``-`` is a tar (plain or compressed, passed through) or a Dockerfile. The daemon's JSON stream is
rendered as docker's jsonmessage does: ``stream`` text verbatim, ``errorDetail`` ends the build
with its message on stderr and its code as the exit status, ``aux`` carries the image ID.
"""

from __future__ import annotations

import os
import stat
import sys

from skiff import fastjson
from skiff.cli.flags import Spec, parse
from skiff.cli.http import APIError, Client, CLIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO

    Write = Callable[[bytes], None]

DEFAULT_DOCKERFILE = "Dockerfile"
CHUNK = 1 << 20

BUILD_SPEC = Spec(
    "t|tag=", "f|file:", "build-arg=", "target:", "no-cache", "pull", "q|quiet", "network:",
    "add-host=", "label=", "rm", "force-rm", "m|memory:", "memory-swap:", "c|cpu-shares#",
    "cpuset-cpus:", "cpuset-mems:", "cpu-period#", "cpu-quota#", "shm-size:", "platform:",
    "cache-from=", "iidfile:", "compress", "cgroup-parent:", "ulimit=", "security-opt=",
    "isolation:", "squash", "disable-content-trust")
BUILD_SPEC.defaults["rm"] = True            # --rm defaults to true; --rm=false turns it off


# ---- the context tar

def _is_url(ctx: str) -> bool:
    return "://" in ctx or ctx.startswith("git@") or ctx.startswith("github.com/")


def is_archive(head: bytes) -> bool:
    """The CLI's IsArchive: compressed (gzip, bzip2, xz, zstd) or a valid first tar header."""
    if head.startswith((b"\x1f\x8b\x08", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")):
        return True
    if len(head) < 512:
        return False
    import tarfile

    try:
        tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


class _Sink:
    """Where the context goes: a tar stream written as docker's archive package writes it (ustar
    headers, PAX records where needed, two zero blocks at the end and no padding to a 10 KiB
    record), gathered into pieces of up to ``CHUNK`` bytes for ``write`` (through gzip when
    compressing). ``sent`` counts the bytes handed to ``write``."""

    def __init__(self, write: Write, compress: bool) -> None:
        self._write = write
        self.sent = 0
        self._buf = bytearray()
        self._z: Any = None
        if compress:
            import zlib

            self._z = zlib.compressobj(6, zlib.DEFLATED, 31)   # gzip framing

    def _out(self, b: bytes) -> None:
        if b:
            self.sent += len(b)
            self._write(b)

    def _flush(self, final: bool) -> None:
        while len(self._buf) >= CHUNK or (final and self._buf):
            data = bytes(self._buf[:CHUNK])
            del self._buf[:CHUNK]
            self._out(self._z.compress(data) if self._z is not None else data)

    def write(self, b: bytes) -> None:
        self._buf += b
        if len(self._buf) >= CHUNK:
            self._flush(False)

    def member(self, ti: Any, f: Any = None) -> None:
        """One tar member: its header, then (for a regular file) ``ti.size`` bytes read from ``f``
        in pieces, padded to the 512-byte block."""
        import tarfile

        self.write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if not ti.isreg() or not ti.size:
            return
        left = ti.size
        while left:
            b = f.read(min(CHUNK, left))
            if not b:
                raise CLIError(f"error sending the build context: {ti.name} is shorter than its "
                               f"{ti.size} bytes (it changed while it was read)", 1)
            self.write(b)
            left -= len(b)
        if ti.size % 512:
            self.write(b"\0" * (512 - ti.size % 512))

    def end_tar(self) -> None:
        self.write(b"\0" * 1024)

    def close(self) -> None:
        self._flush(True)
        if self._z is not None:
            self._out(self._z.flush())
            self._z = None


class ContextPlan:
    """What to send: either a local directory tar (``root``, with ignore patterns) or stdin's
    bytes; plus an extra Dockerfile to put inside (``extra_dockerfile``). ``dockerfile`` is the
    ``dockerfile`` query parameter (relative to the context root; "" = the daemon's default)."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.patterns: list[str] = []
        self.dockerfile = ""
        self.extra_dockerfile: bytes | None = None
        self.extra_name = ""
        self.stdin_head = b""
        self.stdin: BinaryIO | None = None
        self.stdin_dockerfile: bytes | None = None


def _random_name() -> str:
    return ".dockerfile." + os.urandom(10).hex()


def _eval_dockerfile(ctx_dir: str, given: str) -> str:
    """getDockerfileRelPath: the Dockerfile's path relative to ``ctx_dir`` (may start with ../)."""
    if given:
        path = os.path.abspath(given)
    else:
        path = os.path.join(ctx_dir, DEFAULT_DOCKERFILE)
        if not os.path.lexists(path) and os.path.lexists(os.path.join(ctx_dir, DEFAULT_DOCKERFILE.lower())):
            path = os.path.join(ctx_dir, DEFAULT_DOCKERFILE.lower())
    real = os.path.realpath(path)
    try:
        os.lstat(real)
    except FileNotFoundError:
        raise CLIError(f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
                       f"lstat {real}: no such file or directory", 1) from None
    except OSError as e:
        raise CLIError(f"unable to prepare context: unable to stat Dockerfile: {e.strerror}", 1) from None
    return os.path.relpath(real, ctx_dir)


def plan_context(ctx: str, dockerfile: str, stdin: BinaryIO | None) -> ContextPlan:
    """Decide what the context is, as the docker CLI does (errors worded as its are)."""
    p = ContextPlan()
    if dockerfile == "-" and ctx == "-":
        raise CLIError("invalid argument: can't use stdin for both build context and dockerfile", 1)
    if ctx == "-":
        if stdin is None:
            raise CLIError("unable to prepare context: no standard input to read the context from", 1)
        head = b""
        while len(head) < 1024:
            b = stdin.read(1024 - len(head))
            if not b:
                break
            head += b
        if is_archive(head):
            p.stdin, p.stdin_head, p.dockerfile = stdin, head, dockerfile
            return p
        if dockerfile:
            raise CLIError("unable to prepare context: ambiguous Dockerfile source: both stdin and flag "
                           "correspond to Dockerfiles", 1)
        p.stdin_dockerfile = head + stdin.read()
        p.dockerfile = DEFAULT_DOCKERFILE
        return p
    if not os.path.exists(ctx):      # a local path first, as docker: then URLs, refused here
        if _is_url(ctx):
            raise CLIError(f"unable to prepare context: remote build contexts are not supported by skiff "
                           f"(no network access for the client): {ctx}", 1)
        raise CLIError(f'unable to prepare context: path "{ctx}" not found', 1)
    root = os.path.realpath(os.path.abspath(ctx))
    if not os.path.isdir(root):
        raise CLIError(f"unable to prepare context: context must be a directory: {root}", 1)
    p.root = root
    if dockerfile == "-":
        if stdin is None:
            raise CLIError("unable to prepare context: no standard input to read the Dockerfile from", 1)
        p.extra_dockerfile = stdin.read()
        rel = "-"
    else:
        rel = _eval_dockerfile(root, dockerfile)
        if rel.startswith("../"):
            try:
                with open(os.path.join(root, rel), "rb") as f:
                    p.extra_dockerfile = f.read()
            except OSError as e:
                raise CLIError(f"unable to open Dockerfile: open {os.path.normpath(os.path.join(root, rel))}: "
                               f"{(e.strerror or str(e)).lower()}", 1) from None
    from skiff import dockerignore

    try:
        with open(os.path.join(root, ".dockerignore"), encoding="utf-8", errors="surrogateescape") as f:
            patterns = dockerignore.parse(f.read())
    except FileNotFoundError:
        patterns = []
    except OSError as e:
        raise CLIError(f"open {root}/.dockerignore: {(e.strerror or str(e)).lower()}", 1) from None
    # TrimBuildFilesFromExcludes: the daemon needs these two even when .dockerignore lists them
    if dockerignore.Matcher(patterns).excluded(".dockerignore"):
        patterns.append("!.dockerignore")
    if p.extra_dockerfile is None and dockerignore.Matcher(patterns).excluded(rel):
        patterns.append("!" + rel)
    p.patterns = patterns
    if p.extra_dockerfile is not None:
        p.extra_name = _random_name()
        p.dockerfile = p.extra_name
    else:
        p.dockerfile = rel
    return p


class _Walker:
    """The context directory as tar members, in docker's order (filepath.Walk: depth first,
    each directory's names sorted), with TarWithOptions's exclusion rules."""

    def __init__(self, root: str, patterns: list[str]) -> None:
        from skiff import dockerignore

        self.root = root
        self.matcher = dockerignore.Matcher(patterns)
        self.inodes: dict[tuple[int, int], str] = {}

    def walk(self, rel: str = "") -> Any:
        """Yield (relative path, absolute path, lstat result) of what is sent."""
        d = os.path.join(self.root, rel) if rel else self.root
        try:
            names = sorted(os.listdir(d))
        except PermissionError:
            raise CLIError(f"error checking context: can't stat '{d}'", 1) from None
        for name in names:
            r = f"{rel}/{name}" if rel else name
            full = os.path.join(d, name)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue                    # removed while we walk
            isdir = stat.S_ISDIR(st.st_mode)
            if self.matcher.excluded(r):
                if isdir and self.matcher.may_reinclude_under(r):    # a "!" pattern below it
                    yield from self.walk(r)
                continue
            yield r, full, st
            if isdir:
                yield from self.walk(r)


def _tarinfo(rel: str, full: str, st: os.stat_result, inodes: dict[tuple[int, int], str]) -> Any:
    import tarfile

    ti = tarfile.TarInfo(rel)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.mtime = int(st.st_mtime)
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    m = st.st_mode
    if stat.S_ISREG(m):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in inodes:
            ti.type = tarfile.LNKTYPE
            ti.linkname = inodes[key]
        else:
            if st.st_nlink > 1:
                inodes[key] = rel
            ti.type = tarfile.REGTYPE
            ti.size = st.st_size
    elif stat.S_ISDIR(m):
        ti.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(m):
        ti.type = tarfile.SYMTYPE
        ti.linkname = os.readlink(full)
    elif stat.S_ISFIFO(m):
        ti.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(m) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        return None                         # sockets: tar cannot hold them (docker skips them too)
    return ti


def write_context(plan: ContextPlan, write: Write, compress: bool = False) -> int:
    """Stream the context ``plan`` describes to ``write`` in pieces; return the bytes sent."""
    import tarfile

    sink = _Sink(write, compress)
    if plan.stdin is not None:
        sink.write(plan.stdin_head)
        while True:
            b = plan.stdin.read(CHUNK)
            if not b:
                break
            sink.write(b)
        sink.close()
        return sink.sent
    if plan.stdin_dockerfile is not None:
        import io
        import time

        ti = tarfile.TarInfo(DEFAULT_DOCKERFILE)
        ti.size, ti.mode, ti.mtime = len(plan.stdin_dockerfile), 0o644, int(time.time())
        sink.member(ti, io.BytesIO(plan.stdin_dockerfile))
    else:
        _write_dir(sink, plan)
    sink.end_tar()
    sink.close()
    return sink.sent


def _write_dir(sink: _Sink, plan: ContextPlan) -> None:
    import io
    import tarfile
    import time

    assert plan.root is not None
    walker = _Walker(plan.root, plan.patterns)
    extra = plan.extra_dockerfile
    saw_ignore = False
    for rel, full, st in walker.walk():
        ti = _tarinfo(rel, full, st, walker.inodes)
        if ti is None:
            sys.stderr.write(f"Can't add file {full} to tar: archive/tar: sockets not supported\n")
            continue
        if ti.type == tarfile.REGTYPE:
            if extra is not None and rel == ".dockerignore":
                # the generated Dockerfile name joins the patterns, so COPY never sees it
                saw_ignore = True
                with open(full, "rb") as f:
                    data = f.read() + b"\n" + plan.extra_name.encode() + b"\n"
                ti.size = len(data)
                sink.member(ti, io.BytesIO(data))
                continue
            try:
                f = open(full, "rb")
            except PermissionError:
                raise CLIError(f"error checking context: no permission to read from '{full}'", 1) from None
            with f:
                if os.fstat(f.fileno()).st_size != ti.size:
                    raise CLIError(f"error sending the build context: {full} changed size while it was read", 1)
                sink.member(ti, f)
        else:
            sink.member(ti)
    if extra is not None:
        now = int(time.time())
        if not saw_ignore:
            data = b".dockerignore\n" + plan.extra_name.encode() + b"\n"
            ti = tarfile.TarInfo(".dockerignore")
            ti.size, ti.mode, ti.mtime = len(data), 0o600, now
            sink.member(ti, io.BytesIO(data))
        ti = tarfile.TarInfo(plan.extra_name)
        ti.size, ti.mode, ti.mtime = len(extra), 0o600, now
        sink.member(ti, io.BytesIO(extra))


# ---- the request

def _build_args(items: list[str]) -> dict[str, str | None]:
    """--build-arg K=V, or K alone: taken from the environment when set there, else null."""
    out: dict[str, str | None] = {}
    for it in items:
        k, eq, v = it.partition("=")
        if not k:
            raise CLIError(f'invalid argument "{it}" for "--build-arg" flag: invalid environment variable: {it}', 125)
        if eq:
            out[k] = v
        else:
            out[k] = os.environ.get(k)
    return out


def _labels(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        if not k.strip():
            raise CLIError(f'invalid argument "{it}" for "--label" flag: invalid label format', 125)
        out[k] = v
    return out


def _ulimits(items: list[str]) -> list[dict]:
    out = []
    for it in items:
        name, eq, val = it.partition("=")
        soft, _, hard = val.partition(":")
        try:
            s = int(soft)
            h = int(hard) if hard else s
        except ValueError:
            raise CLIError(f'invalid argument "{it}" for "--ulimit" flag: invalid ulimit argument: {it}', 125) from None
        if not eq or not name:
            raise CLIError(f'invalid argument "{it}" for "--ulimit" flag: invalid ulimit argument: {it}', 125)
        out.append({"Name": name, "Hard": h, "Soft": s})
    return out


def build_query(o: dict, dockerfile: str) -> dict:
    """The query string the docker CLI (28) sends, non-default values only."""
    from skiff.cli.container import _multi, ram_bytes

    q: dict = {"t": o["tag"], "extrahosts": o["add_host"], "securityopt": o["security_opt"]}
    if o["quiet"]:
        q["q"] = "1"
    if o["no_cache"]:
        q["nocache"] = "1"
    if not o["rm"]:
        q["rm"] = "0"
    if o["force_rm"]:
        q["forcerm"] = "1"
    if o["pull"]:
        q["pull"] = "1"
    if o["squash"]:
        q["squash"] = "1"
    if o["isolation"]:
        q["isolation"] = o["isolation"]
    if o["cpuset_cpus"]:
        q["cpusetcpus"] = o["cpuset_cpus"]
    if o["network"] and o["network"] != "default":
        q["networkmode"] = o["network"]
    if o["cpuset_mems"]:
        q["cpusetmems"] = o["cpuset_mems"]
    for key, name in (("cpu_shares", "cpushares"), ("cpu_quota", "cpuquota"), ("cpu_period", "cpuperiod")):
        if o[key]:
            q[name] = str(o[key])
    if o["memory"]:
        q["memory"] = str(ram_bytes(o["memory"]))
    if o["memory_swap"]:
        q["memswap"] = "-1" if o["memory_swap"] == "-1" else str(ram_bytes(o["memory_swap"]))
    if o["cgroup_parent"]:
        q["cgroupparent"] = o["cgroup_parent"]
    if o["shm_size"]:
        q["shmsize"] = str(ram_bytes(o["shm_size"]))
    if dockerfile:
        q["dockerfile"] = dockerfile
    if o["target"]:
        q["target"] = o["target"]
    if o["ulimit"]:
        q["ulimits"] = fastjson.dumps(_ulimits(o["ulimit"]))
    if o["build_arg"]:
        q["buildargs"] = fastjson.dumps(_build_args(o["build_arg"]))
    if o["label"]:
        q["labels"] = fastjson.dumps(_labels(o["label"]))
    cache_from = [c for v in o["cache_from"] for c in v.split(",") if c]
    if cache_from:
        q["cachefrom"] = fastjson.dumps(cache_from)     # JSON, not repeated keys
    platform = o["platform"] if o["platform"] is not None else os.environ.get("DOCKER_DEFAULT_PLATFORM", "")
    if platform:
        q["platform"] = platform.lower()
    q["version"] = "1"
    return _multi({k: v for k, v in q.items() if v != []})


def _registry_config() -> str:
    """X-Registry-Config: base64url JSON of the credentials in the CLI config (``{}`` if none)."""
    import base64

    cfgdir = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    auths: dict = {}
    try:
        cfg = fastjson.load_file(os.path.join(cfgdir, "config.json"))
    except (OSError, ValueError):
        cfg = {}
    for host, ent in ((cfg or {}).get("auths") or {}).items():
        if isinstance(ent, dict) and ent.get("auth"):
            user, _, pw = base64.b64decode(ent["auth"]).decode().partition(":")
            auths[host] = {"username": user, "password": pw, "serveraddress": host}
    return base64.urlsafe_b64encode(fastjson.dumps(auths).encode()).decode()


# ---- the output

class BuildFailed(CLIError):
    pass


def render(body: Any, out: Any, tty: bool = False) -> str:
    """Display the build's JSON stream (jsonmessage): returns the image ID from ``aux``.
    ``errorDetail`` (or a bare ``error``) raises BuildFailed with its code (default 1)."""
    image_id = ""
    for line in body.lines():
        try:
            ev = fastjson.loads(line)
        except ValueError:
            raise CLIError(f"error reading the build output: not JSON: {line[:200]!r}", 1) from None
        if not isinstance(ev, dict):
            continue
        if ev.get("errorDetail") or ev.get("error"):
            det = ev.get("errorDetail") or {}
            msg = det.get("message") or ev.get("error") or ""
            code = det.get("code") or 1
            raise BuildFailed(msg, int(code))
        if "aux" in ev:
            aux = ev["aux"]
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
            continue
        if ev.get("stream"):
            out.write(ev["stream"])
        elif ev.get("status"):
            if not tty and (ev.get("progressDetail") or ev.get("progress")):
                continue                     # per-chunk progress: only on a terminal
            lid = f"{ev['id']}: " if ev.get("id") else ""
            bar = ""
            if tty:
                from skiff.cli.image import progress_bar

                bar = progress_bar(ev)
            out.write(f"{lid}{ev['status']} {bar}".rstrip() + "\n")
        out.flush()
    return image_id


def _sending_line(n: int) -> str:
    from skiff.cli.fmt import human_size

    return f"Sending build context to Docker daemon {human_size(n, 4):>8}"


class _Text:
    """A text buffer (docker's bytes.Buffer for -q)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, s: str) -> None:
        self.parts.append(s)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return "".join(self.parts)


def build(cli: Client, args: list[str]) -> int:
    o, pos = parse(BUILD_SPEC, args, True, "build")
    if len(pos) != 1:
        raise CLIError("\"docker build\" requires exactly 1 argument.\nSee 'docker build --help'.\n\n"
                       "Usage:  docker build [OPTIONS] PATH | URL | -\n\nBuild an image from a Dockerfile", 1)
    for t in o["tag"]:
        repo = t.split("@", 1)[0]
        if ":" in repo.rsplit("/", 1)[-1]:
            repo = repo.rsplit(":", 1)[0]
        if not repo or any(c.isspace() for c in t):
            raise CLIError(f'invalid argument "{t}" for "-t, --tag" flag: invalid reference format', 125)
        if repo != repo.lower():
            raise CLIError(f'invalid argument "{t}" for "-t, --tag" flag: invalid reference format: '
                           'repository name must be lowercase', 125)
    iidfile = o["iidfile"]
    if iidfile:
        try:
            os.unlink(iidfile)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise CLIError(f"Removing image ID file: {e}", 1) from None
    quiet = o["quiet"]
    stdin = sys.stdin.buffer if (o["file"] == "-" or pos[0] == "-") else None
    plan = plan_context(pos[0], o["file"] or "", stdin)
    query = build_query(o, plan.dockerfile)
    tty = not quiet and sys.stdout.isatty()
    prog: Any = _Text() if quiet else sys.stdout
    out: Any = _Text() if quiet else sys.stdout
    sent = [0]

    def produce(write: Write) -> None:
        last = [0]

        def counted(b: bytes) -> None:
            write(b)
            sent[0] += len(b)
            if tty and sent[0] - last[0] >= CHUNK:
                last[0] = sent[0]
                prog.write(_sending_line(sent[0]) + "\r")
                prog.flush()
        write_context(plan, counted, o["compress"])
        prog.write(_sending_line(sent[0]) + "\r\r\n")
        prog.flush()

    headers = {"X-Registry-Config": _registry_config()}
    try:
        r = cli.upload("POST", "/build", query, produce, "application/x-tar", None, headers)
    except APIError:
        if quiet:
            sys.stderr.write(prog.getvalue())
        raise
    try:
        image_id = render(r.body, out, tty)
    except BuildFailed:
        if quiet:
            sys.stderr.write(prog.getvalue() + out.getvalue())
        raise
    finally:
        r.body.close()
    if quiet:
        image_id = out.getvalue()
        sys.stdout.write(image_id)
    if iidfile:
        if not image_id:
            raise CLIError(f"Server did not provide an image ID. Cannot write {iidfile}", 1)
        try:
            with open(iidfile, "w") as f:
                f.write(image_id)
        except OSError as e:
            raise CLIError(f"open {iidfile}: {(e.strerror or str(e)).lower()}", 1) from None
    return 0


PRUNE_SPEC = Spec("a|all", "filter=", "f|force", "keep-storage:", "max-used-space:", "reserved-space:",
                  "min-free-space:")


def prune(cli: Client, args: list[str]) -> int:
    """`builder prune`: POST /build/prune."""
    from skiff.cli.container import _filters, ram_bytes
    from skiff.cli.fmt import human_size
    from skiff.cli.system import _confirm

    o, pos = parse(PRUNE_SPEC, args, True, "builder prune")
    if pos:
        raise CLIError("\"docker builder prune\" accepts no arguments.\nSee 'docker builder prune --help'.", 1)
    warning = ("WARNING! This will remove all build cache." if o["all"]
               else "WARNING! This will remove all dangling build cache.")
    if not _confirm(o["force"], warning):
        return 0
    q: dict = {}
    if o["all"]:
        q["all"] = "1"
    f = _filters(o["filter"])
    if f:
        q["filters"] = f
    for key, name in (("keep_storage", "keep-storage"), ("max_used_space", "max-used-space"),
                      ("reserved_space", "reserved-space"), ("min_free_space", "min-free-space")):
        if o[key]:
            q[name] = str(ram_bytes(o[key]))
    r = cli.post_json("/build/prune", q) or {}
    ids = r.get("CachesDeleted") or []
    if ids:
        sys.stdout.write("Deleted build cache objects:\n" + "".join(i + "\n" for i in ids) + "\n")
    sys.stdout.write(f"Total reclaimed space: {human_size(r.get('SpaceReclaimed') or 0)}\n")
    return 0
