"""The classic Dockerfile builder of skiffd (moby 20.10's ``builder/dockerfile``).

A build runs the stages of the parsed Dockerfile (``skiff.daemon.build.dockerfile``) up to the
target, one instruction at a time, each step making an image whose parent is the previous
step's (the chain the cache and ``docker history`` use):

- metadata instructions (ENV, LABEL, CMD, ...) change the run config only: the new image has
  the parent's layers and an ``empty_layer`` history entry. Unlike dockerd 20.10, which creates
  (and never starts) a container for each such step, no container is made, so their output has
  no "Running in" / "Removing intermediate container" lines;
- RUN runs a real container through ``ContainerService`` (the build's network mode, extra
  hosts and limits; output streamed as it comes); its snapshot's changes are the layer
  (containerd's Diff, uncompressed), and when the container is removed afterwards (``rm``)
  its snapshot itself is committed as the new layer's snapshot instead of re-applying the
  layer;
- COPY/ADD and WORKDIR write into a new active snapshot on the parent's, mounted privately
  under ``<exec-root>/build`` (``skiff.daemon.build.fsops``), then diffed and committed the
  same way.

Layers are ``application/vnd.oci.image.layer.v1.tar`` (uncompressed: no gzip on the build's
path); image configs are written as moby's (``container_config`` with the step's command,
``history[].created_by`` such as ``/bin/sh -c #(nop)  ENV A=1``); image IDs are config digests.
Each image gets a build record (``ImageService.add_build_image``) with its parent and cache
key (``skiff.daemon.build.cache``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import posixpath
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import skiff
from skiff.daemon.api.errors import ApiError, InvalidParameter, NotFound
from skiff.daemon.build import cache as cachemod
from skiff.daemon.build.context import BuildContext, ContextError
from skiff.daemon.containerd.client import Descriptor

log = logging.getLogger("skiff.daemon.build")

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"  # 1024 zero bytes
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ["/bin/sh", "-c"]
BUILTIN_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
                "NO_PROXY", "no_proxy")
SUPPORTED_PLATFORMS = ("", "linux", "linux/amd64", "linux/x86_64", "linux/amd64/v1")


class BuildError(Exception):
    """A failure after the output started (reported as ``errorDetail``); ``code`` is what the
    CLI exits with (a RUN's exit code), None for none."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BuildOptions:
    tags: list[str] = field(default_factory=list)          # normalised full names
    dockerfile: str = "Dockerfile"
    nocache: bool = False
    pull: bool = False
    rm: bool = True
    forcerm: bool = False
    buildargs: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    platform: str = ""
    cachefrom: list[str] = field(default_factory=list)
    host_config: dict[str, Any] = field(default_factory=dict)   # NetworkMode, ExtraHosts, limits for RUN
    registry_auth: dict[str, Any] = field(default_factory=dict)  # X-Registry-Config


# --- Go's formatting (the #(nop) comments are made with %q / %v) ------------------------------

def go_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                        "\v": "\\v"}[ch])
        elif o < 0x20 or o == 0x7f:
            out.append(f"\\x{o:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_quote_list(items: list[str] | None) -> str:
    return "[" + " ".join(go_quote(x) for x in items or []) + "]"


def go_list(items: list[str] | None) -> str:
    return "[" + " ".join(items or []) + "]"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String``."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, div in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
            if ns < div * 1000:
                text = _trim_frac(ns / div) + unit
                break
    else:
        h, rest = divmod(ns, 3_600_000_000_000)
        m, rest = divmod(rest, 60_000_000_000)
        s = _trim_frac(rest / 1e9) + "s"
        text = (f"{h}h{m}m" if h else f"{m}m" if m else "") + s
    return ("-" if neg else "") + text


def _trim_frac(x: float) -> str:
    text = f"{x:.9f}".rstrip("0").rstrip(".")
    return text


def go_rune(n: int) -> str:
    """Go's ``%q`` of an int (a quoted character literal)."""
    if n == ord("'"):
        return "'\\''"
    if n == ord("\\"):
        return "'\\\\'"
    if n < 0x20 or n == 0x7f:
        esc = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}
        return "'" + esc.get(n, f"\\x{n:02x}") + "'"
    return "'" + chr(n) + "'"


def healthcheck_comment(hc: dict[str, Any]) -> str:
    """``HEALTHCHECK %q`` of moby 20.10's HealthConfig (Test, Interval, Timeout,
    StartPeriod, Retries)."""
    return (f"&{{{go_quote_list(hc.get('Test'))} {go_quote(go_duration(int(hc.get('Interval') or 0)))} "
            f"{go_quote(go_duration(int(hc.get('Timeout') or 0)))} "
            f"{go_quote(go_duration(int(hc.get('StartPeriod') or 0)))} {go_rune(int(hc.get('Retries') or 0))}}}")


def red(text: str) -> str:
    """What moby's builder writes to its stderr (a RUN's stderr, Dockerfile warnings) in the
    JSON stream: in red."""
    return "\x1b[91m" + text + "\x1b[0m"


def now_rfc3339() -> str:
    t = _dt.datetime.now(_dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


def shape_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """A run config in moby's ``container.Config`` shape and order (omitempty fields only
    when set)."""
    c = dict(cfg or {})
    out: dict[str, Any] = {
        "Hostname": c.get("Hostname") or "", "Domainname": c.get("Domainname") or "",
        "User": c.get("User") or "", "AttachStdin": False, "AttachStdout": False, "AttachStderr": False,
    }
    if c.get("ExposedPorts"):
        out["ExposedPorts"] = dict(c["ExposedPorts"])
    out.update({"Tty": False, "OpenStdin": False, "StdinOnce": False,
                "Env": list(c["Env"]) if c.get("Env") is not None else None,
                "Cmd": list(c["Cmd"]) if c.get("Cmd") is not None else None})
    if c.get("Healthcheck"):
        out["Healthcheck"] = dict(c["Healthcheck"])
    if c.get("ArgsEscaped"):
        out["ArgsEscaped"] = True
    out["Image"] = c.get("Image") or ""
    out["Volumes"] = dict(c["Volumes"]) if c.get("Volumes") else None
    out["WorkingDir"] = c.get("WorkingDir") or ""
    out["Entrypoint"] = list(c["Entrypoint"]) if c.get("Entrypoint") is not None else None
    out["OnBuild"] = list(c["OnBuild"]) if c.get("OnBuild") is not None else None
    out["Labels"] = dict(c["Labels"]) if c.get("Labels") is not None else None
    if c.get("StopSignal"):
        out["StopSignal"] = c["StopSignal"]
    if c.get("Shell"):
        out["Shell"] = list(c["Shell"])
    return out


def _env_map(env: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in env or []:
        k, _, v = e.partition("=")
        out.setdefault(k, v)
    return out


def _set_env(env: list[str], key: str, value: str) -> list[str]:
    out = list(env)
    for i, e in enumerate(out):
        if e.partition("=")[0] == key:
            out[i] = f"{key}={value}"
            return out
    out.append(f"{key}={value}")
    return out


def validate_platform(value: str) -> None:
    if value.lower() not in SUPPORTED_PLATFORMS:
        raise InvalidParameter(f"platform {value!r} is not supported: skiffd builds linux/amd64 images only")


# --- build arguments (moby's BuildArgs) -------------------------------------------------------

class BuildArgs:
    def __init__(self, options: dict[str, str | None]) -> None:
        self.options = options
        self.allowed: dict[str, str | None] = {}
        self.meta: dict[str, str | None] = {}
        self.referenced: set[str] = set()

    def clone_for_stage(self) -> BuildArgs:
        b = BuildArgs(self.options)
        b.meta = dict(self.meta)
        b.referenced = set(self.referenced)
        return b

    def add_arg(self, key: str, value: str | None) -> None:
        self.allowed[key] = value
        self.referenced.add(key)

    def _get(self, key: str, mapping: dict[str, str | None]) -> tuple[str, bool]:
        v = self.options.get(key)
        if v is not None and key in self.options:
            return v, True
        default = mapping.get(key)
        if default is None:
            mv = self.meta.get(key)
            if mv is not None:
                return mv, True
            return "", False
        return default, key in mapping

    def all_from(self, mapping: dict[str, str | None]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in [*mapping, *BUILTIN_ARGS]:
            v, ok = self._get(key, mapping)
            if ok:
                out[key] = v
        return out

    def all_allowed(self) -> dict[str, str]:
        return self.all_from(self.allowed)

    def all_meta(self) -> dict[str, str]:
        return self.all_from(self.meta)

    def filter_allowed(self, env: list[str] | None) -> list[str]:
        have = _env_map(env)
        return [f"{k}={v}" for k, v in self.all_allowed().items() if k not in have]

    def referenced_or_not_builtin(self, key: str) -> bool:
        return key in self.allowed or key not in BUILTIN_ARGS

    def unused(self) -> list[str]:
        return sorted(k for k in self.options if k not in BUILTIN_ARGS and k not in self.referenced)


# --- the state of a stage ---------------------------------------------------------------------

@dataclass
class StageState:
    name: str
    index: int
    args: BuildArgs
    image_id: str = ""                  # "" while a stage FROM scratch has made nothing
    raw: dict[str, Any] = field(default_factory=dict)        # the current image's config JSON
    layers: list[Descriptor] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)     # the run config
    cmd_set: bool = False
    maintainer: str = ""

    @property
    def diff_ids(self) -> list[str]:
        return list((self.raw.get("rootfs") or {}).get("diff_ids") or [])

    @property
    def chain_id(self) -> str:
        from skiff.images.manifest import chain_ids
        ids = chain_ids(self.diff_ids)
        return ids[-1] if ids else ""

    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)


OutFn = Callable[[dict[str, Any]], Awaitable[None]]


def _mark(what: str, since: float) -> float:
    now = time.monotonic()
    log.debug("build: %s: %.3f s", what, now - since)
    return now


class Builder:
    def __init__(self, images: Any, containers: Any, ctx: BuildContext, opts: BuildOptions, *,
                 mount_dir: str, tmp_dir: str | None) -> None:
        self.images = images
        self.containers = containers
        self.ctx = ctx
        self.opts = opts
        self.mount_dir = mount_dir
        self.tmp_dir = tmp_dir
        self.out: OutFn | None = None
        self.lease = ""
        self.stage_results: dict[int, str] = {}     # stage index -> image ID
        self.df: Any = None
        self.stages: list[Any] = []
        self.total = 0
        self.step = 0
        self._step_started = 0.0
        self.cache_sources: list[Any] = []          # cachefrom Images
        self._children: dict[str, list[Any]] | None = None   # parent image ID -> images builds made on it

    # --- preparation (errors here are HTTP errors: nothing was output yet) ----------------------

    def prepare(self) -> None:
        """Read and parse the Dockerfile, apply .dockerignore, check the target and flags."""
        from skiff.daemon.build.dockerfile import DockerfileError, parse
        name = self.opts.dockerfile or "Dockerfile"
        try:
            rel = BuildContext.source_path(name)
        except ContextError:
            raise InvalidParameter(f"Cannot locate specified Dockerfile: {name}") from None
        e = self.ctx.entries.get(self.ctx.resolve(rel))
        if e is None and name == "Dockerfile":
            e = self.ctx.entries.get(self.ctx.resolve("dockerfile"))
        if e is None or e.kind != "file":
            raise InvalidParameter(f"Cannot locate specified Dockerfile: {name}")
        text = self.ctx.read_file(e)
        ign = self.ctx.entries.get(".dockerignore")
        if ign is not None and ign.kind == "file":
            from skiff.dockerignore import PatternError
            from skiff.dockerignore import parse as parse_ignore
            try:
                patterns = parse_ignore(self.ctx.read_file(ign).decode("utf-8", "replace"))
                self.ctx.apply_ignore(patterns)
            except PatternError as err:
                raise InvalidParameter(f"failed to parse .dockerignore: {err}") from None
        try:
            self.df = parse(text, posixpath.basename(rel))
        except DockerfileError as err:
            raise InvalidParameter(f"dockerfile parse error {err}"
                                   if not str(err).startswith(("Dockerfile parse", "dockerfile parse", "the Dockerfile"))
                                   else str(err)) from None
        stages = list(self.df.stages)
        if self.opts.target:
            idx = self.df.stage_index(self.opts.target)
            if idx is None or not any(s.name and s.name == self.opts.target.lower() for s in stages):
                raise InvalidParameter(f"failed to reach build target {self.opts.target} in Dockerfile")
            stages = stages[:idx + 1]
        self.stages = stages
        self.total = len(self.df.meta_args) + sum(1 + len(s.instructions) for s in stages) + len(self.opts.labels)

    # --- output -------------------------------------------------------------------------------

    async def say(self, text: str) -> None:
        assert self.out is not None
        await self.out({"stream": text})

    async def print_step(self, original: str) -> None:
        now = time.monotonic()
        if self.step:
            log.debug("build: step %d took %.3f s", self.step, now - self._step_started)
        self._step_started = now
        self.step += 1
        await self.say(f"Step {self.step}/{self.total} : {original}")
        await self.say("\n")

    # --- the build ----------------------------------------------------------------------------

    async def run(self, out: OutFn) -> str:
        """Build; returns the image ID. ``out`` receives the JSON messages."""
        self.out = out
        self.lease = await self.images._lease()
        try:
            for w in self.df.warnings:
                await self.say(red(f"[WARNING]: {w}\n"))
            for src in self.opts.cachefrom:
                try:
                    self.cache_sources.append(await self.images.resolve(src))
                except NotFound:
                    log.info("build: cache-from image %s not found; ignored (as dockerd)", src)
            args = BuildArgs(self.opts.buildargs)
            from skiff.daemon.build.shellwords import ShellError, ShellLex
            lex = ShellLex(self.df.escape)
            for inst in self.df.meta_args:
                await self.print_step(inst.original)
                for word in inst.args:
                    try:
                        expanded = lex.process_word(word, args.all_allowed())
                    except ShellError as e:
                        raise BuildError(str(e)) from None
                    k, eq, v = expanded.partition("=")
                    args.add_arg(k, v if eq else None)
                    args.meta[k] = v if eq else None
            st: StageState | None = None
            referenced: set[str] = set(args.referenced)
            for stage in self.stages:
                st = StageState(stage.name, stage.index, args.clone_for_stage())
                await self.print_step(stage.from_instr.original)
                await self.init_stage(st, stage, lex)
                await self.say(f" ---> {self.short(st.image_id)}\n")
                instrs = list(stage.instructions)
                if stage is self.stages[-1]:
                    for k in sorted(self.opts.labels):
                        instrs.append(("label", k, self.opts.labels[k]))
                for inst in instrs:
                    if isinstance(inst, tuple):
                        await self.print_step(f"LABEL {inst[1]}={inst[2]}")
                        await self.label_pairs(st, [(inst[1], inst[2])])
                    else:
                        await self.print_step(inst.original)
                        await self.dispatch(st, inst, lex)
                    await self.say(f" ---> {self.short(st.image_id)}\n")
                if st.image_id:
                    await self.out({"aux": {"ID": st.image_id}})
                referenced |= st.args.referenced
                self.stage_results[stage.index] = st.image_id
            assert st is not None
            unused = sorted(k for k in self.opts.buildargs if k not in BUILTIN_ARGS and k not in referenced)
            if unused:
                await self.say(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n")
            if not st.image_id:
                raise BuildError("No image was generated. Is your Dockerfile empty?")
            return st.image_id
        finally:
            await self.images._drop_lease(self.lease)

    @staticmethod
    def short(image_id: str) -> str:
        return image_id.removeprefix("sha256:")[:12]

    # --- FROM -----------------------------------------------------------------------------------

    async def init_stage(self, st: StageState, stage: Any, lex: Any) -> None:
        from skiff.daemon.build.shellwords import ShellError
        meta = st.args.all_meta()
        try:
            platform = lex.process_word(stage.platform, meta) if stage.platform else ""
            name = lex.process_word(stage.base, meta)
        except ShellError as e:
            raise BuildError(str(e)) from None
        if platform:
            try:
                validate_platform(platform)
            except InvalidParameter as e:
                raise BuildError(f"failed to parse platform {platform}: {e}") from None
        if not name:
            raise BuildError(f"base name ({stage.base}) should not be blank")
        st.raw = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
        st.config = shape_config({"Env": [DEFAULT_PATH]})
        if name.lower() == "scratch":
            return
        idx = None
        for prev in self.stages:
            if prev.index < stage.index and prev.name and prev.name == name.lower():
                idx = prev.index
        if idx is not None:
            img = await self.images.resolve(self.stage_results[idx])
        else:
            img = await self.base_image(name)
        st.image_id = img.id
        st.raw = json.loads(json.dumps(img.config))
        st.layers = list(img.layers)
        cfg = shape_config((img.config or {}).get("config") or {})
        env = cfg.get("Env") or []
        if not any(e.startswith("PATH=") for e in env):
            env = [*env, DEFAULT_PATH]
        cfg["Env"] = env
        st.config = cfg
        triggers = list(cfg.get("OnBuild") or [])
        st.config["OnBuild"] = None
        if triggers:
            from skiff.daemon.build.dockerfile import DockerfileError, parse_line
            await self.say(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}\n")
            for t in triggers:
                try:
                    inst = parse_line(t, 0, self.df.escape)
                except DockerfileError as e:
                    raise BuildError(f"ONBUILD trigger {t!r}: {e}") from None
                await self.dispatch(st, inst, lex)

    async def base_image(self, name: str) -> Any:
        """FROM/COPY --from an image: pulled with ``pull``, else local, else pulled."""
        if not self.opts.pull:
            try:
                return await self.images.resolve(name)
            except NotFound:
                pass
        await self.pull(name)
        return await self.images.resolve(name)

    async def pull(self, name: str) -> None:
        from skiff.daemon.images.transfer import pull_messages
        from skiff.images.reference import ReferenceError, parse_docker_ref
        try:
            ref = parse_docker_ref(name)
        except ReferenceError as e:
            raise BuildError(f"invalid reference format: {e}") from None
        auth = None
        for key, val in (self.opts.registry_auth or {}).items():
            host = key.split("://")[-1].split("/")[0]
            if host in ("index.docker.io", "registry-1.docker.io"):
                host = "docker.io"
            if host == ref.domain and isinstance(val, dict):
                auth = val
        try:
            async for msg in pull_messages(self.images, name, auth, None, self.tmp_dir):
                assert self.out is not None
                await self.out(msg)
        except ApiError as e:
            raise BuildError(str(e)) from None

    # --- dispatch -----------------------------------------------------------------------------

    def env_for_expansion(self, st: StageState) -> dict[str, str]:
        env = _env_map(st.config.get("Env"))
        for kv in st.args.filter_allowed(st.config.get("Env")):
            k, _, v = kv.partition("=")
            env.setdefault(k, v)
        return env

    def expand(self, st: StageState, lex: Any, word: str) -> str:
        from skiff.daemon.build.shellwords import ShellError
        try:
            return str(lex.process_word(word, self.env_for_expansion(st)))
        except ShellError as e:
            raise BuildError(str(e)) from None

    async def dispatch(self, st: StageState, inst: Any, lex: Any) -> None:
        cmd = inst.cmd
        handler = getattr(self, f"do_{cmd}", None)
        if handler is None:
            raise BuildError(f"unknown instruction: {cmd.upper()}")
        await handler(st, inst, lex)

    async def do_env(self, st: StageState, inst: Any, lex: Any) -> None:
        parts = []
        env = list(st.config.get("Env") or [])
        args = inst.args
        for i in range(0, len(args) - 1, 2):
            k = self.expand(st, lex, args[i])
            v = self.expand(st, lex, args[i + 1])
            env = _set_env(env, k, v)
            parts.append(f"{k}={v}")
        st.config["Env"] = env
        await self.commit_meta(st, "ENV " + " ".join(parts))

    async def do_label(self, st: StageState, inst: Any, lex: Any) -> None:
        pairs = []
        for i in range(0, len(inst.args) - 1, 2):
            pairs.append((self.expand(st, lex, inst.args[i]), self.expand(st, lex, inst.args[i + 1])))
        await self.label_pairs(st, pairs)

    async def label_pairs(self, st: StageState, pairs: list[tuple[str, str]]) -> None:
        labels = dict(st.config.get("Labels") or {})
        text = "LABEL"
        for k, v in pairs:
            labels[k] = v
            text += f" {k}={v}"
        st.config["Labels"] = labels
        await self.commit_meta(st, text)

    async def do_maintainer(self, st: StageState, inst: Any, lex: Any) -> None:
        st.maintainer = inst.args[0] if inst.args else ""
        await self.commit_meta(st, "MAINTAINER " + st.maintainer)

    async def do_arg(self, st: StageState, inst: Any, lex: Any) -> None:
        parts = []
        for word in inst.args:
            expanded = self.expand(st, lex, word)
            k, eq, v = expanded.partition("=")
            st.args.add_arg(k, v if eq else None)
            parts.append(f"{k}={v}" if eq else k)
        await self.commit_meta(st, "ARG " + " ".join(parts))

    def cmd_line(self, st: StageState, inst: Any) -> tuple[list[str], bool]:
        """The command of RUN/CMD/ENTRYPOINT: the exec form as is, the shell form after the
        SHELL. The second value (moby's ArgsEscaped) is only ever true on Windows."""
        if inst.json_form:
            return list(inst.args), False
        return [*st.shell(), inst.args[0] if inst.args else ""], False

    async def do_cmd(self, st: StageState, inst: Any, lex: Any) -> None:
        cmd, escaped = self.cmd_line(st, inst)
        st.config["Cmd"] = cmd
        st.config["ArgsEscaped"] = escaped
        await self.commit_meta(st, f"CMD {go_quote_list(cmd)}")
        if inst.args:
            st.cmd_set = True

    async def do_entrypoint(self, st: StageState, inst: Any, lex: Any) -> None:
        ep, escaped = self.cmd_line(st, inst)
        if inst.json_form and not inst.args:
            ep = []
        st.config["Entrypoint"] = ep
        st.config["ArgsEscaped"] = escaped
        if not st.cmd_set:
            st.config["Cmd"] = None
        await self.commit_meta(st, f"ENTRYPOINT {go_quote_list(ep)}")

    async def do_expose(self, st: StageState, inst: Any, lex: Any) -> None:
        from skiff.daemon.build.shellwords import ShellError
        ports: list[str] = []
        for p in inst.args:
            try:
                ports += lex.process_words(p, self.env_for_expansion(st))
            except ShellError as e:
                raise BuildError(str(e)) from None
        exposed = dict(st.config.get("ExposedPorts") or {})
        for p in ports:
            for key in _port_specs(p):
                exposed[key] = {}
        st.config["ExposedPorts"] = exposed
        await self.commit_meta(st, "EXPOSE " + " ".join(ports))

    async def do_user(self, st: StageState, inst: Any, lex: Any) -> None:
        st.config["User"] = self.expand(st, lex, inst.args[0] if inst.args else "")
        await self.commit_meta(st, f"USER {st.config['User']}")

    async def do_volume(self, st: StageState, inst: Any, lex: Any) -> None:
        vols = dict(st.config.get("Volumes") or {})
        names = []
        for v in inst.args:
            v = self.expand(st, lex, v)
            if not v:
                raise BuildError("VOLUME specified can not be an empty string")
            vols[v] = {}
            names.append(v)
        st.config["Volumes"] = vols
        await self.commit_meta(st, f"VOLUME {go_list(names)}")

    async def do_stopsignal(self, st: StageState, inst: Any, lex: Any) -> None:
        sig = self.expand(st, lex, inst.args[0] if inst.args else "")
        from skiff.daemon.containers.backend import parse_signal
        try:
            parse_signal(sig)
        except ApiError as e:
            raise BuildError(str(e)) from None
        st.config["StopSignal"] = sig
        await self.commit_meta(st, f"STOPSIGNAL {sig}")

    async def do_shell(self, st: StageState, inst: Any, lex: Any) -> None:
        if not inst.json_form:
            raise BuildError("SHELL requires the arguments to be in JSON form")
        st.config["Shell"] = list(inst.args)
        await self.commit_meta(st, f"SHELL {go_list(inst.args)}")

    async def do_onbuild(self, st: StageState, inst: Any, lex: Any) -> None:
        expr = inst.args[0] if inst.args else ""
        st.config["OnBuild"] = [*(st.config.get("OnBuild") or []), expr]
        await self.commit_meta(st, "ONBUILD " + expr)

    async def do_healthcheck(self, st: StageState, inst: Any, lex: Any) -> None:
        from skiff.daemon.build.dockerfile import DockerfileError, parse_go_duration
        if inst.args and inst.args[0].upper() == "NONE":
            hc: dict[str, Any] = {"Test": ["NONE"]}
        else:
            test = ["CMD", *inst.args[1:]] if inst.json_form else ["CMD-SHELL", inst.args[1] if len(inst.args) > 1 else ""]
            hc = {"Test": test}
            try:
                for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                                  ("start-interval", "StartInterval")):
                    if inst.flags.get(flag):
                        hc[key] = parse_go_duration(inst.flags[flag][-1])
            except DockerfileError as e:
                raise BuildError(str(e)) from None
            if inst.flags.get("retries"):
                r = inst.flags["retries"][-1]
                if not r.lstrip("-").isdigit() or int(r) < 0:
                    raise BuildError(f"--retries {r}: must be a non-negative integer")
                hc["Retries"] = int(r)
        old = st.config.get("Healthcheck")
        if old and old.get("Test") and old["Test"][0] != "NONE":
            await self.say(f"Note: overriding previous HEALTHCHECK: {go_list(old['Test'])}\n")
        st.config["Healthcheck"] = hc
        await self.commit_meta(st, f"HEALTHCHECK {healthcheck_comment(hc)}")

    async def do_workdir(self, st: StageState, inst: Any, lex: Any) -> None:
        path = self.expand(st, lex, inst.args[0] if inst.args else "")
        if not path:
            raise BuildError("WORKDIR: cannot normalize nothing")
        if not path.startswith("/"):
            path = posixpath.join("/", st.config.get("WorkingDir") or "/", path)
        st.config["WorkingDir"] = posixpath.normpath(path) if path != "/" else "/"
        if st.config["WorkingDir"].startswith("//"):
            st.config["WorkingDir"] = "/" + st.config["WorkingDir"].lstrip("/")
        cc = self.container_config(st, [*st.shell(), "#(nop) WORKDIR " + st.config["WorkingDir"]])
        if await self.probe(st, cc):
            return
        wd = st.config["WorkingDir"]
        from skiff.daemon.build import fsops
        layer = await self.in_new_snapshot(st, lambda root: fsops.make_workdir(root, wd))
        await self.make_image(st, cc, layer)

    async def do_run(self, st: StageState, inst: Any, lex: Any) -> None:
        if inst.flags:
            flag = next(iter(inst.flags))
            raise BuildError(f"the --{flag} option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to "
                             "learn how to build images with BuildKit enabled")
        await self.ensure_base_image(st)
        if inst.heredocs:
            cmd = self.heredoc_run(st, inst)
            escaped = False
        else:
            cmd, escaped = self.cmd_line(st, inst)
        build_env = st.args.filter_allowed(st.config.get("Env"))
        save_cmd = cmd
        if build_env:
            kept = sorted(e for e in build_env if st.args.referenced_or_not_builtin(e.partition("=")[0]))
            save_cmd = [f"|{len(kept)}", *kept, *cmd]
        cc = self.container_config(st, save_cmd)
        cc["ArgsEscaped"] = escaped or None
        cc = shape_config(cc)
        if save_cmd:
            cc["Entrypoint"] = None
        if await self.probe(st, cc):
            return
        run_cfg = shape_config({**st.config, "Cmd": cmd, "Env": [*(st.config.get("Env") or []), *build_env],
                                "Entrypoint": [""], "Healthcheck": {"Test": ["NONE"]}, "Image": st.image_id})
        run_cfg["Entrypoint"] = [""]
        cid, layer = await self.run_container(st, run_cfg, cmd)
        await self.make_image(st, cc, layer, container_id=cid, snapshot_ready=self.opts.rm or self.opts.forcerm)
        if self.opts.rm or self.opts.forcerm:
            await self.remove_container(cid)

    def heredoc_run(self, st: StageState, inst: Any) -> list[str]:
        """``RUN <<EOF`` (BuildKit's form): the heredoc is the script of the shell when the
        command is the heredoc alone, else it is fed on the command's stdin."""
        text = inst.args[0] if inst.args else ""
        doc = inst.heredocs[0]
        body = doc.content
        if text.strip().startswith("<<") and len(text.split()) == 1 and len(inst.heredocs) == 1:
            return [*st.shell(), body]
        # the command line reads the heredoc: give it through a shell here-document
        docs = "".join(f"{h.content}{h.name}\n" for h in inst.heredocs)
        return [*st.shell(), f"{text}\n{docs}"]

    async def do_copy(self, st: StageState, inst: Any, lex: Any) -> None:
        await self.copy(st, inst, lex, "COPY")

    async def do_add(self, st: StageState, inst: Any, lex: Any) -> None:
        await self.copy(st, inst, lex, "ADD")

    # --- COPY / ADD ---------------------------------------------------------------------------

    async def copy(self, st: StageState, inst: Any, lex: Any, what: str) -> None:
        from skiff.daemon.build import fsops
        for flag in inst.flags:
            if flag in ("link", "checksum", "exclude", "parents"):
                raise BuildError(f"the --{flag} option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ "
                                 "to learn how to build images with BuildKit enabled")
        chown = self.expand(st, lex, inst.flags["chown"][-1]) if inst.flags.get("chown") else ""
        chmod_text = self.expand(st, lex, inst.flags["chmod"][-1]) if inst.flags.get("chmod") else ""
        chmod = None
        if chmod_text:
            try:
                chmod = int(chmod_text, 8)
                if chmod < 0 or chmod > 0o7777:
                    raise ValueError
            except ValueError:
                raise BuildError(f"invalid chmod parameter: {chmod_text!r}: an octal mode is expected") from None
        from_ = self.expand(st, lex, inst.flags["from"][-1]) if inst.flags.get("from") else ""
        if from_ and what == "ADD":
            raise BuildError("ADD --from: the --from flag applies to COPY only")
        words = [self.expand(st, lex, a) for a in inst.args] if not inst.json_form else \
            [self.expand(st, lex, a) for a in inst.args]
        if len(words) < 2:
            raise BuildError(f"{what} requires at least two arguments")
        sources, dest = words[:-1], words[-1]
        heredoc_items: list[tuple[str, str]] = []
        if inst.heredocs:
            names = {h.name: h for h in inst.heredocs}
            plain = []
            for s, raw in zip(sources, inst.args[:-1], strict=False):
                key = raw.lstrip("<").lstrip("-").strip("'\"")
                if raw.startswith("<<") and key in names:
                    h = names[key]
                    content = self.expand(st, lex, h.content) if h.expand else h.content
                    heredoc_items.append((h.name, content))
                else:
                    plain.append(s)
            sources = plain
        for s in sources:
            if "://" in s and s.split("://")[0] in ("http", "https", "git"):
                if what == "COPY":
                    raise BuildError("COPY failed: source can't be a URL for COPY")
                raise BuildError(f"ADD failed: {s}: remote URLs are not supported: skiffd builds offline")
        if not dest.startswith("/"):
            wd = st.config.get("WorkingDir") or "/"
            slash = dest.endswith("/")
            dest = posixpath.join("/", wd, dest)
            if slash and not dest.endswith("/"):
                dest += "/"
        n_sources = len(sources) + len(heredoc_items)
        if n_sources > 1 and not dest.endswith("/"):
            raise BuildError(f"When using {what} with more than one source file, the destination must be a directory "
                             "and end with a /")
        async with contextlib.AsyncExitStack() as stack:
            if from_:
                source, label = await self.copy_source(st, from_, stack)
            else:
                source, label = self.ctx, ""
            try:
                items = await asyncio.to_thread(fsops.collect, source, sources, what) if sources else []
            except (ContextError, fsops.CopyError) as e:
                text = str(e)
                if isinstance(e, ContextError):
                    text = f"{what} failed: {text}"
                raise BuildError(text) from None
            except OSError as e:
                raise BuildError(f"{what} failed: {e}") from None
            if what == "ADD" and not from_:
                for it in items:
                    it.archive = await asyncio.to_thread(fsops.archive_kind, self.ctx, it.entry) if it.entry.kind == "file" else ""
            hashes = []
            for it in items:
                if from_:
                    hashes.append(f"{label}:{it.entry.path}")
                else:
                    hashes.append(await asyncio.to_thread(self.ctx.hash, it.entry))
            for name, content in heredoc_items:
                hashes.append("file:" + hashlib.sha256(f"{name}\0{content}".encode()).hexdigest())
            if len(hashes) == 1:
                src_hash = hashes[0]
            else:
                src_hash = "multi:" + hashlib.sha256(",".join(hashes).encode()).hexdigest()
            chown_comment = f"--chown={chown} " if chown else ""
            chmod_comment = f"--chmod={chmod_text} " if chmod_text else ""
            comment = f"{what} {chown_comment}{chmod_comment}{src_hash} in {dest} "
            cc = self.container_config(st, [*st.shell(), "#(nop) " + comment])
            if await self.probe(st, cc):
                return
            preserve = bool(from_) and not chown

            def work(root: str) -> None:
                owner: tuple[int, int] | None = None if preserve else (0, 0)
                if chown:
                    owner = fsops.parse_chown(root, chown)
                all_items = list(items)
                if heredoc_items:
                    hctx = _HeredocSource(heredoc_items)
                    all_items += [fsops.CopyItem(hctx, e, e.path) for e in hctx.entries]
                fsops.copy_items(root, dest, all_items, owner=owner, chmod=chmod, what=what)
            try:
                layer = await self.in_new_snapshot(st, work)
            except fsops.CopyError as e:
                raise BuildError(f"failed to copy files: {e}") from None
        await self.make_image(st, cc, layer)

    async def copy_source(self, st: StageState, from_: str, stack: contextlib.AsyncExitStack) -> tuple[Any, str]:
        from skiff.daemon.build import fsops
        idx = self.df.stage_index(from_)
        if idx is not None and idx >= st.index:
            if idx == st.index:
                raise BuildError(f"invalid from flag value {from_}: circular dependency detected on stage: {from_}")
            idx = None if not from_.isdecimal() else idx
            if idx is None:
                raise BuildError(f"invalid from flag value {from_}: stage {from_} is not built before this one")
        if idx is not None and idx in self.stage_results:
            image_id = self.stage_results[idx]
            img = await self.images.resolve(image_id) if image_id else None
        else:
            try:
                img = await self.base_image(from_)
            except (NotFound, BuildError, ApiError) as e:
                raise BuildError(f"invalid from flag value {from_}: {e}") from None
        root = await stack.enter_async_context(self.view(img.chain_id if img is not None else ""))
        label = img.id if img is not None else "scratch"
        return fsops.ImageSource(root, f"COPY --from={from_}"), label

    # --- snapshots, layers, images ----------------------------------------------------------------

    def _mount_point(self) -> str:
        os.makedirs(self.mount_dir, mode=0o700, exist_ok=True)
        return tempfile.mkdtemp(prefix="mnt-", dir=self.mount_dir)

    @contextlib.asynccontextmanager
    async def view(self, chain: str) -> AsyncIterator[str]:
        """A read-only mount of the snapshot ``chain`` (an empty directory for none)."""
        from skiff.daemon.images.service import SNAPSHOTTER
        from skiff.images.mount import mount_all, unmount_all
        cd = self.images.cd
        path = self._mount_point()
        key = f"build-view-{secrets.token_hex(8)}"
        mounted = False
        made = False
        try:
            if chain:
                resp = await cd._call(cd.snapshots.View, cd.api.snapshots.ViewSnapshotRequest(
                    snapshotter=SNAPSHOTTER, key=key, parent=chain), self.lease)
                made = True
                mounts = cd._mounts(resp.mounts)
                await asyncio.to_thread(mount_all, mounts, path)
                mounted = True
            yield path
        finally:
            if mounted:
                await asyncio.to_thread(unmount_all, path)
            os.rmdir(path)
            if made:
                with contextlib.suppress(NotFound):
                    await cd.remove_snapshot(key, SNAPSHOTTER)

    async def in_new_snapshot(self, st: StageState, work: Callable[[str], Any]) -> tuple[str, Descriptor] | None:
        """Run ``work(root)`` in a thread on a new active snapshot on the stage's image,
        mounted; then its changes are the layer (None when there are none)."""
        from skiff.daemon.images.service import SNAPSHOTTER
        from skiff.images.mount import mount_all, unmount_all
        await self.ensure_unpacked(st)
        cd = self.images.cd
        key = f"build-{secrets.token_hex(8)}"
        t = time.monotonic()
        mounts = await cd.prepare_snapshot(key, st.chain_id, SNAPSHOTTER, lease=self.lease)
        committed = False
        try:
            path = self._mount_point()
            try:
                await asyncio.to_thread(mount_all, mounts, path)
                try:
                    t = _mark("snapshot prepared and mounted", t)
                    await asyncio.to_thread(work, path)
                    t = _mark("files written", t)
                finally:
                    await asyncio.to_thread(unmount_all, path)
            finally:
                os.rmdir(path)
            layer, committed = await self.commit_snapshot(st, key, steal=True)
            _mark("diff and commit", t)
            return layer
        finally:
            if not committed:
                with contextlib.suppress(NotFound):
                    await cd.remove_snapshot(key, SNAPSHOTTER)

    async def commit_snapshot(self, st: StageState, key: str, *, steal: bool) -> tuple[tuple[str, Descriptor] | None, bool]:
        """The changes of the active snapshot ``key`` against the stage's image as a layer
        blob; with ``steal``, ``key`` is committed as the new layer's snapshot. Returns the
        layer (None: no change) and whether ``key`` was consumed."""
        from skiff.daemon.images.service import SNAPSHOTTER
        from skiff.images.manifest import chain_ids
        from skiff.images.unpack import LABEL_SNAPSHOT_REF
        cd = self.images.cd
        view = f"build-diff-{secrets.token_hex(8)}"
        lower: list[Any] = []
        try:
            if st.chain_id:
                resp = await cd._call(cd.snapshots.View, cd.api.snapshots.ViewSnapshotRequest(
                    snapshotter=SNAPSHOTTER, key=view, parent=st.chain_id), self.lease)
                lower = cd._mounts(resp.mounts)
            upper = await cd.snapshot_mounts(key, SNAPSHOTTER)
            resp = await cd._call(cd.diff.Diff, cd.api.diff.DiffRequest(
                left=cd._mounts_pb(lower), right=cd._mounts_pb(upper), media_type=OCI_LAYER,
                ref=f"build-{key}-{secrets.token_hex(4)}"), self.lease)
        finally:
            if st.chain_id:
                with contextlib.suppress(NotFound):
                    await cd.remove_snapshot(view, SNAPSHOTTER)
        layer = cd._desc(resp.diff)
        if layer.digest == EMPTY_LAYER:
            return None, False
        if not steal:
            return (layer.digest, layer), False
        chain = chain_ids([*st.diff_ids, layer.digest])[-1]
        try:
            await cd.commit_snapshot(chain, key, SNAPSHOTTER, {LABEL_SNAPSHOT_REF: chain}, self.lease)
            return (layer.digest, layer), True
        except ApiError as e:
            if e.status != 409:
                raise
            return (layer.digest, layer), False      # that snapshot exists: ours goes

    async def ensure_unpacked(self, st: StageState) -> None:
        if st.image_id:
            await self.images.ensure_unpacked(await self.images.resolve(st.image_id))

    async def ensure_base_image(self, st: StageState) -> None:
        """A RUN on a stage that has no image yet (FROM scratch): an empty image first, for the
        container to be made from (from the cache when there is one)."""
        if not st.image_id:
            cc = self.container_config(st, [*st.shell(), "#(nop) ", "FROM scratch"])
            if not await self.probe(st, cc, quiet=True):
                await self.make_image(st, cc, None, record_history=False)

    def container_config(self, st: StageState, cmd: list[str]) -> dict[str, Any]:
        return shape_config({**st.config, "Cmd": cmd, "Image": st.image_id})

    async def commit_meta(self, st: StageState, comment: str) -> None:
        cc = self.container_config(st, [*st.shell(), "#(nop) ", comment])
        if await self.probe(st, cc):
            return
        await self.make_image(st, cc, None)

    async def probe(self, st: StageState, cc: dict[str, Any], quiet: bool = False) -> bool:
        """The build cache (see ``skiff.daemon.build.cache``): on a hit the stage moves to the
        cached image and the output says so."""
        if self.opts.nocache:
            return False
        key = cachemod.cache_key(cc)
        hit = None
        if self._children is None:
            # one look at the image store per build: an image this build makes has no children
            # to find yet
            self._children = {}
            for img in await self.images.images():
                if img.build_record:
                    self._children.setdefault(img.parent, []).append(img)
        local = [i for i in self._children.get(st.image_id, []) if i.build_key == key]
        local.sort(key=lambda i: i.created, reverse=True)
        if local and not self.cache_sources:
            hit = local[0]
        elif self.cache_sources:
            for s in self.cache_sources if local else []:
                if await self._descends(s, local[0].id):
                    hit = local[0]
                    break
            if hit is None:
                hit = await self._from_sources(st, cc, key)
        if hit is None:
            return False
        if not quiet:
            await self.say(" ---> Using cache\n")
        st.image_id = hit.id
        st.raw = json.loads(json.dumps(hit.config))
        st.layers = list(hit.layers)
        return True

    async def _descends(self, img: Any, ancestor: str) -> bool:
        seen = 0
        cur = img
        while cur is not None and seen < 1000:
            if cur.id == ancestor:
                return True
            if not cur.parent:
                return False
            try:
                cur = await self.images.resolve(cur.parent)
            except NotFound:
                return False
            seen += 1
        return False

    async def _from_sources(self, st: StageState, cc: dict[str, Any], key: str) -> Any:
        parent_raw = st.raw if st.image_id else None
        found = cachemod.source_match([s.config for s in self.cache_sources], parent_raw, cc)
        if found is None:
            return None
        i, whole = found
        src = self.cache_sources[i]
        if whole:
            self.cache_sources = [src]
            return src
        n = len(parent_raw.get("history") or []) if parent_raw else 0
        li = cachemod.layer_for_history(src.config, n)
        hist = dict((src.config.get("history") or [])[n])
        layer = None if li is None else (src.diff_ids[li], src.layers[li])
        await self.make_image(st, cc, layer, history=hist, snapshot_ready=layer is None)
        self.cache_sources = [src]
        return await self.images.resolve(st.image_id)

    async def make_image(self, st: StageState, cc: dict[str, Any], layer: tuple[str, Descriptor] | None, *,
                         container_id: str = "", history: dict[str, Any] | None = None,
                         record_history: bool = True, snapshot_ready: bool = True) -> None:
        """The stage's next image: its config (moby's child image), manifest, build record.
        ``snapshot_ready``: the snapshot of its top layer exists (committed from the step's
        own snapshot), else it is unpacked from the layer blob."""
        t0 = time.monotonic()
        from skiff.images.manifest import gc_labels
        parent = st.raw
        # a step restored from a cache-from image keeps that image's time (moby): the same
        # restore gives the same image
        created = str(history.get("created") or "") if history is not None else ""
        created = created or now_rfc3339()
        raw: dict[str, Any] = {"architecture": parent.get("architecture") or "amd64"}
        if parent.get("variant"):
            raw["variant"] = parent["variant"]
        if st.maintainer:
            raw["author"] = st.maintainer
        cfg = shape_config({**st.config, "Image": st.image_id})
        raw["config"] = cfg
        if container_id:
            raw["container"] = container_id
        raw["container_config"] = cc
        raw["created"] = created
        raw["docker_version"] = skiff.__version__
        hist = list(parent.get("history") or [])
        if record_history:
            if history is not None:
                hist.append(history)
            else:
                h: dict[str, Any] = {"created": created}
                if st.maintainer:
                    h["author"] = st.maintainer
                h["created_by"] = cachemod.created_by(cc)
                if layer is None:
                    h["empty_layer"] = True
                hist.append(h)
        raw["history"] = hist
        raw["os"] = parent.get("os") or "linux"
        diff_ids = st.diff_ids
        layers = list(st.layers)
        if layer is not None:
            diff_ids.append(layer[0])
            layers.append(Descriptor(layer[1].media_type or OCI_LAYER, layer[1].digest, layer[1].size))
        raw["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
        cdata = json.dumps(raw, separators=(",", ":")).encode()
        cdigest = "sha256:" + hashlib.sha256(cdata).hexdigest()
        cd = self.images.cd
        from skiff.daemon.images.service import SNAPSHOTTER
        from skiff.images.manifest import chain_ids
        from skiff.images.unpack import LABEL_GC_SNAPSHOT
        chains = chain_ids(diff_ids)
        # the config keeps the top snapshot from containerd's GC (what unpack would label)
        clabels = {LABEL_GC_SNAPSHOT + SNAPSHOTTER: chains[-1]} if chains else {}
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": cdigest, "size": len(cdata)},
                    "layers": [{"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d in layers]}
        mdata = json.dumps(manifest, separators=(",", ":")).encode()
        mdesc = Descriptor(OCI_MANIFEST, "sha256:" + hashlib.sha256(mdata).hexdigest(), len(mdata))
        from skiff.daemon.images.transfer import lib_desc
        # both under the build's lease, so in either order (at once: one round trip less)
        await asyncio.gather(
            cd.write_blob(f"build-{cdigest}", cdata, cdigest, labels=clabels, lease=self.lease),
            cd.write_blob(f"build-{mdesc.digest}", mdata, mdesc.digest, labels=gc_labels(lib_desc(mdesc), mdata),
                          lease=self.lease))
        self.images._docs[cdigest] = cdata
        self.images._docs[mdesc.digest] = mdata
        if not snapshot_ready:    # the layer's snapshot is made from its blob
            async with self.images._lock:
                await self.images.unpack(mdesc, self.lease)
        await self.images.add_build_image(mdesc, st.image_id, cachemod.cache_key(cc), self.lease)
        st.image_id = cdigest
        st.raw = raw
        st.layers = layers
        _mark("image made", t0)

    # --- RUN containers -------------------------------------------------------------------------

    async def run_container(self, st: StageState, run_cfg: dict[str, Any], cmd: list[str]) -> tuple[str, tuple[str, Descriptor] | None]:
        """Create and run the RUN container, streaming its output; the layer of its changes.
        On failure the container is removed only with ``forcerm`` (as dockerd)."""
        from skiff.daemon.containers.archive import mount_layers
        from skiff.daemon.images.service import SNAPSHOTTER
        body = {k: v for k, v in run_cfg.items() if v is not None}
        body["Entrypoint"] = [""]
        body["HostConfig"] = {**self.opts.host_config, "LogConfig": {"Type": "none", "Config": {}}}
        t = time.monotonic()
        try:
            created = await self.containers.create("", body)
        except ApiError as e:
            raise BuildError(str(e)) from None
        cid = created["Id"]
        for w in created.get("Warnings") or []:
            await self.say(f" ---> [Warning] {w}\n")
        await self.say(f" ---> Running in {cid[:12]}\n")
        t = _mark("container created", t)
        ok = False
        try:
            c = self.containers.get(cid)
            io, done = await self.containers.io_for(c)
            sub = io.subscribe(stdout=True, stderr=True)
            try:
                await self.containers.start(cid)
            except ApiError as e:
                sub.close()
                raise BuildError(str(e)) from None
            import codecs
            dec = {"stdout": codecs.getincrementaldecoder("utf-8")("replace"),
                   "stderr": codecs.getincrementaldecoder("utf-8")("replace")}
            async for stream, data in sub:
                text = dec[stream].decode(data)
                if text:
                    await self.say(text if stream == "stdout" else red(text))
            for name, d in dec.items():
                rest = d.decode(b"", final=True)
                if rest:
                    await self.say(rest if name == "stdout" else red(rest))
            code = await done
            t = _mark("container ran", t)
            if code != 0:
                raise BuildError(f"The command '{' '.join(cmd)}' returned a non-zero code: {code}", code)
            cd = self.images.cd
            c = self.containers.get(cid)
            mounts = await cd.snapshot_mounts(c.snapshot_key or cid, SNAPSHOTTER)
            layers = mount_layers(mounts)
            if layers is not None:
                from skiff.daemon.build import fsops
                upper, lowers, ns = layers
                await asyncio.to_thread(fsops.strip_mount_points, upper, lowers, ns)
            steal = self.opts.rm or self.opts.forcerm
            layer, _ = await self.commit_snapshot(st, c.snapshot_key or cid, steal=steal)
            _mark("diff and commit", t)
            ok = True
            return cid, layer
        except asyncio.CancelledError:
            # the client went away (dockerd kills and removes the container then)
            await asyncio.shield(self.remove_container(cid))
            raise
        finally:
            if not ok and self.opts.forcerm:
                await self.remove_container(cid)

    async def remove_container(self, cid: str) -> None:
        try:
            await self.containers.remove(cid, force=True, volumes=True)
        except NotFound:
            return
        except ApiError as e:
            await self.say(f"Error removing intermediate container {cid[:12]}: {e}\n")
            return
        await self.say(f"Removing intermediate container {cid[:12]}\n")


class _HeredocSource:
    """``COPY <<EOF /dst``: the heredocs as files (mode 0644, now)."""

    def __init__(self, docs: list[tuple[str, str]]) -> None:

        from skiff.daemon.build.context import Entry
        self.data = {name: content.encode() for name, content in docs}
        now = int(time.time())
        self.entries = [Entry(name, "file", 0o644, len(self.data[name]), 0, "", now) for name, _ in docs]

    def children(self, path: str) -> list[Any]:
        return []

    def copy_data(self, e: Any, fd: int) -> None:
        data = self.data[e.path]
        view = memoryview(data)
        off = 0
        while off < len(data):
            off += os.pwrite(fd, view[off:], off)


def _port_specs(p: str) -> list[str]:
    """EXPOSE ``80``, ``80/udp``, ``8000-8002/tcp`` -> the port keys (nat.ParsePortSpecs)."""
    port, _, proto = p.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise BuildError(f"invalid proto: {proto}")
    if ":" in port:
        port = port.rsplit(":", 1)[1]
    lo, dash, hi = port.partition("-")
    if not lo.isdigit() or (dash and not hi.isdigit()):
        raise BuildError(f"invalid containerPort: {port}")
    a, b = int(lo), int(hi) if dash else int(lo)
    if b < a or b > 65535:
        raise BuildError(f"invalid range specified for container port: {port}")
    return [f"{n}/{proto}" for n in range(a, b + 1)]
