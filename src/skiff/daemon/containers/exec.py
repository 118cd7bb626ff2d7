"""``docker exec``: exec instances over containerd's ``Tasks.Exec``/``Start``.

An exec instance is created (``POST /containers/{id}/exec``), started once (``POST
/exec/{id}/start``: hijacked, or detached), resized (also before its start: the size is kept and
given to the process at start) and inspected (``GET /exec/{id}/json``). Its stdio are FIFOs in
the container's FIFO directory named after the exec id (``ContainerIO``, no log). Its exit comes
from containerd's ``/tasks/exit`` event for the exec id (``ContainerService.add_exec_exit_listener``):
the exit code is recorded, the output is given up to ``OUTPUT_GRACE`` seconds to drain (a
background child of the exec may hold the FIFOs open; dockerd waits 2 s too), then the streams
are closed, which ends the client's connection.

As dockerd: a start that fails (command not found...) records exit code 126 and the error text
goes into the stream; exited instances stay inspectable for ``KEEP_EXITED`` seconds (at most
``MAX_EXITED`` of them) and are gone when their container is removed; a running instance is
listed in the container's ``ExecIDs`` until it exits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
from typing import Any

from skiff.daemon.api.errors import ApiError, Conflict, InvalidParameter, NotFound
from skiff.daemon.containers.model import Container

log = logging.getLogger("skiff.daemon.exec")

OUTPUT_GRACE = 2.0          # seconds the output may take to drain after the exit
KEEP_EXITED = 300.0         # seconds an exited instance stays inspectable
MAX_EXITED = 1000           # exited instances kept at most (oldest dropped first)
START_WAIT = 10.0           # seconds a resize waits for a start under way (as dockerd)
EXIT_START_FAILED = 126     # dockerd's exit code of an exec that could not be started

CREATE_FIELDS = {"AttachStdin", "AttachStdout", "AttachStderr", "Tty", "Env", "User", "WorkingDir",
                 "Privileged", "DetachKeys", "ConsoleSize", "Cmd",
                 # sent by clients and ignored by dockerd too: docker-py's "Container", the CLI's
                 # "Detach" (a start option)
                 "Container", "Detach"}


def _console_size(v: Any, what: str) -> list[int] | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 2 or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        raise InvalidParameter(f"{what}: expected [height, width] as two non-negative integers, got {v!r}")
    return [int(v[0]), int(v[1])] if any(v) else None


class ExecInstance:
    """One exec instance (moby's exec.Config)."""

    def __init__(self, id: str, container_id: str, body: dict[str, Any], detach_keys: bytes,
                 user: str, working_dir: str) -> None:
        cmd = list(body["Cmd"])
        self.id = id
        self.container_id = container_id
        self.body = body                      # the create body (for specgen.exec_process)
        self.entrypoint = str(cmd[0])
        self.args = [str(a) for a in cmd[1:]]
        self.tty = bool(body.get("Tty"))
        self.open_stdin = bool(body.get("AttachStdin"))
        self.open_stdout = bool(body.get("AttachStdout"))
        self.open_stderr = bool(body.get("AttachStderr"))
        self.privileged = bool(body.get("Privileged"))
        self.user = user
        self.working_dir = working_dir
        self.detach_keys = detach_keys
        self.console_size: list[int] | None = _console_size(body.get("ConsoleSize"), "ConsoleSize")
        self.running = False
        self.exit_code: int | None = None
        self.pid = 0
        self.can_remove = False
        self.ended_at = 0.0                   # monotonic time of the end (for retention)
        self.io: Any = None
        self.started = asyncio.Event()        # the process exists (or its start failed)
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._exit: tuple[int, int] | None = None   # an exit that came before the start returned

    @property
    def command(self) -> str:
        """As dockerd's event actions put it (a trailing space when there are no arguments)."""
        return f"{self.entrypoint} {' '.join(self.args)}"

    def inspect(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {"tty": self.tty, "entrypoint": self.entrypoint,
                              "arguments": list(self.args), "privileged": self.privileged,
                              "user": self.user},
            "OpenStdin": self.open_stdin,
            "OpenStderr": self.open_stderr,
            "OpenStdout": self.open_stdout,
            "CanRemove": self.can_remove,
            "ContainerID": self.container_id,
            # dockerd's DetachKeys is a []byte: JSON base64
            "DetachKeys": base64.b64encode(self.detach_keys).decode(),
            "Pid": self.pid,
        }


class ExecService:
    """The exec instances of a daemon, over the containers backend (``ContainerService``)."""

    def __init__(self, containers: Any) -> None:
        self.cs = containers
        self.cd = containers.cd
        self._execs: dict[str, ExecInstance] = {}
        self._bg: set[asyncio.Task[Any]] = set()
        containers.add_exec_exit_listener(self._on_exit)
        # exec instances do not survive a skiffd restart: forget the ids records still list
        for c in containers.store.all():
            c.exec_ids = []

    # -- lookup ----------------------------------------------------------------------------------
    def get(self, exec_id: str) -> ExecInstance:
        ec = self._execs.get(exec_id)
        if ec is None or self.cs.store.by_id.get(ec.container_id) is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return ec

    def _container_of(self, ec: ExecInstance) -> Container:
        c: Container | None = self.cs.store.by_id.get(ec.container_id)
        if c is None:
            raise NotFound(f"No such container: {ec.container_id}")
        return c

    @staticmethod
    def check_active(c: Container) -> None:
        """dockerd's getActiveContainer: 409 unless running (and not paused or restarting)."""
        st = c.state.status
        if st == "paused":
            raise Conflict(f"container {c.id} is paused, unpause the container before exec")
        if st == "restarting":
            raise Conflict(f"container {c.id} is restarting, wait until the container is running")
        if st != "running":
            raise Conflict(f"container {c.id} is not running")

    def inspect(self, exec_id: str) -> dict[str, Any]:
        return self.get(exec_id).inspect()

    # -- create ----------------------------------------------------------------------------------
    async def create(self, ref: str, body: Any) -> str:
        from skiff.daemon.api.hijack import parse_detach_keys

        c = self.cs.get(ref)
        if not isinstance(body, dict):
            raise InvalidParameter("exec create: the body must be a JSON object")
        unknown = sorted(set(body) - CREATE_FIELDS)
        if unknown:
            raise InvalidParameter(f"exec create: unsupported field(s) {', '.join(unknown)} "
                                   f"(supported: {', '.join(sorted(CREATE_FIELDS - {'Container', 'Detach'}))})")
        cmd = body.get("Cmd")
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd:
            raise InvalidParameter("No exec command specified")
        if not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
            raise InvalidParameter(f"Cmd: expected a list of strings, got {cmd!r}")
        env = body.get("Env")
        if env is not None and (not isinstance(env, list) or not all(isinstance(e, str) for e in env)):
            raise InvalidParameter(f"Env: expected a list of strings, got {env!r}")
        for e in env or []:
            if e.split("=", 1)[0] == "":
                raise InvalidParameter(f"invalid environment variable: {e}")
        for key in ("User", "WorkingDir", "DetachKeys"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise InvalidParameter(f"{key}: expected a string, got {body[key]!r}")
        wd = body.get("WorkingDir") or ""
        if wd and not wd.startswith("/"):
            raise InvalidParameter(f"the working directory '{wd}' is invalid, it needs to be an absolute path")
        keys = b""
        if body.get("DetachKeys"):
            try:
                keys = parse_detach_keys(body["DetachKeys"])
            except InvalidParameter:
                raise InvalidParameter(f"Invalid escape keys ({body['DetachKeys']}) provided") from None
        self.check_active(c)
        body = dict(body)
        body["Cmd"] = cmd
        ec = ExecInstance(secrets.token_hex(32), c.id, body, keys,
                          user=body.get("User") or str(c.config.get("User") or ""),
                          working_dir=wd or str(c.config.get("WorkingDir") or ""))
        self._gc()
        self._execs[ec.id] = ec
        c.exec_ids.append(ec.id)
        self.cs.publish(c, f"exec_create: {ec.command}", execID=ec.id)
        return ec.id

    # -- start -----------------------------------------------------------------------------------
    def begin_start(self, exec_id: str, console_size: Any = None) -> tuple[ExecInstance, Container]:
        """Checks before the start (errors are still plain HTTP answers then); marks it running."""
        ec = self.get(exec_id)
        c = self._container_of(ec)
        self.check_active(c)
        if ec.exit_code is not None:
            raise Conflict(f"Error: Exec command {ec.id} has already run")
        if ec.running:
            raise Conflict(f"Error: Exec command {ec.id} is already running")
        cs = _console_size(console_size, "ConsoleSize")
        if cs is not None:
            ec.console_size = cs
        ec.running = True
        self.cs.publish(c, f"exec_start: {ec.command}", execID=ec.id)
        return ec, c

    async def open_io(self, ec: ExecInstance) -> Any:
        """The instance's stdio (FIFOs created, skiffd's ends open), before the process exists,
        so that a subscriber made now sees all of its output."""
        from skiff.daemon.streams import ContainerIO

        cd, cid, eid = self.cd, ec.container_id, ec.id

        async def close_io() -> None:      # stdin closed: tell the shim (Tasks.CloseIO)
            with contextlib.suppress(NotFound):
                await cd.close_stdin(cid, eid)

        io = ContainerIO(self.cs.fifo_dir(cid), eid, stdin=ec.open_stdin, tty=ec.tty, logger=None,
                         on_stdin_closed=close_io)
        io.fifo_paths()
        await io.open()
        ec.io = io
        return io

    async def launch(self, ec: ExecInstance, c: Container) -> None:
        """Create and start the process (after ``begin_start`` and ``open_io``). On failure the
        instance is finished with exit code 126 and the error (dockerd's words) is raised."""
        from skiff.daemon import specgen
        from skiff.daemon.containers.backend import SNAPSHOTTER, resolve_user_in_mounts

        io = ec.io
        created = False
        try:
            spec = self.cs.container_spec(c)
            user = None
            exec_cfg = dict(ec.body)
            exec_cfg["Cmd"] = [ec.entrypoint, *ec.args]
            exec_cfg["User"] = ec.user
            exec_cfg["WorkingDir"] = ec.working_dir
            exec_cfg["ConsoleSize"] = ec.console_size
            if ec.user and not all(p.isdigit() for p in ec.user.split(":") if p):
                mounts = await self.cd.snapshot_mounts(c.snapshot_key or c.id, SNAPSHOTTER)
                user = resolve_user_in_mounts(mounts, ec.user, c.host_config.get("GroupAdd"))
            process = specgen.exec_process(spec, c.config, c.host_config, exec_cfg, user=user)
            stdin, stdout, stderr = io.fifo_paths()
            await self.cd.exec(c.id, ec.id, process, stdin, stdout, stderr, ec.tty)
            created = True
            await io.process_created()
            pid = await self.cd.start(c.id, ec.id)
        except (ApiError, OSError) as e:
            log.info("exec %s in container %s: start failed: %s", ec.id, c.id, e)
            await self._start_failed(ec, c, created)
            raise
        ec.pid = pid
        ec.started.set()
        if ec.tty and ec.console_size and ec.exit_code is None:
            h, w = ec.console_size
            try:
                await self.cd.resize(c.id, w, h, exec_id=ec.id)
            except ApiError as e:      # it may have exited already
                log.info("exec %s: initial terminal size %dx%d: %s", ec.id, w, h, e)
        if ec._exit is not None:       # it exited before Start returned
            self._spawn(self._finish(ec, *ec._exit))

    async def _start_failed(self, ec: ExecInstance, c: Container, created: bool) -> None:
        ec.exit_code = EXIT_START_FAILED
        ec.running = False
        ec.started.set()
        if created:
            with contextlib.suppress(ApiError):
                await self.cd.delete_process(c.id, ec.id)
        await self._close_io(ec, wait=False)
        self._ended(ec, c)

    async def abandon(self, ec: ExecInstance, c: Container) -> None:
        """The client went away between ``begin_start`` and the launch: the instance was never
        started and can be started again."""
        ec.running = False
        await self._close_io(ec, wait=False)

    # -- resize ----------------------------------------------------------------------------------
    async def resize(self, exec_id: str, height: int, width: int) -> None:
        ec = self.get(exec_id)
        self.check_active(self._container_of(ec))
        if not ec.running and ec.exit_code is None:
            ec.console_size = [height, width]     # not started: given to the process at start
            return
        ec.console_size = [height, width]
        if not ec.started.is_set():
            try:
                await asyncio.wait_for(ec.started.wait(), START_WAIT)
            except TimeoutError:
                raise ApiError(f"exec {ec.id}: timeout waiting for exec session ready") from None
        if ec.exit_code is not None:
            raise Conflict(f"exec {ec.id}: the process has exited (exit code {ec.exit_code})")
        await self.cd.resize(ec.container_id, width, height, exec_id=ec.id)

    # -- exits -----------------------------------------------------------------------------------
    async def check_exit(self, ec: ExecInstance) -> None:
        """Ask containerd about a started instance whose exit event has not come (its output has
        ended): a stopped process is finished with its status. A process containerd no longer
        knows was killed with its container (the runtime SIGKILLs what is left when the init
        exits: 137) or, while the container runs, its exit was lost (255, logged)."""
        if ec.exit_code is not None or not ec.started.is_set():
            return
        try:
            t = await self.cd.get_task(ec.container_id, ec.id)
        except ApiError as e:
            log.warning("exec %s: asking containerd for its state: %s", ec.id, e)
            return
        if ec.exit_code is not None:
            return
        if t is not None and t.status == "stopped":
            self._spawn(self._finish(ec, t.exit_status, t.exited_at_ns))
        elif t is None:
            c = self.cs.store.by_id.get(ec.container_id)
            if c is not None and c.state.status in ("running", "paused"):
                log.error("exec %s of container %s: containerd no longer knows the process and its "
                          "exit was not reported: exit code recorded as 255", ec.id, ec.container_id)
                self._spawn(self._finish(ec, 255, 0))
            else:
                self._spawn(self._finish(ec, 137, 0))

    async def _on_exit(self, cid: str, exec_id: str, status: int, at: int) -> None:
        ec = self._execs.get(exec_id)
        if ec is None or ec.container_id != cid or ec.exit_code is not None:
            return
        if not ec.started.is_set():
            ec._exit = (status, at)    # launch finishes it once Start has returned
            return
        self._spawn(self._finish(ec, status, at))

    async def _finish(self, ec: ExecInstance, status: int, at: int) -> None:
        if ec.exit_code is not None:
            return
        ec.exit_code = status
        ec.running = False
        await self._close_io(ec, wait=True)
        with contextlib.suppress(NotFound):
            try:
                await self.cd.delete_process(ec.container_id, ec.id)
            except ApiError as e:
                if not isinstance(e, NotFound):
                    log.error("exec %s of container %s: delete its process: %s", ec.id, ec.container_id, e)
        c = self.cs.store.by_id.get(ec.container_id)
        if c is not None:
            self._ended(ec, c)
            self.cs.publish(c, "exec_die", execID=ec.id, exitCode=str(status))
        elif not ec.done.done():
            ec.done.set_result(status)

    async def _close_io(self, ec: ExecInstance, wait: bool) -> None:
        io, ec.io = ec.io, None
        if io is None:
            return
        if wait:
            try:
                await asyncio.wait_for(io.wait_closed(), OUTPUT_GRACE)
            except TimeoutError:
                log.debug("exec %s: output still open %ss after the exit (a child holds it): closed",
                          ec.id, OUTPUT_GRACE)
        try:
            await io.close()
            io.remove()
        except OSError as e:
            log.error("exec %s: closing its stdio: %s", ec.id, e)

    def _ended(self, ec: ExecInstance, c: Container) -> None:
        ec.ended_at = time.monotonic()
        with contextlib.suppress(ValueError):
            c.exec_ids.remove(ec.id)
        if not ec.done.done():
            ec.done.set_result(ec.exit_code if ec.exit_code is not None else -1)

    def _gc(self) -> None:
        """Drop exited instances older than KEEP_EXITED, and the oldest beyond MAX_EXITED, and
        those of removed containers."""
        now = time.monotonic()
        exited = []
        for eid, ec in list(self._execs.items()):
            if ec.running or (ec.exit_code is None and self.cs.store.by_id.get(ec.container_id) is not None):
                continue
            if ec.exit_code is None or now - ec.ended_at > KEEP_EXITED:
                del self._execs[eid]
            else:
                exited.append(ec)
        if len(exited) > MAX_EXITED:
            exited.sort(key=lambda e: e.ended_at)
            for ec in exited[:len(exited) - MAX_EXITED]:
                self._execs.pop(ec.id, None)

    def _spawn(self, coro: Any) -> None:
        t: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def shutdown(self) -> None:
        """Stop following the instances (their processes go on; skiffd restarting forgets them)."""
        for t in list(self._bg):
            t.cancel()
        await asyncio.gather(*self._bg, return_exceptions=True)
        for ec in self._execs.values():
            if ec.io is not None:
                with contextlib.suppress(Exception):
                    await ec.io.close()
            if not ec.done.done():
                ec.done.set_result(-1)
