"""The containers backend: Docker's container lifecycle over containerd's API.

skiffd never touches the kernel for a container: a container is a record here (``model``), a
containerd container (spec from ``skiff.daemon.specgen``) with a snapshot as its rootfs, and,
while it runs, a containerd task whose stdio are FIFOs that ``ContainerIO`` copies to the log
and to attached clients. Exits come from containerd's events (``monitor``).

Locking: one asyncio lock per container guards state transitions; nothing waits for an exit
while holding it (the exit handler takes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal as signal_mod
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from skiff.daemon.api.errors import ApiError, Conflict, InvalidParameter, NotFound, NotModified
from skiff.daemon.backend import ContainerCounts, ContainersBackend
from skiff.daemon.config import BUILTIN_RUNTIMES, DaemonConfig
from skiff.daemon.containers import etcfiles
from skiff.daemon.containers.health import HealthMonitor, run_probe_with
from skiff.daemon.containers.model import Container, State
from skiff.daemon.containers.monitor import (
    EventMonitor,
    RestartManager,
    restart_on_daemon_start,
    validate_restart_policy,
)
from skiff.daemon.containers.store import Store, valid_name
from skiff.daemon.events import EventsHub

log = logging.getLogger("skiff.daemon.containers")

SNAPSHOTTER = "overlayfs"
SPEC_FILE = "spec.json"          # the OCI spec given to containerd (exec and probes start from it)
DEFAULT_STOP_TIMEOUT = 10
WAIT_CONDITIONS = ("not-running", "next-exit", "removed")
OUTPUT_DRAIN_TIMEOUT = 10.0
KILL_WAIT = 30.0              # seconds a SIGKILL may take to show as an exit   # after the task is deleted, its FIFOs reach EOF; bound the wait
DEFAULT_SHM_SIZE = 64 << 20

# exit codes for start failures, as moby records them and the docker CLI computes them
EXIT_NOT_FOUND = 127
EXIT_CANNOT_INVOKE = 126
EXIT_UNKNOWN = 128


def parse_signal(value: str) -> int:
    """``TERM``, ``SIGTERM``, ``sigterm`` or ``15`` -> 15; InvalidParameter otherwise."""
    v = value.strip()
    if v.isdigit():
        n = int(v)
        if 0 < n < signal_mod.NSIG:
            return n
        raise InvalidParameter(f"Invalid signal: {value}")
    name = v.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
        base, _, off = name[3:].partition("+" if "+" in name else "-")
        if off.isdigit():
            n = (signal_mod.SIGRTMIN + int(off)) if base == "RTMIN" else (signal_mod.SIGRTMAX - int(off))
            if signal_mod.SIGRTMIN <= n <= signal_mod.SIGRTMAX:
                return int(n)
    try:
        return int(signal_mod.Signals[name])
    except KeyError:
        raise InvalidParameter(f"Invalid signal: {value}") from None


def start_failure(message: str) -> tuple[int, bool]:
    """(exit code, caused by the container's command?) for a task that could not be created or
    started, from the runtime's message (the docker CLI maps the same words to its exit code)."""
    low = message.lower()
    if "executable file not found" in low or "no such file or directory" in low:
        return EXIT_NOT_FOUND, True
    if "permission denied" in low or "is a directory" in low:
        return EXIT_CANNOT_INVOKE, True
    return EXIT_UNKNOWN, False


def fill_host_config(host: dict[str, Any], cfg: DaemonConfig) -> dict[str, Any]:
    """HostConfig as Docker shows it in inspect: the given values with the defaults filled."""
    h = dict(host)
    h["RestartPolicy"] = validate_restart_policy(h.get("RestartPolicy"), bool(h.get("AutoRemove")))
    lc = dict(h.get("LogConfig") or {})
    if not lc.get("Type"):
        lc["Type"] = cfg.log_driver
        lc["Config"] = {**cfg.log_opts, **(lc.get("Config") or {})}
    lc["Config"] = dict(lc.get("Config") or {})
    h["LogConfig"] = lc
    h["NetworkMode"] = h.get("NetworkMode") or "default"
    h["Runtime"] = h.get("Runtime") or cfg.default_runtime
    if not h.get("ShmSize"):
        h["ShmSize"] = DEFAULT_SHM_SIZE
    h.setdefault("ConsoleSize", [0, 0])
    h["ConsoleSize"] = h.get("ConsoleSize") or [0, 0]
    h.setdefault("AutoRemove", False)
    h.setdefault("Privileged", False)
    h.setdefault("ReadonlyRootfs", False)
    h.setdefault("Binds", None)
    h.setdefault("PortBindings", {})
    h["PortBindings"] = h.get("PortBindings") or {}
    h.setdefault("IpcMode", "private")
    h["IpcMode"] = h.get("IpcMode") or "private"
    h.setdefault("CgroupnsMode", "host")
    h["CgroupnsMode"] = h.get("CgroupnsMode") or "host"
    h.setdefault("Isolation", "")
    return h


class ContainerService(ContainersBackend):
    """Implements the containers router's calls and what exec (second wave) needs: ``get``,
    ``is_running``, ``fifo_dir``, ``cd`` and ``add_exec_exit_listener``."""

    def __init__(self, cfg: DaemonConfig, cd: Any, images: Any, events: EventsHub, *,
                 host_resolv_conf: str = "/etc/resolv.conf") -> None:
        self.cfg = cfg
        self.cd = cd
        self.images = images
        self.events = events
        self.store = Store()
        self.root = os.path.join(cfg.data_root, "containers")
        self.fifo_root = os.path.join(cfg.exec_root, "containers")
        self.host_resolv_conf = host_resolv_conf
        self._locks: dict[str, asyncio.Lock] = {}
        self._ios: dict[str, Any] = {}                    # id -> ContainerIO of the current/next run
        self._run_done: dict[str, asyncio.Future[int]] = {}  # id -> resolved after exit + flush
        self._waiters: dict[str, list[tuple[str, asyncio.Future[tuple[int, str]]]]] = {}
        self._restarts: dict[str, RestartManager] = {}
        self._restart_tasks: dict[str, asyncio.Task[None]] = {}
        self._restart_active: set[str] = set()        # restarts past their backoff sleep
        self._oom: set[str] = set()
        self._health: dict[str, HealthMonitor] = {}
        self._probe_exits: dict[str, asyncio.Future[int]] = {}
        self._exec_exit: list[Callable[[str, str, int, int], Awaitable[None]]] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self.monitor: EventMonitor | None = None
        self.volumes: Any = None      # issue 8 volumes: VolumeService, set by the Daemon
        self.shutting_down = False
        # issue 8 networking: skiff.daemon.network.manager.NetworkManager (set by the daemon's
        # wiring; None = containers get a private namespace with loopback only)
        self.network: Any = None

    # -- small helpers -------------------------------------------------------------------------
    def lock(self, cid: str) -> asyncio.Lock:
        lk = self._locks.get(cid)
        if lk is None:
            lk = self._locks[cid] = asyncio.Lock()
        return lk

    def dir(self, cid: str) -> str:
        return os.path.join(self.root, cid)

    def fifo_dir(self, cid: str) -> str:
        return os.path.join(self.fifo_root, cid)

    def get(self, ref: str) -> Container:
        return self.store.get(ref)

    def is_running(self, c: Container) -> bool:
        return c.state.status in ("running", "paused")

    def container_spec(self, c: Container) -> dict[str, Any]:
        """The OCI spec the container was created with (exec builds its process from it)."""
        with open(os.path.join(self.dir(c.id), SPEC_FILE), encoding="utf-8") as f:
            return dict(json.load(f))

    def _start_health(self, c: Container) -> None:
        self._stop_health(c)
        from skiff.daemon.containers.health import probe_args
        if probe_args(list((c.config.get("Healthcheck") or {}).get("Test") or [])) is None:
            c.state.health = None
            return
        try:
            process = self.container_spec(c).get("process") or {}
        except (OSError, ValueError) as e:
            log.error("container %s: healthcheck: cannot read its spec: %s", c.id, e)
            return

        def new_io(c: Container, exec_id: str) -> Any:
            from skiff.daemon.streams import ContainerIO
            return ContainerIO(self.fifo_dir(c.id), exec_id, stdin=False, tty=False, logger=None)

        async def probe(c: Container, exec_id: str, proc: dict[str, Any], timeout: float) -> tuple[int, str]:
            return await run_probe_with(self.cd, new_io, self._probe_exits, c, exec_id, proc, timeout)

        def changed(c: Container, status: str) -> None:
            self.publish(c, f"health_status: {status}")

        hm = HealthMonitor(c, process, probe, changed, self.save)
        if hm.active:
            hm.start()
            self._health[c.id] = hm

    def _stop_health(self, c: Container) -> None:
        hm = self._health.pop(c.id, None)
        if hm is not None:
            hm.stop()

    def add_exec_exit_listener(self, fn: Callable[[str, str, int, int], Awaitable[None]]) -> None:
        """``fn(container_id, exec_id, exit_status, exited_at_ns)`` for every exec exit."""
        self._exec_exit.append(fn)

    def restart_policy_changed(self, c: Container) -> None:
        """``update --restart``: the next exit is judged by the new policy (exec/update wave)."""
        self._restarts.pop(c.id, None)

    def publish(self, c: Container, action: str, **extra: str) -> None:
        self.events.publish("container", action, c.id, {**c.event_attributes(), **extra})

    def save(self, c: Container) -> None:
        c.save(self.dir(c.id))

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        t: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro, name=name)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    # -- backend interface of the system router ------------------------------------------------
    def counts(self) -> ContainerCounts:
        cs = self.store.all()
        running = sum(1 for c in cs if c.state.status in ("running", "restarting"))
        paused = sum(1 for c in cs if c.state.status == "paused")
        return ContainerCounts(total=len(cs), running=running, paused=paused,
                               stopped=len(cs) - running - paused)

    def security_options(self) -> list[str]:
        return ["name=seccomp,profile=builtin"]

    # -- startup: records, live restore, events -------------------------------------------------
    def load(self) -> list[str]:
        """Read every record; returns the errors of unreadable ones (they are skipped)."""
        errors: list[str] = []
        os.makedirs(self.root, mode=0o710, exist_ok=True)
        for cid in sorted(os.listdir(self.root)):
            d = self.dir(cid)
            if not os.path.isdir(d):
                continue
            try:
                c = Container.load(d)
            except (OSError, ValueError) as e:
                errors.append(f"container {cid}: cannot load its record: {e}")
                continue
            if c.state.status == "removing":
                c.state.status = "dead"
            self.store.add(c)
        return errors

    async def start_monitor(self, ensure_containerd: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Follow containerd's events; when the stream breaks, ``ensure_containerd`` (if given)
        starts containerd again, and the records are reconciled once subscribed again."""
        self.monitor = EventMonitor(self.cd.subscribe, self.cd.namespace, self._on_task_exit,
                                    self._on_oom, on_reconnect=self._reconnected,
                                    ensure_containerd=ensure_containerd)
        self.monitor.on_images_changed = self.cd.images_changed
        self.monitor.on_subscribed = self._image_events
        self.monitor.start()
        try:
            await asyncio.wait_for(self.monitor.subscribed.wait(), 30)
        except TimeoutError:
            raise ApiError("containerd: could not subscribe to its events within 30 s") from None

    def _image_events(self, live: bool) -> None:
        """The event stream is up (or broke): the client's image-list cache follows it."""
        self.cd.images_changed()
        self.cd.image_events_live = live

    async def reconcile(self, daemon_start: bool = True) -> None:
        """Match the records with containerd's tasks (live restore): running tasks are adopted
        (their output copying resumes), tasks that exited while skiffd (or containerd) was away
        are reaped and their exit handled; at daemon start, restart policies that apply then are
        honoured."""
        tasks = {t.id: t for t in await self.cd.list_tasks()}
        for c in self.store.all():
            if not daemon_start and self.lock(c.id).locked():
                continue        # an operation is under way on it; its own outcome stands
            t = tasks.get(c.id)
            try:
                await self._reconcile_one(c, t, daemon_start)
            except ApiError as e:
                log.error("container %s: live restore: %s", c.id, e)

    async def _reconnected(self) -> None:
        await self.reconcile(daemon_start=False)

    async def _reconcile_one(self, c: Container, t: Any, daemon_start: bool) -> None:
        if t is not None and t.status in ("running", "paused", "pausing", "created"):
            if c.state.status in ("running", "paused") and c.id in self._ios:
                return      # already adopted
            if t.status == "created":
                # created but never started (skiffd died in between): discard it
                await self.cd.kill(c.id, signal_mod.SIGKILL, all=True)
                with contextlib.suppress(NotFound):
                    await self.cd.delete_task(c.id)
                await self._mark_exited(c, EXIT_UNKNOWN, time.time_ns(),
                                        "skiffd stopped while the container was starting")
                return
            io = self._new_io(c)
            await io.reopen()
            self._ios[c.id] = io
            self._run_done[c.id] = asyncio.get_running_loop().create_future()
            c.state.status = "paused" if t.status in ("paused", "pausing") else "running"
            c.state.pid = t.pid
            self._start_health(c)
            self.save(c)
            log.info("container %s: restored (%s, pid %d)", c.id, c.state.status, t.pid)
            return
        if t is not None:   # stopped while skiffd was away
            status, at = t.exit_status, t.exited_at_ns
            with contextlib.suppress(NotFound):
                status, at = await self.cd.delete_task(c.id)
            if c.state.status in ("running", "paused"):
                await self._task_ended(c, status, at)
                return
        elif c.state.status in ("running", "paused"):
            await self._mark_exited(c, 255, time.time_ns(), "the container's task was gone when "
                                    "skiffd reconnected to containerd")
            return
        if c.id in self._restart_tasks or not daemon_start:
            return
        if c.state.status == "restarting":
            c.state.status = "exited"
            self.save(c)
        policy, _ = c.restart_policy
        if c.state.status == "exited" and not c.auto_remove and \
                restart_on_daemon_start(policy, c.state.exit_code, c.manually_stopped):
            c.state.status = "restarting"
            self.save(c)
            self._restart_tasks[c.id] = asyncio.get_running_loop().create_task(
                self._restart_after(c, 0.0), name=f"restart-{c.id[:12]}")

    async def shutdown(self) -> None:
        """Stop watching containerd; containers keep running (live restore picks them up)."""
        self.shutting_down = True
        for hm in list(self._health.values()):
            hm.stop()
        self._health.clear()
        if self.monitor is not None:
            await self.monitor.stop()
        for t in list(self._restart_tasks.values()) + list(self._bg):
            t.cancel()
        for t in list(self._restart_tasks.values()) + list(self._bg):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for c in self.store.all():
            if c.state.status == "restarting":
                # picked up at the next start by the policy
                c.state.status = "exited"
                self.save(c)
        for waiters in self._waiters.values():
            for _, fut in waiters:
                if not fut.done():
                    fut.set_result((-1, "skiffd is shutting down"))
        self._waiters.clear()

    # -- create --------------------------------------------------------------------------------
    async def create(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        from skiff.daemon import specgen

        if not isinstance(body, dict):
            raise InvalidParameter("create: the body must be a JSON object (Config with HostConfig)")
        host = body.get("HostConfig") or {}
        netcfg = body.get("NetworkingConfig") or {}
        if not isinstance(host, dict):
            raise InvalidParameter("HostConfig: expected a JSON object")
        config = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
        image_ref = str(config.get("Image") or "")
        if not image_ref:
            raise InvalidParameter("Config.Image: no image given")
        if host.get("Links"):
            raise InvalidParameter("HostConfig.Links: legacy container links are not supported by skiffd")
        full_name = valid_name(name) if name else ""
        host = fill_host_config(host, self.cfg)
        runtime, runtime_binary = self._runtime(host["Runtime"])
        lc = host["LogConfig"]
        if lc["Type"] not in ("json-file", "none"):
            raise InvalidParameter(f"HostConfig.LogConfig.Type: log driver {lc['Type']!r} is not "
                                   "supported (supported: json-file, none)")
        from skiff.daemon.logger import LogOptError, validate_log_opts
        try:
            validate_log_opts(lc["Type"], lc["Config"])
        except LogOptError as e:
            raise InvalidParameter(f"HostConfig.LogConfig: {e}") from None
        warnings = specgen.validate_create(config, host)
        image = await self.images.resolve(image_ref)
        image_cfg = (image.config or {}).get("config") or {}
        merged = specgen.merge_config(config, image_cfg)     # "no command specified" (400)
        argv = specgen.command_of(merged)
        host = specgen.adapt_host_config(host)

        cid = self._new_id()
        if not full_name:
            full_name = self.store.generate_name()
        self.store.reserve(full_name, cid)
        d = self.dir(cid)
        made: list[str] = []
        try:
            os.makedirs(d, mode=0o710)
            made.append("dir")
            hostname = merged.get("Hostname") or specgen.default_hostname(cid, host)   # issue 8: host network
            merged["Hostname"] = hostname
            etc = self._write_etc_files(d, hostname, merged, host, await self._host_gateway(host))
            c = Container(
                id=cid, name=full_name, created=time.time_ns(), image_id=image.id,
                config=merged, host_config=host, networking_config=netcfg,
                path=argv[0], args=argv[1:], runtime=host["Runtime"],
                log_path=os.path.join(d, f"{cid}-json.log") if lc["Type"] == "json-file" else "",
                hostname_path=etc["/etc/hostname"], hosts_path=etc["/etc/hosts"],
                resolv_conf_path=etc["/etc/resolv.conf"], snapshot_key=cid)
            parent = await self.images.ensure_unpacked(image)
            # under a lease until the container refers to the snapshot (a garbage collection
            # in between, e.g. after the previous container's removal, would take it)
            async with self.cd.temporary_lease() as lease:
                mounts = await self.cd.prepare_snapshot(cid, parent, SNAPSHOTTER, lease=lease)
                made.append("snapshot")
                user = resolve_user_in_mounts(mounts, str(merged.get("User") or ""), host.get("GroupAdd"))
                # issue 8 volumes: mount points resolved (volumes created, copy-up done)
                vol_mounts = [] if self.volumes is None else await self.volumes.prepare(
                    cid, merged, host, _layer_dirs(mounts))
                spec = specgen.build_spec(specgen.SpecInput(
                    id=cid, config=merged, host=host, image_config=image_cfg, hostname=hostname,
                    etc_files=etc, cgroup_parent=self.cfg.cgroup_parent,
                    init_path=shutil.which("tini-static") or "/usr/bin/tini-static",
                    host_caps=_host_caps(), netns_path=self._netns_path(cid, host), user=user,
                    volume_mounts=vol_mounts))
                etcfiles.write_file(os.path.join(d, SPEC_FILE), json.dumps(spec))
                await self.cd.create_container(cid, spec, runtime, runtime_binary,
                                               labels={"com.docker/engine.name": full_name},
                                               image=image_ref, snapshot_key=cid, snapshotter=SNAPSHOTTER)
                made.append("container")
            self.save(c)
        except BaseException:
            if self.volumes is not None:     # issue 8 volumes: anonymous ones made for it go
                await self.volumes.release(cid, True)
            await self._undo_create(cid, made)
            self.store.release(full_name, cid)
            raise
        self.store.add(c)
        self.publish(c, "create")
        return {"Id": cid, "Warnings": list(warnings or [])}

    def _new_id(self) -> str:
        while True:
            cid = secrets.token_hex(32)
            if not cid[:12].isdigit() and self.store.find(cid[:12]) is None:
                return cid

    # -- network hooks (issue 8 networking) ------------------------------------------------------
    def _netns_path(self, cid: str, host: dict[str, Any]) -> str | None:
        if self.network is not None and self.network.uses_bridge(host):
            return str(self.network.netns_path(cid))
        return None

    async def _network_up(self, c: Container) -> None:
        """Before the task is created: the bridge endpoint, and /etc/hosts with its address;
        for ``container:<ref>`` the other container's namespace, put in the spec."""
        mode = str(c.host_config.get("NetworkMode") or "")
        if mode.startswith("container:"):
            await self._join_container_netns(c, mode[len("container:"):])
            return
        if self.network is None or not self.network.uses_bridge(c.host_config) or \
                self._netns_path(c.id, c.host_config) not in _spec_netns_paths(self.container_spec(c)):
            return
        from skiff.daemon.network.bridge import NetworkError
        try:
            ep = await self.network.setup(c.id, c.host_config, c.config.get("ExposedPorts"),
                                          c.networking_config)
        except NetworkError as e:
            raise ApiError(str(e)) from None
        try:
            etcfiles.write_file(c.hosts_path, etcfiles.hosts_file(
                c.host_config.get("ExtraHosts"), own=(ep.ip, str(c.config.get("Hostname") or c.id[:12])),
                host_gateway=await self._host_gateway(c.host_config)))
            if ep.network != "bridge":      # user network: the embedded DNS server
                hc = c.host_config
                etcfiles.write_file(c.resolv_conf_path, etcfiles.embedded_dns_resolv_conf(
                    self._host_resolv_text(), hc.get("DnsSearch") or self.cfg.dns_search,
                    hc.get("DnsOptions") or self.cfg.dns_opts, hc.get("Dns") or self.cfg.dns))
        except (OSError, ValueError) as e:
            raise ApiError(f"container {c.id}: write its hosts/resolv.conf files: {e}") from None

    async def _join_container_netns(self, c: Container, ref: str) -> None:
        try:
            other = self.store.get(ref)
        except NotFound:
            raise NotFound(f"container {c.id}: cannot join the network namespace of container "
                           f"{ref}: no such container") from None
        if other.id == c.id:
            raise InvalidParameter(f"container {c.id}: cannot join its own network namespace")
        if other.state.status not in ("running", "paused") or not other.state.pid:
            raise Conflict(f"cannot join network namespace of a non running container: {other.id}")
        own = self.network.netns_path(other.id) if self.network is not None else ""
        path = own if own and os.path.exists(own) and \
            own in _spec_netns_paths(self.container_spec(other)) else f"/proc/{other.state.pid}/ns/net"
        spec = self.container_spec(c)
        nss = (spec.get("linux") or {}).get("namespaces") or []
        net = [n for n in nss if n.get("type") == "network"]
        if net and net[0].get("path") == path:
            return
        for n in net:
            n["path"] = path
        etcfiles.write_file(os.path.join(self.dir(c.id), SPEC_FILE), json.dumps(spec))
        await self.cd.update_container_spec(c.id, spec)

    def _host_resolv_text(self) -> str:
        try:
            with open(self.host_resolv_conf, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    async def _network_down(self, c: Container) -> None:
        """After the container stopped (or failed to start, or is removed)."""
        if self.network is None:
            return
        try:
            await self.network.teardown(c.id)
        except Exception as e:
            log.error("container %s: %s", c.id, e)

    def _runtime(self, name: str) -> tuple[str, str]:
        rts = self.cfg.all_runtimes()
        rt = rts.get(name)
        if rt is None:
            raise InvalidParameter(f"Unknown runtime specified {name} (known: {', '.join(sorted(rts))})")
        if name in BUILTIN_RUNTIMES:
            return name, ""
        if rt.args:
            raise InvalidParameter(f"runtime {name}: runtimeArgs are not supported yet by skiffd")
        return "io.containerd.runc.v2", rt.path

    async def _host_gateway(self, host: dict[str, Any]) -> str | None:
        """The address ``--add-host NAME:host-gateway`` stands for: the default bridge's gateway
        (the bridge is made if it is not up yet), as dockerd's default ``host-gateway-ip``. None
        when no entry asks for it."""
        if not etcfiles.uses_host_gateway(host.get("ExtraHosts")):
            return None
        if self.network is None:
            raise InvalidParameter("HostConfig.ExtraHosts: host-gateway: skiffd runs without networking")
        from skiff.daemon.network.bridge import NetworkError
        try:
            return await self.network.host_gateway_ip()
        except NetworkError as e:
            raise ApiError(f"HostConfig.ExtraHosts: host-gateway: {e}") from None

    def _write_etc_files(self, d: str, hostname: str, config: dict[str, Any],
                         host: dict[str, Any], host_gateway: str | None = None) -> dict[str, str]:
        paths = {"/etc/hostname": os.path.join(d, "hostname"), "/etc/hosts": os.path.join(d, "hosts"),
                 "/etc/resolv.conf": os.path.join(d, "resolv.conf")}
        domain = config.get("Domainname") or ""
        etcfiles.write_file(paths["/etc/hostname"], hostname + "\n")
        try:
            hosts = etcfiles.hosts_file(host.get("ExtraHosts"), host_gateway=host_gateway)
            try:
                with open(self.host_resolv_conf, encoding="utf-8") as f:
                    host_text = f.read()
            except FileNotFoundError:
                host_text = ""
            resolv = etcfiles.resolv_conf(host_text, host.get("Dns") or self.cfg.dns,   # issue 8
                                          host.get("DnsSearch") or self.cfg.dns_search,
                                          host.get("DnsOptions") or self.cfg.dns_opts)
        except ValueError as e:
            raise InvalidParameter(str(e)) from None
        _ = domain
        etcfiles.write_file(paths["/etc/hosts"], hosts)
        etcfiles.write_file(paths["/etc/resolv.conf"], resolv)
        return paths

    async def _undo_create(self, cid: str, made: list[str]) -> None:
        for step in reversed(made):
            try:
                if step == "container":
                    await self.cd.delete_container(cid)
                elif step == "snapshot":
                    await self.cd.remove_snapshot(cid, SNAPSHOTTER)
                elif step == "dir":
                    shutil.rmtree(self.dir(cid), ignore_errors=False)
            except (ApiError, OSError) as e:
                log.error("container %s: cleanup after a failed create (%s): %s", cid, step, e)

    # -- start ---------------------------------------------------------------------------------
    def _new_io(self, c: Container) -> Any:
        from skiff.daemon.logger import new_logger
        from skiff.daemon.streams import ContainerIO

        lc = c.host_config.get("LogConfig") or {}
        logger = new_logger(lc.get("Type") or "json-file", dict(lc.get("Config") or {}), c.log_path)
        os.makedirs(self.fifo_dir(c.id), mode=0o700, exist_ok=True)
        cid = c.id

        async def close_io() -> None:     # stdin closed: tell the shim (Tasks.CloseIO)
            with contextlib.suppress(NotFound):
                await self.cd.close_stdin(cid)

        return ContainerIO(self.fifo_dir(c.id), "init", stdin=bool(c.config.get("OpenStdin")),
                           tty=c.tty, logger=logger, on_stdin_closed=close_io,
                           hold_until_created=True)   # runc's create error is not output

    async def io_for(self, c: Container) -> tuple[Any, asyncio.Future[int]]:
        """The ContainerIO of the current run, or of the next one (attach before start: its FIFOs
        are created and opened now, so stdin sent before start is kept in the FIFO), and a
        future resolved when that run has ended and its output was copied."""
        io = self._ios.get(c.id)
        if io is None:
            io = self._new_io(c)
            io.fifo_paths()
            await io.open()
            self._ios[c.id] = io
            self._run_done[c.id] = asyncio.get_running_loop().create_future()
        return io, self._run_done[c.id]

    def run_done(self, c: Container) -> asyncio.Future[int] | None:
        """The future of the current run's end (None when no run is under way)."""
        return self._run_done.get(c.id)

    async def close_stdin(self, c: Container, io: Any) -> None:
        """The attach client closed stdin of a StdinOnce container: close the FIFO; the
        ContainerIO then tells the shim (Tasks.CloseIO), once the task exists."""
        await io.close_stdin()

    async def start(self, ref: str) -> None:
        c = self.store.get(ref)
        async with self.lock(c.id):
            st = c.state.status
            if st == "paused":
                raise Conflict("cannot start a paused container, try unpause instead")
            if st == "running":
                raise NotModified("container already started")
            if st in ("removing", "dead"):
                raise Conflict(f"container {c.id}: it is {'being removed' if st == 'removing' else 'dead'} "
                               "and cannot be started")
            self._cancel_restart(c)
            c.manually_stopped = False
            await self._start_locked(c)

    async def _start_locked(self, c: Container) -> None:
        io, done = await self.io_for(c)
        created = False
        try:
            stdin, stdout, stderr = io.fifo_paths()
            mounts = await self.cd.snapshot_mounts(c.snapshot_key, SNAPSHOTTER)
            if self.volumes is not None:     # issue 8 volumes: driver-option mounts
                await self.volumes.started(c.id)
            await self._network_up(c)       # issue 8 networking
            await self.cd.create_task(c.id, mounts, stdin, stdout, stderr, c.tty)
            created = True
            await io.process_created()
            cw, ch = (c.host_config.get("ConsoleSize") or [0, 0])[1], (c.host_config.get("ConsoleSize") or [0, 0])[0]
            if c.tty and cw and ch:
                with contextlib.suppress(ApiError):
                    await self.cd.resize(c.id, int(cw), int(ch))
            pid = await self.cd.start(c.id)
        except ApiError as e:
            await self._start_failed(c, io, done, created, e)
            raise AssertionError("unreachable") from None
        c.state = State(status="running", pid=pid, started_at=time.time_ns(),
                        exit_code=0)
        c.has_been_started = True
        self._oom.discard(c.id)
        self._start_health(c)
        self.save(c)
        self.publish(c, "start")

    async def _start_failed(self, c: Container, io: Any, done: asyncio.Future[int], created: bool,
                            e: ApiError) -> None:
        msg = str(e)
        code, invalid = start_failure(msg)
        if created:
            with contextlib.suppress(ApiError):
                await self.cd.kill(c.id, signal_mod.SIGKILL, all=True)
            with contextlib.suppress(ApiError):
                await self.cd.delete_task(c.id)
        self._ios.pop(c.id, None)
        self._run_done.pop(c.id, None)
        if self.volumes is not None:         # issue 8 volumes
            await self.volumes.stopped(c.id)
        with contextlib.suppress(Exception):
            await io.close()
        with contextlib.suppress(Exception):
            io.remove()
        await self._network_down(c)         # issue 8 networking
        full = f"failed to create task for container: {msg}"
        c.state.error = full
        c.state.exit_code = code
        c.state.pid = 0
        c.state.status = "exited" if c.has_been_started else "created"
        self.save(c)
        if not done.done():
            done.set_result(code)
        if c.auto_remove:
            self._spawn(self._auto_remove(c), f"autoremove-{c.id[:12]}")
        err_cls = InvalidParameter if invalid else type(e)
        raise err_cls(full)

    # -- exits ---------------------------------------------------------------------------------
    async def _on_oom(self, cid: str) -> None:
        c = self.store.by_id.get(cid)
        if c is None:
            return
        self._oom.add(cid)
        self.publish(c, "oom")

    async def _on_task_exit(self, cid: str, exec_id: str, status: int, at: int) -> None:
        if exec_id and exec_id != cid:
            probe = self._probe_exits.get(exec_id)
            if probe is not None:
                if not probe.done():
                    probe.set_result(status)
                return
            for fn in list(self._exec_exit):
                try:
                    await fn(cid, exec_id, status, at)
                except Exception:
                    log.exception("exec %s of container %s: exit listener", exec_id, cid)
            return
        c = self.store.by_id.get(cid)
        if c is None:
            return
        # handled beside the event loop: waiting for one container's output must not hold up
        # the events of the others
        self._spawn(self._task_ended(c, status, at, delete=True), f"exit-{cid[:12]}")

    async def _task_ended(self, c: Container, status: int, at: int, *, delete: bool = False) -> None:
        async with self.lock(c.id):
            if c.state.status not in ("running", "paused"):
                return
            if delete:
                try:
                    status2, at2 = await self.cd.delete_task(c.id)
                    status, at = status2, at2 or at
                except NotFound:
                    pass
                except ApiError as e:
                    log.error("container %s: delete its exited task: %s", c.id, e)
            await self._finish_run(c, status, at)
        await self._after_exit(c)

    async def _finish_run(self, c: Container, status: int, at: int, error: str = "") -> None:
        self._stop_health(c)
        io = self._ios.pop(c.id, None)
        done = self._run_done.pop(c.id, None)
        if io is not None:
            try:
                await asyncio.wait_for(io.wait_closed(), OUTPUT_DRAIN_TIMEOUT)
            except TimeoutError:
                log.warning("container %s: output FIFOs not closed %ss after exit", c.id,
                            OUTPUT_DRAIN_TIMEOUT)
            except Exception as e:
                log.error("container %s: waiting for its output: %s", c.id, e)
            with contextlib.suppress(Exception):
                await io.close()
            with contextlib.suppress(Exception):
                io.remove()
        if self.volumes is not None:         # issue 8 volumes: unmount driver-option volumes
            await self.volumes.stopped(c.id)
        await self._network_down(c)         # issue 8 networking
        started = c.state.started_at
        c.state.status = "exited"
        c.state.pid = 0
        c.state.exit_code = status
        c.state.finished_at = at or time.time_ns()
        c.state.oom_killed = c.id in self._oom
        c.state.error = error
        self._oom.discard(c.id)
        self.save(c)
        dur = max(0, c.state.finished_at - started) // 1_000_000_000 if started else 0
        self.publish(c, "die", exitCode=str(status), execDuration=str(dur))
        if done is not None and not done.done():
            done.set_result(status)

    async def _after_exit(self, c: Container) -> None:
        """Restart policy, waiters, AutoRemove — after the exit was recorded."""
        policy, max_retries = c.restart_policy
        rm = self._restarts.get(c.id)
        if rm is None:
            rm = self._restarts[c.id] = RestartManager(policy, max_retries, c.restart_count)
        ran_for = (c.state.finished_at - c.state.started_at) / 1e9 if c.state.started_at else 0.0
        restart, delay = (False, 0.0) if self.shutting_down else \
            rm.should_restart(c.state.exit_code, c.manually_stopped, ran_for)
        if restart:
            c.state.status = "restarting"
            c.restart_count = rm.count
            self.save(c)
        self._notify(c, ("not-running", "next-exit"))
        if restart:
            task = asyncio.get_running_loop().create_task(self._restart_after(c, delay),
                                                          name=f"restart-{c.id[:12]}")
            self._restart_tasks[c.id] = task
        elif c.auto_remove:
            await self._auto_remove(c)

    async def _restart_after(self, c: Container, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            self._restart_active.add(c.id)    # from here on it is not cancelled, only abandoned
            async with self.lock(c.id):
                if self._restart_tasks.get(c.id) is not asyncio.current_task():
                    return
                self._restart_tasks.pop(c.id, None)
                if c.state.status != "restarting" or self.store.find(c.id) is not c:
                    return
                try:
                    await self._start_locked(c)
                except ApiError as e:
                    log.error("container %s: restart (policy %s): %s", c.id, c.restart_policy[0], e)
                    c.state.status = "exited"
                    self.save(c)
        finally:
            self._restart_active.discard(c.id)
            if self._restart_tasks.get(c.id) is asyncio.current_task():
                self._restart_tasks.pop(c.id, None)

    def _cancel_restart(self, c: Container) -> None:
        t = self._restart_tasks.pop(c.id, None)
        if t is not None and c.id not in self._restart_active:
            t.cancel()
        self._restarts.pop(c.id, None)

    async def _mark_exited(self, c: Container, code: int, at: int, error: str) -> None:
        async with self.lock(c.id):
            await self._finish_run(c, code, at, error)
        await self._after_exit(c)

    async def _auto_remove(self, c: Container) -> None:
        try:
            await self.remove(c.id, force=True, volumes=True)
        except NotFound:
            pass
        except ApiError as e:
            log.error("container %s: automatic removal (--rm): %s", c.id, e)

    # -- wait ----------------------------------------------------------------------------------
    def wait(self, c: Container, condition: str) -> asyncio.Future[tuple[int, str]]:
        """A future of (exit code, error message) for ``condition``; resolved at once when it
        already holds."""
        if condition not in WAIT_CONDITIONS:
            raise InvalidParameter(f'invalid condition: "{condition}"')
        fut: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        if condition == "not-running" and c.state.status in ("created", "exited", "dead"):
            fut.set_result((c.state.exit_code, ""))
            return fut
        if condition == "removed" and self.store.by_id.get(c.id) is not c:
            fut.set_result((c.state.exit_code, ""))
            return fut
        self._waiters.setdefault(c.id, []).append((condition, fut))
        return fut

    def forget_wait(self, c: Container, fut: asyncio.Future[tuple[int, str]]) -> None:
        lst = self._waiters.get(c.id)
        if lst:
            self._waiters[c.id] = [(k, f) for k, f in lst if f is not fut]

    def _notify(self, c: Container, conditions: tuple[str, ...]) -> None:
        lst = self._waiters.get(c.id, [])
        keep = []
        for cond, fut in lst:
            if cond in conditions:
                if not fut.done():
                    fut.set_result((c.state.exit_code, ""))
            else:
                keep.append((cond, fut))
        if keep:
            self._waiters[c.id] = keep
        else:
            self._waiters.pop(c.id, None)

    # -- stop / kill / restart -------------------------------------------------------------------
    def stop_signal(self, c: Container) -> int:
        s = c.config.get("StopSignal")
        return parse_signal(str(s)) if s else int(signal_mod.SIGTERM)

    async def stop(self, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
        c = self.store.get(ref)
        signum = parse_signal(sig) if sig else self.stop_signal(c)
        if c.state.status == "restarting":
            async with self.lock(c.id):
                self._cancel_restart(c)
                c.manually_stopped = True
                if c.state.status == "restarting":
                    c.state.status = "exited"
                self.save(c)
            self._notify(c, ("not-running", "next-exit"))
            self.publish(c, "stop")
            return
        if not self.is_running(c):
            raise NotModified(f"container {c.id} is already stopped")
        if timeout is None:
            st = c.config.get("StopTimeout")
            timeout = int(st) if st is not None else DEFAULT_STOP_TIMEOUT
        c.manually_stopped = True
        self._cancel_restart(c)
        self.save(c)
        exited = self.wait(c, "next-exit")
        try:
            await self._signal(c, signum)
            try:
                await asyncio.wait_for(asyncio.shield(exited), None if timeout < 0 else timeout)
            except TimeoutError:
                log.info("container %s: did not stop within %ss of signal %d; killing it",
                         c.id, timeout, signum)
                await self._signal(c, int(signal_mod.SIGKILL), all=True)
                await exited
        finally:
            self.forget_wait(c, exited)
        self.publish(c, "stop")

    async def _signal(self, c: Container, signum: int, *, all: bool = False) -> None:
        try:
            await self.cd.kill(c.id, signum, all=all)
        except NotFound:
            return          # already gone: its exit is on its way
        self.publish(c, "kill", signal=str(signum))
        if c.state.status == "paused" and signum == signal_mod.SIGKILL:
            # a frozen process only dies once thawed
            with contextlib.suppress(ApiError):
                await self.cd.resume(c.id)
            c.state.status = "running"

    async def kill(self, ref: str, sig: str | None = None) -> None:
        c = self.store.get(ref)
        signum = parse_signal(sig) if sig else int(signal_mod.SIGKILL)
        if not self.is_running(c):
            raise Conflict(f"cannot kill container: {ref}: container {c.id} is not running")
        if signum in (signal_mod.SIGKILL, self.stop_signal(c)):
            c.manually_stopped = True
            self._cancel_restart(c)
            self.save(c)
        if signum != signal_mod.SIGKILL:
            await self._signal(c, signum)
            return
        # as dockerd: a SIGKILL returns once the container has stopped (clients rm right after)
        exited = self.wait(c, "not-running")
        try:
            await self._signal(c, signum)
            try:
                await asyncio.wait_for(asyncio.shield(exited), KILL_WAIT)
            except TimeoutError:
                raise ApiError(f"container {c.id}: still running {KILL_WAIT:.0f} s after SIGKILL") from None
        finally:
            self.forget_wait(c, exited)

    async def restart(self, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
        c = self.store.get(ref)
        if self.is_running(c) or c.state.status == "restarting":
            try:
                await self.stop(c.id, timeout, sig)
            except NotModified:
                pass
        await self.start(c.id)
        c.manually_stopped = False
        self.save(c)
        self.publish(c, "restart")

    # -- pause / rename / resize -----------------------------------------------------------------
    async def pause(self, ref: str) -> None:
        c = self.store.get(ref)
        async with self.lock(c.id):
            if c.state.status == "paused":
                raise Conflict(f"Container {c.id} is already paused")
            if c.state.status != "running":
                raise Conflict(f"Container {c.id} is not running")
            await self.cd.pause(c.id)
            c.state.status = "paused"
            self.save(c)
        self.publish(c, "pause")

    async def unpause(self, ref: str) -> None:
        c = self.store.get(ref)
        async with self.lock(c.id):
            if c.state.status != "paused":
                raise Conflict(f"Container {c.id} is not paused")
            await self.cd.resume(c.id)
            c.state.status = "running"
            self.save(c)
        self.publish(c, "unpause")

    async def rename(self, ref: str, new: str) -> None:
        c = self.store.get(ref)
        if not new:
            raise InvalidParameter("rename: the new name is empty")
        full = valid_name(new)
        if full == c.name:
            raise InvalidParameter("Renaming a container with the same name as its current name")
        old = c.name
        self.store.reserve(full, c.id)
        c.name = full
        try:
            self.save(c)
        except OSError:
            c.name = old
            self.store.release(full, c.id)
            raise
        self.store.release(old, c.id)
        self.publish(c, "rename", oldName=old)

    async def resize(self, ref: str, height: int, width: int) -> None:
        c = self.store.get(ref)
        if not self.is_running(c):
            raise Conflict(f"Container {c.id} is not running")
        try:
            await self.cd.resize(c.id, width, height)
        except ApiError:
            t = await self.cd.get_task(c.id)
            if t is None or t.status == "stopped":     # it exited meanwhile
                raise Conflict(f"Container {c.id} is not running") from None
            raise

    # -- remove / prune --------------------------------------------------------------------------
    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        c = self.store.get(ref)
        st = c.state.status
        if st == "removing":
            raise Conflict(f"removal of container {c.name.lstrip('/')} is already in progress")
        if st in ("running", "paused", "restarting") and not force:
            if st == "paused":
                raise Conflict(f'cannot remove container "{c.name}": container is paused and must be '
                               "unpaused first")
            if st == "restarting":
                raise Conflict(f'cannot remove container "{c.name}": container is restarting: stop '
                               "the container before removing or force remove")
            raise Conflict(f'cannot remove container "{c.name}": container is running: stop the '
                           "container before removing or force remove")
        c.manually_stopped = True
        for _attempt in range(3):
            self._cancel_restart(c)
            if self.is_running(c):
                exited = self.wait(c, "not-running")
                await self._signal(c, int(signal_mod.SIGKILL), all=True)
                try:
                    await asyncio.wait_for(asyncio.shield(exited), KILL_WAIT)
                except TimeoutError:
                    raise Conflict(f"container {c.id}: still running {KILL_WAIT:.0f} s after SIGKILL; "
                                   "not removed") from None
                finally:
                    self.forget_wait(c, exited)
            await self.lock(c.id).acquire()
            if not self.is_running(c):
                break
            self.lock(c.id).release()      # started again meanwhile (a restart): once more
        else:
            raise Conflict(f'cannot remove container "{c.name}": it keeps being started again')
        lk = self.lock(c.id)
        try:
            if self.store.by_id.get(c.id) is not c:
                return
            self._cancel_restart(c)
            prev = c.state.status
            c.state.status = "removing"
            try:
                await self._remove_resources(c)
            except (ApiError, OSError) as e:
                c.state.status = "dead" if prev != "created" else prev
                c.state.error = f"removal failed: {e}"
                with contextlib.suppress(OSError):
                    self.save(c)
                raise ApiError(f"container {c.id}: could not remove: {e}") from None
            self.store.remove(c)
            if self.volumes is not None:     # issue 8 volumes: -v / --rm remove anonymous ones
                await self.volumes.release(c.id, volumes)
            self._locks.pop(c.id, None)
            self._restarts.pop(c.id, None)
            io = self._ios.pop(c.id, None)
            done = self._run_done.pop(c.id, None)
            if io is not None:
                with contextlib.suppress(Exception):
                    await io.close()
            if done is not None and not done.done():
                done.set_result(c.state.exit_code)
        finally:
            lk.release()
        self.publish(c, "destroy")
        self._notify(c, WAIT_CONDITIONS)

    async def _remove_resources(self, c: Container) -> None:
        with contextlib.suppress(NotFound):
            await self.cd.delete_task(c.id)
        await self._network_down(c)         # issue 8 networking

        async def gone(call: Awaitable[None]) -> None:
            with contextlib.suppress(NotFound):
                await call

        # once the task is gone, the container record and its snapshot are independent
        results = await asyncio.gather(gone(self.cd.delete_container(c.id)),
                                       gone(self.cd.remove_snapshot(c.snapshot_key or c.id, SNAPSHOTTER)),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        shutil.rmtree(self.fifo_dir(c.id), ignore_errors=True)
        if os.path.exists(self.dir(c.id)):
            shutil.rmtree(self.dir(c.id))

    async def prune(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        from skiff.daemon.api.httputils import parse_timestamp

        until = [parse_timestamp("until", u) for u in filters.get("until", [])]
        deleted: list[str] = []
        reclaimed = 0
        for c in self.store.all():
            if c.state.status not in ("created", "exited", "dead"):
                continue
            if until and not all(c.created < u for u in until):
                continue
            if not _label_filter(c.labels, filters.get("label", []), filters.get("label!", [])):
                continue
            try:
                size, _ = await self.cd.snapshot_usage(c.snapshot_key or c.id, SNAPSHOTTER)
            except ApiError:
                size = 0
            try:
                await self.remove(c.id)
            except ApiError as e:
                log.warning("prune: container %s: %s", c.id, e)
                continue
            deleted.append(c.id)
            reclaimed += size
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    # -- views -----------------------------------------------------------------------------------
    async def changes(self, c: Container) -> list[dict[str, Any]]:
        """``docker diff``: [{"Path", "Kind"}] (Kind 0 modified, 1 added, 2 deleted) of the
        container's snapshot against its image (skiff.daemon.containers.archive)."""
        from skiff.daemon.containers.archive import ArchiveService

        return await ArchiveService(self).changes(c)

    async def size(self, c: Container) -> tuple[int, int]:
        """(SizeRw, SizeRootFs)."""
        try:
            rw, _ = await self.cd.snapshot_usage(c.snapshot_key or c.id, SNAPSHOTTER)
        except NotFound:
            rw = 0
        image_size = 0
        try:
            image = await self.images.resolve(c.image_id)
            image_size = int(getattr(image, "size", 0) or 0)
        except ApiError:
            pass
        return rw, rw + image_size

    async def inspect(self, ref: str, size: bool = False) -> dict[str, Any]:
        c = self.store.get(ref)
        if size:
            rw, rootfs = await self.size(c)
            d = c.inspect(size_rw=rw, size_root_fs=rootfs)
        else:
            d = c.inspect()
        if self.volumes is not None:         # issue 8 volumes
            d["Mounts"] = self.volumes.mounts_of(c.id)
        if self.network is not None:        # issue 8 networking
            d["NetworkSettings"] = self.network.network_settings(c.id, c.host_config, d["NetworkSettings"],
                                                                 c.config.get("ExposedPorts"),
                                                                 c.networking_config)
        return d

    async def list(self, *, all: bool, limit: int, size: bool,
                   filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        ancestors: dict[str, set[str]] = {}
        for ref in filters.get("ancestor", []):
            try:
                img = await self.images.resolve(ref)
                ancestors[ref] = {img.id}
            except NotFound:
                ancestors[ref] = set()

        def image_matches(c: Container, ref: str) -> bool:
            return c.image_id in ancestors.get(ref, set())

        found = self.store.list(all=all, limit=limit, filters=filters, image_matches=image_matches)
        now = time.time_ns()
        out = []
        for c in found:
            s = c.summary(now)
            if self.volumes is not None:     # issue 8 volumes
                s["Mounts"] = self.volumes.mounts_of(c.id)
            if self.network is not None:     # issue 8 networking
                s["Ports"], s["NetworkSettings"] = self.network.summary(
                    c.id, c.host_config, c.config.get("ExposedPorts"), c.networking_config)
            if size:
                s["SizeRw"], s["SizeRootFs"] = await self.size(c)
            out.append(s)
        return out


def _label_filter(labels: dict[str, str], want: list[str], not_want: list[str]) -> bool:
    for w in want:
        k, sep, v = w.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    for w in not_want:
        k, sep, v = w.partition("=")
        if k in labels and (not sep or labels[k] == v):
            return False
    return True


def _spec_netns_paths(spec: dict[str, Any]) -> list[str]:
    return [str(n.get("path")) for n in (spec.get("linux") or {}).get("namespaces") or []
            if n.get("type") == "network" and n.get("path")]


def _host_caps() -> list[str]:
    """The capabilities of this host's bounding set (for --privileged)."""
    from skiff.runtime.caps import names

    mask = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
    return names(mask)


def _layer_dirs(mounts: list[Any]) -> list[str]:
    """The directories of a snapshot's mounts, top first (overlay upper, then lowers; a bind
    mount's source)."""
    dirs: list[str] = []
    for m in mounts:
        if m.type == "overlay":
            upper, lowers = "", []
            for opt in m.options:
                k, _, v = opt.partition("=")
                if k == "upperdir":
                    upper = v
                elif k == "lowerdir":
                    lowers = v.split(":")
            dirs += ([upper] if upper else []) + lowers
        elif m.type in ("bind", "rbind") or "bind" in m.options or "rbind" in m.options:
            dirs.append(m.source)
    return dirs


def resolve_user_in_mounts(mounts: list[Any], user: str, group_add: list[str] | None) -> dict[str, Any] | None:
    """process.user for a Config.User that names a user or group: read from the image's
    /etc/passwd and /etc/group in the topmost layer that has them. None for numeric users
    (specgen resolves those itself)."""
    from skiff.daemon import specgen

    u, _, g = user.partition(":")
    names = [x for x in [u, g, *(group_add or [])] if x and not x.isdigit()]
    if not names:
        return None
    for d in _layer_dirs(mounts):
        if os.path.lexists(os.path.join(d, "etc", "passwd")):
            return specgen.resolve_user(d, user, group_add)
    raise InvalidParameter(f"unable to find user {u}: no matching entries in passwd file")
