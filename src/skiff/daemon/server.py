"""skiffd's process: listeners (Unix socket, TCP with mutual TLS), pid file, shutdown."""

from __future__ import annotations

import asyncio
import errno
import grp
import logging
import os
import signal
import socket
import ssl
from typing import Any

from aiohttp import web

from skiff.daemon.api.errors import ApiError
from skiff.daemon.api.server import Router, make_app
from skiff.daemon.api.system import SystemRouter
from skiff.daemon.backend import ContainersBackend, ImagesBackend, NoContainers, NoImages
from skiff.daemon.config import DaemonConfig, parse_host
from skiff.daemon.events import EventsHub
from skiff.daemon.system import SystemService

log = logging.getLogger("skiff.daemon")


class StartError(Exception):
    """The daemon cannot start; the message says what and why."""


def socket_group(cfg: DaemonConfig) -> int:
    """The gid for the Unix socket: the configured group; the default ``docker`` falls back to
    root when it does not exist, an explicitly configured group must exist."""
    try:
        return grp.getgrnam(cfg.group).gr_gid
    except KeyError:
        if cfg.group_explicit:
            raise StartError(f"group {cfg.group!r}: no such group (for the API socket)") from None
        log.info("group %s does not exist: the API socket is root's only", cfg.group)
        return 0


def bind_unix(path: str, gid: int) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0660, owned by root:gid. A socket file left by a
    dead daemon is replaced; one that accepts connections is not."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if os.path.lexists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)   # stale
        else:
            raise StartError(f"{path}: another daemon is listening on this socket")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chown(path, 0 if os.geteuid() == 0 else -1, gid if os.geteuid() == 0 else -1)
        os.chmod(path, 0o660)
        sock.listen(1024)
    except OSError as e:
        sock.close()
        raise StartError(f"listen on unix://{path}: {e.strerror}") from None
    return sock


def tls_context(cfg: DaemonConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cfg.tlscacert)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.tlscert, cfg.tlskey)
    except (ssl.SSLError, OSError) as e:
        raise StartError(f"tlscert {cfg.tlscert} / tlskey {cfg.tlskey}: cannot load: {e}") from None
    return ctx


class PidFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def create(self) -> None:
        try:
            with open(self.path) as f:
                old = int(f.read().strip() or "0")
        except (FileNotFoundError, ValueError):
            old = 0
        if old > 0 and old != os.getpid():
            try:
                os.kill(old, 0)
            except ProcessLookupError:
                pass
            except PermissionError:
                raise StartError(f"pid file {self.path}: process {old} is running; "
                                 "is skiffd already running? (else delete the file)") from None
            else:
                raise StartError(f"pid file {self.path}: process {old} is running; "
                                 "is skiffd already running? (else delete the file)")
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, self.path)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _ImageCount(ImagesBackend):
    """The system router asks for the image count from a worker thread; the image service is
    async on the daemon's loop."""

    def __init__(self, images: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.images = images
        self.loop = loop

    def count(self) -> int:
        return int(asyncio.run_coroutine_threadsafe(self.images.count(), self.loop).result(30))


class Daemon:
    """skiffd. Built with explicit backends (tests), it serves only those; built without, ``run``
    connects to (or starts) skiff-containerd and builds the image and container services."""

    def __init__(self, cfg: DaemonConfig, *, containers: ContainersBackend | None = None,
                 images: ImagesBackend | None = None) -> None:
        self.cfg = cfg
        self.events = EventsHub()
        self.wire_containerd = containers is None and images is None
        self.containers: ContainersBackend = containers or NoContainers()
        self.images: ImagesBackend = images or NoImages()
        self.system = SystemService(cfg, self.containers, self.images)
        self.cd: Any = None
        self.image_service: Any = None
        self.container_service: Any = None
        self.volume_service: Any = None   # issue 8 volumes
        self.exec_service: Any = None
        self.network: Any = None          # issue 8: NetworkManager

    def app(self) -> web.Application:
        routers: list[Router] = [SystemRouter(self.system, self.events)]
        if self.image_service is not None:
            from skiff.daemon.api.images import ImagesRouter
            routers.append(ImagesRouter(self.image_service, self.container_service,
                                        os.path.join(self.cfg.data_root, "tmp")))
        if self.container_service is not None:
            from skiff.daemon.api.containers import ContainersRouter
            routers.append(ContainersRouter(self.container_service))
        if self.image_service is not None and self.container_service is not None:
            from skiff.daemon.api.df import DiskUsageRouter
            routers.append(DiskUsageRouter(self.image_service, self.container_service,
                                           self.volume_service))
        if self.volume_service is not None:   # issue 8 volumes
            from skiff.daemon.api.volumes import VolumesRouter
            routers.append(VolumesRouter(self.volume_service))
        if self.exec_service is not None:
            from skiff.daemon.api.exec import ExecRouter
            routers.append(ExecRouter(self.exec_service))
        if self.image_service is not None and self.container_service is not None:   # issue 10 build
            from skiff.daemon.api.build import BuildRouter
            routers.append(BuildRouter(self.image_service, self.container_service,
                                       os.path.join(self.cfg.data_root, "tmp"),
                                       os.path.join(self.cfg.exec_root, "build")))
        if self.network is not None and self.container_service is not None:   # issue 8
            from skiff.daemon.api.networks import NetworksRouter
            routers.append(NetworksRouter(self.network, self.container_service, self.events))
        return make_app(routers)

    async def connect_backends(self) -> None:
        """containerd, the built-in image, the container records reconciled with containerd's
        tasks (live restore) and the containerd event monitor."""
        from skiff.daemon.containerd.client import Containerd
        from skiff.daemon.containerd.supervisor import ensure_containerd
        from skiff.daemon.containers.backend import ContainerService
        from skiff.daemon.images.service import ImageService

        address = await ensure_containerd(self.cfg)
        self.cd = await Containerd.connect(address)
        version = await self.cd.version()
        log.info("containerd %s on %s", version, address)
        images = ImageService(self.cd, self.events)
        await images.ensure_builtin()
        containers = ContainerService(self.cfg, self.cd, images, self.events)
        images.tmp_dir = os.path.join(self.cfg.data_root, "tmp")
        from skiff.daemon.images.transfer import clean_scratch
        await asyncio.to_thread(clean_scratch, images.tmp_dir)
        images.registry_mirrors = list(self.cfg.registry_mirrors)
        images.insecure_registries = list(self.cfg.insecure_registries)
        images.containers_using = lambda image_id: [
            (c.id, c.state.status in ("running", "paused", "restarting"))
            for c in containers.store.all() if c.image_id == image_id]
        for err in containers.load():
            log.error("%s", err)
        # issue 8 volumes
        from skiff.daemon.volumes.service import VolumeService

        def container_id(ref: str) -> str:
            return str(containers.store.get(ref).id)
        volumes = VolumeService(self.cfg.data_root, container_id, self.events)
        for err in await asyncio.to_thread(volumes.load):
            log.error("%s", err)
        containers.volumes = volumes
        cfg = self.cfg

        async def restart_containerd() -> None:
            if not cfg.containerd:            # one skiffd started: start it again if it died
                await ensure_containerd(cfg)

        # issue 8 networking: the default bridge network; its leftovers are reconciled with the
        # tasks that still run before the containers are (a restart policy may start some)
        from skiff.daemon.network.manager import NetworkManager
        network = NetworkManager(cfg.data_root, cfg.exec_root, bridge=cfg.bridge, bip=cfg.bip, mtu=cfg.mtu,
                                 dns=cfg.dns, address_pools=cfg.default_address_pools)
        containers.network = network
        self.network = network
        for err in network.load():
            log.error("%s", err)
        from skiff.daemon.network.dns import DnsService
        network.dns = DnsService(network.resolve, reverse=network.resolve_ptr)

        def names(cid: str) -> list[str]:
            c = containers.store.by_id.get(cid)
            if c is None:
                return [cid[:12]]
            return [c.name.lstrip("/"), str(c.config.get("Hostname") or cid[:12])]
        network.container_names = names
        await network.reconcile({t.id for t in await self.cd.list_tasks()
                                 if t.status in ("running", "paused", "pausing")})
        # subscribe before reconciling: no exit is missed
        await containers.start_monitor(restart_containerd)
        await containers.reconcile()
        volumes.restore([c.id for c in containers.store.all()        # issue 8 volumes
                         if c.state.status in ("running", "paused")])
        self.volume_service = volumes
        self.image_service = images
        self.container_service = containers
        from skiff.daemon.containers.exec import ExecService
        self.exec_service = ExecService(containers)
        self.containers = containers
        self.images = _ImageCount(images, asyncio.get_running_loop())
        self.system.containers = self.containers
        self.system.images = self.images

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set, then close listeners, end streams and wait for the
        requests in flight (up to 10 s)."""
        cfg = self.cfg
        pidfile = PidFile(cfg.effective_pidfile())
        pidfile.create()
        unix_paths: list[str] = []
        runner: web.AppRunner | None = None
        trimmer: asyncio.Task[None] | None = None
        try:
            os.makedirs(cfg.exec_root, mode=0o755, exist_ok=True)
            self.system.engine_id()
            if self.wire_containerd:
                await self.connect_backends()
            runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None,
                                   shutdown_timeout=10.0)
            await runner.setup()
            gid = socket_group(cfg)
            for host in cfg.effective_hosts():
                kind, addr = parse_host(host)
                if kind == "unix":
                    sock = bind_unix(addr, gid)
                    unix_paths.append(addr)
                    await web.SockSite(runner, sock).start()
                else:
                    hostpart, _, port = addr.rpartition(":")
                    try:
                        site = web.TCPSite(runner, hostpart.strip("[]") or None, int(port),
                                           ssl_context=tls_context(cfg))
                        await site.start()
                    except OSError as e:
                        raise StartError(f"listen on {host}: {e.strerror or e}") from None
                log.info("API listening on %s", host)
            if ready is not None:
                ready.set()
            trimmer = asyncio.get_running_loop().create_task(_trim_memory(), name="malloc-trim")
            await stop.wait()
            log.info("shutting down")
        finally:
            if trimmer is not None:
                trimmer.cancel()
            self.events.close()
            if self.exec_service is not None:
                await self.exec_service.shutdown()
            if self.container_service is not None:
                await self.container_service.shutdown()   # containers keep running
            if self.network is not None:               # issue 8 networking
                await self.network.shutdown()
            if runner is not None:
                await runner.cleanup()
            if self.cd is not None:
                await self.cd.close()
            for path in unix_paths:
                try:
                    os.unlink(path)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        log.error("remove %s: %s", path, e.strerror)
            pidfile.remove()
            log.info("stopped")


async def _trim_memory(interval: float = 10.0) -> None:
    """Give the heap freed by start-up (and later by bursts of requests) back to the kernel:
    now, then every ``interval`` seconds (see skiff.memtrim)."""
    from skiff import memtrim

    while True:
        memtrim.trim()
        await asyncio.sleep(interval)


def run_forever(daemon: Daemon) -> int:
    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await daemon.run(stop)

    try:
        asyncio.run(_main())
    except StartError as e:
        log.error("cannot start: %s", e)
        return 1
    except ApiError as e:
        log.error("cannot start: %s", e)
        return 1
    except OSError as e:
        log.error("cannot start: %s", e)
        return 1
    return 0
