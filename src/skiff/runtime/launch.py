"""Starting processes in containers: ``create`` (a new init) and ``exec`` (join a running one).

Process tree of ``create`` (no re-exec: the children are forks of the runtime itself, which is
why the runtime makes itself non-dumpable before touching the container's namespaces, so no
process in the container can open ``/proc/<runtime>/exe`` or its memory — the CVE-2019-5736
class of attack)::

    skiff-runc create (P)          the runtime; writes state.json and exits when the init is ready
      └─ child (C)                 joins namespaces by path, unshares the new ones, forks:
           └─ init (I)             PID 1 of the new pid namespace: rootfs, pivot_root, user,
                                   caps, then blocks opening the exec FIFO; ``start`` opens the
                                   other end and I execs the container's process

C is needed with a user namespace (the other namespaces must be created inside it, and the
runtime writes its id maps in between) and with a time namespace: ``unshare`` of a pid or time
namespace, and ``setns`` to one, only apply to the caller's children. Without those, P forks I
directly (``_fork_init``): P enters the pid namespace for that one fork and returns to its own
right after, and I unshares or joins the rest itself; that saves a fork and a process exit per
container. P, C and I talk over a ``sync.Channel``. ``exec`` follows the same shape as create
with C: C joins the container's namespaces (from ``/proc/<init>/ns``), I' execs the process.
"""

from __future__ import annotations

import os
import sys as _sys

from skiff.runtime.cli import RuntimeFailure, primer_pending, report, wait_primer
from skiff.runtime.state import EXEC_FIFO, ContainerState, container_dir, proc_start_time
from skiff.runtime.sync import Channel, SyncError, child_fail
from skiff.runtime.syscalls import (
    CLONE_NEWUSER,
    NAMESPACE_FLAGS,
    NAMESPACE_PROC_NAMES,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    LinuxSyscalls,
    Syscalls,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket

    from skiff.oci.spec import Config, Process
    from skiff.runtime.cli import Context


def _preload_child_modules() -> None:
    """Import what the forked children run after entering the container's mount namespace:
    past pivot_root (or setns into the container's mount namespace) the host's Python library
    is out of reach. Called in the child, before any namespace change, so that the imports
    overlap with the runtime's cgroup work instead of delaying the fork."""
    import resource  # noqa: F401  (LinuxSyscalls' own imports)

    import skiff.runtime.caps
    import skiff.runtime.clib
    import skiff.runtime.hooks
    import skiff.runtime.process
    import skiff.runtime.rootfs  # noqa: F401


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return str(e) or type(e).__name__


def _now_rfc3339() -> str:
    import time

    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def load_bundle_config(bundle: str) -> Config:
    from skiff.oci.spec import SpecError, load_config

    try:
        config = load_config(bundle)
    except SpecError as e:
        raise RuntimeFailure(f"invalid configuration in bundle {bundle}: {e}") from None
    try:
        from skiff.oci.validate import SchemaError, validate_config
    except ImportError:  # pragma: no cover - the validator ships with the package
        return config
    try:
        validate_config(config.raw)
    except SchemaError as e:
        raise RuntimeFailure(f"invalid configuration in bundle {bundle}: {e}") from None
    return config


def _flush() -> None:
    for f in (_sys.stdout, _sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass


def _write_pid_file(path: str, pid: int) -> None:
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def _write_id_maps(pid: int, config: Config) -> None:
    lx = config.linux
    for kind, maps in (("uid", lx.uid_mappings), ("gid", lx.gid_mappings)):
        if not maps:
            raise RuntimeFailure(f"linux.{kind}Mappings: a new user namespace needs {kind} mappings")
        data = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)
        try:
            with open(f"/proc/{pid}/{kind}_map", "w") as f:
                f.write(data)
        except OSError as e:
            raise RuntimeFailure(f"linux.{kind}Mappings: write /proc/{pid}/{kind}_map: {e.strerror}") from None


def _compile_seccomp(config: Config, state_root: str):
    """The container's seccomp program, compiled once per distinct profile and cached under the
    runtime's state root (see seccomp.compile_cached)."""
    if config.linux.seccomp is None:
        return None
    from skiff.runtime import seccomp

    try:
        return seccomp.compile_cached(config.linux.seccomp, os.path.join(state_root, ".seccomp"))
    except seccomp.SeccompError as e:
        raise RuntimeFailure(str(e)) from None


def _kill_and_reap(pid: int, own_child: bool) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    if own_child:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


class OwnConsole:
    """The pty of a foreground ``run``/``exec`` with a terminal and no ``--console-socket``: the
    container process sends the master over a socketpair instead of a console socket, and the
    runtime proxies it to its own stdin/stdout (``console.proxy``) while it waits."""

    __slots__ = ("master", "_ours", "_theirs")

    def __init__(self) -> None:
        self.master = -1
        self._ours: _socket.socket | None = None
        self._theirs: _socket.socket | None = None

    def open(self) -> _socket.socket:
        """Make the socketpair; return the container process's end."""
        from skiff.runtime import console

        self._ours, self._theirs = console.socketpair()
        return self._theirs

    def in_child(self) -> None:
        """In the forked child: the runtime's end is not the child's business."""
        if self._ours is not None:
            self._ours.close()
            self._ours = None

    def forked(self) -> None:
        """In the runtime after the fork: only the child needs its end now."""
        if self._theirs is not None:
            self._theirs.close()
            self._theirs = None

    def receive(self) -> None:
        """Take the master the container process sent (it did, before reporting success)."""
        from skiff.runtime import console

        assert self._ours is not None
        try:
            self.master = console.receive_master(self._ours)
        except OSError as e:
            raise RuntimeFailure(f"receive the pty master from the container process: {_describe(e)}") from None
        finally:
            self._ours.close()
            self._ours = None

    def close(self) -> None:
        for s in (self._ours, self._theirs):
            if s is not None:
                s.close()
        self._ours = self._theirs = None
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


# --- create ---------------------------------------------------------------------------------

def create(ctx: Context, cid: str, bundle: str, *, pid_file: str = "", console_socket: str = "",
           no_pivot: bool = False, preserve_fds: int = 0, subreaper: bool = False,
           own_console: OwnConsole | None = None) -> ContainerState:
    """Set the container up and leave its init blocked on the exec FIFO.

    With a terminal and no ``console_socket``, ``own_console`` (a foreground ``run``) receives
    the pty's master; without it that combination is refused, as runc refuses it."""
    from skiff.runtime.cgroups import CgroupError, open_manager, with_default_devices
    from skiff.runtime.cgroups import preload as cgroups_preload

    bundle = os.path.abspath(bundle)
    config = load_bundle_config(bundle)
    proc = config.process
    if proc is None:
        raise RuntimeFailure(f"invalid configuration in bundle {bundle}: process: no process to run")
    if proc.terminal and not console_socket and own_console is None:
        raise RuntimeFailure("cannot allocate tty if skiff-runc will detach without setting console socket")
    if proc.terminal:
        from skiff.runtime import console  # noqa: F401  (imported before the fork, see above)
    if not (proc.terminal and not console_socket):
        own_console = None
    if not proc.terminal and console_socket:
        raise RuntimeFailure("cannot use console socket if skiff-runc will not detach or allocate tty")
    lx = config.linux
    # No mount namespace is allowed (the spec: an absent namespace is inherited from the
    # runtime): the mounts are then made in the runtime's namespace and the init chroots
    # (rootfs.py); delete unmounts them. A hostname needs a UTS namespace of the container,
    # new or joined by path (it is set in the joined one, as runc does).
    if config.hostname and lx.namespace("uts") is None:
        raise RuntimeFailure("hostname: unable to set hostname without a private UTS namespace")
    seccomp_filter = _compile_seccomp(config, ctx.root)
    try:
        cg = open_manager(lx.cgroups_path, cid, systemd=ctx.systemd_cgroup)
    except CgroupError as e:
        raise RuntimeFailure(f"linux.cgroupsPath: {e}") from None
    shared_mnt = lx.namespace("mount") is None
    if shared_mnt:
        from skiff.runtime import rootfs as _rootfs
    pre_mount = _rootfs.rootfs_mount_id(config) if shared_mnt else 0

    # Without a user or time namespace the runtime forks the init itself (``_fork_init``);
    # otherwise through an intermediate child (``_create_child``), see the module's docstring.
    direct = lx.namespace("user") is None and lx.namespace("time") is None

    cdir = container_dir(ctx.root, cid)
    os.makedirs(ctx.root, 0o711, exist_ok=True)
    try:
        os.mkdir(cdir, 0o711)
    except FileExistsError:
        raise RuntimeFailure(f"container with id exists: {cid}") from None
    st = ContainerState(cid, cdir)
    st.bundle = bundle
    st.rootfs = config.root_path
    st.created = _now_rfc3339()
    st.owner = "root" if os.geteuid() == 0 else str(os.geteuid())
    st.annotations = config.annotations
    raw = dict(config.raw)
    raw["root"] = dict(raw.get("root") or {}, path=config.root_path)
    st.config = raw
    st.no_pivot = no_pivot
    child = ipid = 0
    created_cgroup = False
    try:
        os.mkfifo(st.fifo, 0o622)
        os.chmod(st.fifo, 0o622)  # not narrowed by the umask: the init may run as any user
        # The init reaches the FIFO through this directory fd (openat): after pivot_root the
        # host path is gone, and /proc/self/fd is closed to a non-dumpable process that has
        # dropped to a non-root user.
        state_dirfd = os.open(cdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        parent_chan, child_chan = Channel.pair()
        if subreaper:
            LinuxSyscalls().prctl(PR_SET_CHILD_SUBREAPER, 1)
        console_arg: str | _socket.socket = own_console.open() if own_console else console_socket
        _flush()
        # Fork first: the child imports and unshares its namespaces (see _create_child and
        # _direct_init) while the runtime makes the cgroup, whose mkdirs wait for the kernel's
        # cgroup lock as long as the primer's write (cli.py) waits for its grace period.
        if direct:
            ipid = _fork_init(config, bundle, parent_chan, child_chan, state_dirfd, console_arg,
                              no_pivot, seccomp_filter, preserve_fds, own_console)
        else:
            child = os.fork()
            if child == 0:
                parent_chan.close()
                if own_console is not None:
                    own_console.in_child()
                _create_child(config, bundle, child_chan, state_dirfd, console_arg, no_pivot,
                              seccomp_filter, preserve_fds)
        child_chan.close()
        if own_console is not None:
            own_console.forked()
        os.close(state_dirfd)
        if primer_pending():
            cgroups_preload()  # what set() imports, while the mkdirs would wait anyway
        cg.create()
        created_cgroup = True
        wait_primer()
        # The child joins the cgroup first (as runc: apply, then set), as soon after the
        # primer's write as possible; the resources, device rules included, are in place before
        # "go", i.e. before the child can mknod anything or run the container's code.
        cg.add(ipid or child)
        cg.set(with_default_devices(lx.resources, lx.devices))
        st.cgroup = cg.state()
        parent_chan.send("go")
        if not direct:
            if lx.namespace("user") is not None and not lx.namespace("user").path:  # type: ignore[union-attr]
                parent_chan.expect("userns")
                _write_id_maps(child, config)
                parent_chan.send("userns-done")
            ipid = parent_chan.expect("pid")["pid"]
            os.waitpid(child, 0)
            child = 0
        start = proc_start_time(ipid)
        if start is None:
            raise SyncError("the container's init exited during set-up")
        st.pid, st.pid_start = ipid, start[0]
        # "created": the spec's lifecycle runs these hooks after step 2, the creation of the
        # environment (crun and runtime-tools' hooks_stdin agree; runc says "creating")
        runtime_hooks = [k for k in ("prestart", "createRuntime") if k in config.hooks]
        if not runtime_hooks:
            # nothing to run between the init's mounts and the rest of its set-up: answer now,
            # so that the init does not wait for a round trip (the socket keeps the message)
            try:
                parent_chan.send("hooks-done", state=st.oci_state("created"))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the init failed already: expect() below reports its error
        parent_chan.expect("mounted")
        if runtime_hooks:
            from skiff.runtime.hooks import run_hooks

            hook_state = st.oci_state("created")
            for kind in runtime_hooks:
                run_hooks(config.hooks[kind], hook_state, kind)
            parent_chan.send("hooks-done", state=st.oci_state("created"))
        parent_chan.expect("ready")
        parent_chan.close()
        if shared_mnt:
            st.rootfs_mount = _rootfs.rootfs_mount_id(config)
        if own_console is not None:
            own_console.receive()
        st.save()
        if pid_file:
            _write_pid_file(pid_file, ipid)
        return st
    except BaseException as e:
        if own_console is not None:
            own_console.close()
        if child:
            _kill_and_reap(child, True)
        if ipid:
            _kill_and_reap(ipid, subreaper or direct)  # a direct init is our own child
        if created_cgroup:
            try:
                # an init whose pid never reached us (or its children) would keep the cgroup busy
                cg.kill_all(9)
            except Exception as ce:
                report("error", f"cleaning up the processes of {cid}: {ce}")
            try:
                cg.destroy()
            except Exception as ce:  # report, but the original error is the one that matters
                report("error", f"cleaning up the cgroup of {cid}: {ce}")
        if shared_mnt:
            try:
                top = _rootfs.rootfs_mount_id(config)
                if top != pre_mount:  # the init's rootfs bind, with its mounts below
                    _rootfs.release_rootfs(LinuxSyscalls(), config.root_path, top)
            except Exception as me:
                report("error", f"cleaning up the mounts of {cid}: {me}")
        from skiff.runtime.destroy import remove_state_dir

        try:
            remove_state_dir(cdir)
        except OSError as re_:
            report("error", f"cleaning up {cdir}: {re_}")
        if isinstance(e, (RuntimeFailure, KeyboardInterrupt)):
            raise
        if isinstance(e, CgroupError):
            raise RuntimeFailure(f"container {cid}: cgroups: {e}") from None
        raise RuntimeFailure(f"container {cid}: {_describe(e)}") from None


def _join_and_unshare(sys: Syscalls, chan: Channel, namespaces: list[tuple[str, str]],
                      new: list[str], config: Config | None) -> None:
    """Join the namespaces given by path (user first, mount last), then unshare the new ones."""
    fds = []
    for t, path in namespaces:
        try:
            fds.append((t, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
        except OSError as e:
            raise OSError(e.errno, f"open {t} namespace {path}: {e.strerror}") from None
    fds.sort(key=lambda x: 0 if x[0] == "user" else 2 if x[0] == "mount" else 1)
    for t, fd in fds:
        try:
            sys.setns(fd, NAMESPACE_FLAGS[t])
        except OSError as e:
            raise OSError(e.errno, f"join {t} namespace: {e.strerror}") from None
        os.close(fd)
    if "user" in new:
        sys.unshare(CLONE_NEWUSER)
        chan.send("userns")
        chan.expect("userns-done")
        if config is not None:
            if any(m.container_id == 0 for m in config.linux.gid_mappings):
                sys.setresgid(0)
            if any(m.container_id == 0 for m in config.linux.uid_mappings):
                sys.setresuid(0)
    flags = 0
    for t in new:
        if t != "user":
            flags |= NAMESPACE_FLAGS[t]
    if flags:
        sys.unshare(flags)


def _create_child(config: Config, bundle: str, chan: Channel, state_dirfd: int,
                  console_socket: str | _socket.socket,
                  no_pivot: bool, seccomp_filter: object, preserve_fds: int) -> None:
    """C: never returns.

    Until the runtime says "go" (it is writing C's cgroup meanwhile), C imports what the init
    needs and, without a user namespace, joins the namespaces given by path and unshares the
    new ones but the cgroup namespace, whose root is the cgroup C is in when it unshares: that
    one waits for "go". With a user namespace everything waits for "go", as the runtime writes
    the id maps in between. An error of the early part is reported after "go", so that the
    runtime, busy with the cgroup, sees the child's error and not a vanished child.

    A trade-off, unlike runc (which joins the cgroup first): the kernel memory of the new
    namespaces is charged to the runtime's cgroup, not the container's; it is small (a network
    namespace is tens of KiB) and freed with the container. The gain is the ~4 ms of the
    cgroup write that C's work now overlaps (bench/README.md)."""
    try:
        sys = LinuxSyscalls()
        sys.prctl(PR_SET_DUMPABLE, 0)
        _preload_child_modules()
        lx = config.linux
        joined = [(ns.type, ns.path) for ns in lx.namespaces if ns.path]
        new = [ns.type for ns in lx.namespaces if not ns.path]
        if "user" not in new and all(t != "user" for t, _ in joined):
            _namespaces_around_go(sys, chan, joined, new, config)
        else:
            chan.expect("go")
            _join_and_unshare(sys, chan, joined, new, config)
            _set_up_new_namespaces(sys, config, new)
        # The init waits for end-of-file on this pipe, i.e. for C to have sent "pid" and
        # exited: otherwise its "mounted" could overtake "pid" on the shared channel.
        gate_r, gate_w = os.pipe()
        ipid = os.fork()
        if ipid:
            chan.send("pid", pid=ipid)
            os._exit(0)
        os.close(gate_w)
        while os.read(gate_r, 1):
            pass
        os.close(gate_r)
        _init(sys, config, bundle, chan, state_dirfd, console_socket, no_pivot, seccomp_filter,
              preserve_fds)
    except BaseException as e:
        child_fail(chan, _describe(e))


def _fork_init(config: Config, bundle: str, parent_chan: Channel, child_chan: Channel,
               state_dirfd: int, console_socket: str | _socket.socket, no_pivot: bool,
               seccomp_filter: object, preserve_fds: int, own_console: OwnConsole | None) -> int:
    """Fork the container's init directly (no user or time namespace); return its pid.

    A new or joined pid namespace applies only to the children of the process that unshares
    or joins it, so the runtime enters it for this one fork (``pid_ns_for_children``; its own
    pid namespace does not change) and goes back to its own right after: a later fork of the
    runtime (hooks) stays in the host's. The init unshares or joins the other namespaces
    itself (``_direct_init``), as the intermediate child does on the other path."""
    pidns = config.linux.namespace("pid")
    sys = LinuxSyscalls()
    own = -1
    if pidns is not None:
        own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if pidns.path:
                try:
                    fd = os.open(pidns.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise OSError(e.errno, f"open pid namespace {pidns.path}: {e.strerror}") from None
                try:
                    sys.setns(fd, NAMESPACE_FLAGS["pid"])
                except OSError as e:
                    raise OSError(e.errno, f"join pid namespace: {e.strerror}") from None
                finally:
                    os.close(fd)
            else:
                sys.unshare(NAMESPACE_FLAGS["pid"])
        except BaseException:
            os.close(own)
            raise
    try:
        pid = os.fork()
    except BaseException:
        if own >= 0:
            _leave_pid_namespace(sys, own)
        raise
    if pid == 0:
        try:
            if own >= 0:
                os.close(own)
            parent_chan.close()
            if own_console is not None:
                own_console.in_child()
            _direct_init(config, bundle, child_chan, state_dirfd, console_socket, no_pivot,
                         seccomp_filter, preserve_fds)
        finally:
            os._exit(1)  # _direct_init never returns; nothing of the runtime may go on here
    if own >= 0:
        try:
            _leave_pid_namespace(sys, own)
        except BaseException:
            _kill_and_reap(pid, True)
            raise
    return pid


def _leave_pid_namespace(sys: Syscalls, own: int) -> None:
    """Make the runtime's next children again members of its own pid namespace (``own``: an
    fd of it, closed here)."""
    try:
        sys.setns(own, NAMESPACE_FLAGS["pid"])
    except OSError as e:
        raise OSError(e.errno, f"return to the runtime's own pid namespace: {e.strerror}") from None
    finally:
        os.close(own)


def _direct_init(config: Config, bundle: str, chan: Channel, state_dirfd: int,
                 console_socket: str | _socket.socket, no_pivot: bool, seccomp_filter: object,
                 preserve_fds: int) -> None:
    """The init forked by ``_fork_init``: never returns. Until the runtime says "go" (it puts
    the init in its cgroup meanwhile) it imports, joins the namespaces given by path and
    unshares the new ones but the cgroup namespace, as ``_create_child`` does without a user
    namespace; then it goes on as the init."""
    try:
        sys = LinuxSyscalls()
        sys.prctl(PR_SET_DUMPABLE, 0)
        _preload_child_modules()
        lx = config.linux
        joined = [(ns.type, ns.path) for ns in lx.namespaces if ns.path and ns.type != "pid"]
        new = [ns.type for ns in lx.namespaces if not ns.path and ns.type != "pid"]
        _namespaces_around_go(sys, chan, joined, new, config)
        _init(sys, config, bundle, chan, state_dirfd, console_socket, no_pivot, seccomp_filter,
              preserve_fds)
    except BaseException as e:
        child_fail(chan, _describe(e))


def _namespaces_around_go(sys: Syscalls, chan: Channel, joined: list[tuple[str, str]], new: list[str],
                          config: Config) -> None:
    """Without a user namespace: join and unshare everything but the cgroup namespace while the
    runtime puts the process in its cgroup, wait for its "go", then unshare the cgroup
    namespace (rooted at that cgroup). An error meanwhile is raised after the "go", so that the
    runtime is not left waiting for a message the process would never read."""
    early_error: BaseException | None = None
    try:
        _join_and_unshare(sys, chan, joined, [t for t in new if t != "cgroup"], config)
        _set_up_new_namespaces(sys, config, new)
    except Exception as e:
        early_error = e
    chan.expect("go")
    if early_error is not None:
        raise early_error
    if "cgroup" in new:
        _join_and_unshare(sys, chan, [], ["cgroup"], config)


def _set_up_new_namespaces(sys: Syscalls, config: Config, new: list[str]) -> None:
    lx = config.linux
    if "network" in new:
        sys.set_link_up("lo")  # as runc: a new network namespace gets its loopback up
    if "time" in new and lx.time_offsets:
        with open("/proc/self/timens_offsets", "w") as f:
            for clock, off in lx.time_offsets.items():
                f.write(f"{clock} {off.get('secs', 0)} {off.get('nanosecs', 0)}\n")


def _console_size(proc: Process, console_socket: str | _socket.socket) -> tuple[int, int]:
    """The pty's initial size. With the runtime's own console (a socket, not a path), the size
    of the runtime's stdin when it is a terminal: ``console.proxy`` copies it to the pty too,
    but only once the process runs, which a quick ``stty size`` could otherwise beat."""
    if not isinstance(console_socket, str):
        import fcntl
        import struct
        import termios

        try:
            rows, cols = struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        except OSError:
            pass  # stdin is no terminal
        else:
            if rows or cols:
                return rows, cols
    return proc.console_height, proc.console_width


def _write_sysctls(config: Config) -> None:
    for key, value in config.linux.sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            raise OSError(e.errno, f"linux.sysctl {key}: write {path}: {e.strerror}") from None


def _personality(sys: Syscalls, config: Config) -> None:
    p = config.linux.personality
    if not p:
        return
    domain = p.get("domain")
    value = {"LINUX": 0x0000, "LINUX32": 0x0008}.get(domain or "")
    if value is None:
        raise RuntimeFailure(f"linux.personality.domain: unsupported domain {domain!r}")
    if p.get("flags"):
        raise RuntimeFailure("linux.personality.flags: personality flags are not supported")
    sys.personality(value)


def _init(sys: Syscalls, config: Config, bundle: str, chan: Channel, state_dirfd: int,
          console_socket: str | _socket.socket, no_pivot: bool, seccomp_filter: object,
          preserve_fds: int) -> None:
    """I: the container's init, up to execve. Never returns. ``console_socket``: a path to
    connect to, or an already connected socket (the runtime's own console)."""
    from skiff.runtime import caps as _caps
    from skiff.runtime import hooks as _hooks
    from skiff.runtime import process as procmod
    from skiff.runtime import rootfs

    proc = config.process
    assert proc is not None
    procmod.close_inherited_fds(2 + preserve_fds)
    csock = None
    if proc.terminal:
        from skiff.runtime import console

        csock = console.connect(console_socket) if isinstance(console_socket, str) else console_socket
    mount_ns = config.linux.namespace("mount") is not None
    rootfs.prepare_rootfs(sys, config, no_pivot=no_pivot, bundle=bundle, mount_ns=mount_ns)
    chan.send("mounted")
    state = chan.expect("hooks-done")["state"]
    run_hooks = _hooks.run_hooks
    if "createContainer" in config.hooks:
        run_hooks(config.hooks["createContainer"], state, "createContainer")
    rootfs.enter_rootfs(sys, config, no_pivot=no_pivot, mount_ns=mount_ns)
    _write_sysctls(config)
    rootfs.finish_rootfs(sys, config)
    if config.hostname:
        sys.sethostname(config.hostname)
    if config.domainname:
        sys.setdomainname(config.domainname)
    _personality(sys, config)
    if csock is not None:
        from skiff.runtime import console

        console.setup_console(sys, csock, *_console_size(proc, console_socket), bind_console=True)
    exe = procmod.prepare(sys, proc, seccomp_filter=seccomp_filter, caps_last=_caps.last_cap())
    env = procmod.env_dict(proc.env)
    chan.send("ready")
    chan.close()
    try:
        # blocks until `start` opens the FIFO for reading
        fd = os.open(EXEC_FIFO, os.O_WRONLY | os.O_CLOEXEC, dir_fd=state_dirfd)
        os.write(fd, b"0")
        # fd stays open: execve closes it (close-on-exec), and `start` waits for that
        # end-of-file before it runs the poststart hooks ("after the process is executed")
        os.close(state_dirfd)
        if "startContainer" in config.hooks:
            state["status"] = "running"
            run_hooks(config.hooks["startContainer"], state, "startContainer")
        if seccomp_filter is not None and proc.no_new_privileges:
            seccomp_filter.load()  # type: ignore[attr-defined]
        os.execve(exe, proc.args, env)
    except BaseException as e:
        os.write(2, f"skiff-runc: container init: {_describe(e)}\n".encode())
    os._exit(127)


# --- exec -----------------------------------------------------------------------------------

def exec_process(ctx: Context, st: ContainerState, proc: Process, *, detach: bool, pid_file: str,
                 console_socket: str, preserve_fds: int = 0, own_console: bool = False) -> int:
    """Run ``proc`` in the running container; return its exit status (0 when detached).

    ``own_console`` (a foreground ``exec -t`` without ``console_socket``): the runtime keeps the
    pty's master and proxies it to its own stdin/stdout until the process exits."""
    from skiff.oci.spec import parse_config
    from skiff.runtime.cgroups import load_manager

    status = st.status()
    if status != "running":
        if status == "created":
            pass  # runc allows exec into a created container
        else:
            raise RuntimeFailure(f"cannot exec in a {status} container")
    if proc.terminal and not console_socket and (detach or not own_console):
        raise RuntimeFailure("cannot allocate tty if skiff-runc will detach without setting console socket")
    if console_socket and not (detach and proc.terminal):
        raise RuntimeFailure("cannot use console socket if skiff-runc will not detach or allocate tty")
    if proc.terminal:
        from skiff.runtime import console  # noqa: F401  (imported before the fork)
    own = OwnConsole() if proc.terminal and not console_socket else None
    config = parse_config(st.config)
    seccomp_filter = _compile_seccomp(config, ctx.root)
    namespaces = []
    for ns in config.linux.namespaces:
        path = f"/proc/{st.pid}/ns/{NAMESPACE_PROC_NAMES[ns.type]}"
        try:
            if os.stat(path).st_ino == os.stat(f"/proc/self/ns/{NAMESPACE_PROC_NAMES[ns.type]}").st_ino:
                continue
        except FileNotFoundError:
            raise RuntimeFailure(f"container {st.id}: its init is gone ({path} missing)") from None
        namespaces.append((ns.type, path))
    cg = load_manager(st.cgroup) if st.cgroup else None
    sys = LinuxSyscalls()
    if not detach:
        sys.prctl(PR_SET_CHILD_SUBREAPER, 1)
    parent_chan, child_chan = Channel.pair()
    console_arg: str | _socket.socket = own.open() if own is not None else console_socket
    _flush()
    wait_primer()
    child = os.fork()
    if child == 0:
        parent_chan.close()
        if own is not None:
            own.in_child()
        # without a mount namespace of its own the container's root is its init's chroot
        _exec_child(sys, proc, config, child_chan, namespaces, console_arg, seccomp_filter,
                    preserve_fds, chroot_pid=st.pid if config.linux.namespace("mount") is None else 0)
    child_chan.close()
    if own is not None:
        own.forked()
    ipid = 0
    try:
        if cg is not None:
            cg.add(child)
        parent_chan.send("go")
        ipid = parent_chan.expect("pid")["pid"]
        os.waitpid(child, 0)
        child = 0
        msg = parent_chan.recv()  # EOF: the process exec'd
        if msg is not None:
            if msg.get("type") == "error":
                raise SyncError(msg.get("message", "unknown error"))
            raise SyncError(f"unexpected message {msg.get('type')!r} from the exec'd process")
        if own is not None:
            own.receive()
        if pid_file:
            _write_pid_file(pid_file, ipid)
    except BaseException as e:
        if own is not None:
            own.close()
        if child:
            _kill_and_reap(child, True)
        if ipid:
            _kill_and_reap(ipid, not detach)
        if isinstance(e, (RuntimeFailure, KeyboardInterrupt)):
            raise
        raise RuntimeFailure(f"exec failed: {_describe(e)}") from None
    finally:
        parent_chan.close()
    if detach:
        return 0
    try:
        return wait_forwarding_signals(ipid, own)
    finally:
        if own is not None:
            own.close()


def _exec_child(sys: Syscalls, proc: Process, config: Config, chan: Channel,
                namespaces: list[tuple[str, str]], console_socket: str | _socket.socket,
                seccomp_filter: object, preserve_fds: int, chroot_pid: int = 0) -> None:
    try:
        sys.prctl(PR_SET_DUMPABLE, 0)
        _preload_child_modules()  # before joining the container's mount namespace
        from skiff.runtime import caps as _caps
        from skiff.runtime import process as procmod

        chan.expect("go")
        csock = None
        if proc.terminal:
            from skiff.runtime import console

            csock = console.connect(console_socket) if isinstance(console_socket, str) else console_socket
        _join_and_unshare(sys, chan, namespaces, [], None)
        ipid = os.fork()
        if ipid:
            chan.send("pid", pid=ipid)
            os._exit(0)
        procmod.close_inherited_fds(2 + preserve_fds)
        if chroot_pid:
            root = f"/proc/{chroot_pid}/root"
            try:
                sys.chdir(root)
                sys.chroot(".")
            except OSError as e:
                raise OSError(e.errno, f"chroot into the container's root {root}: {e.strerror}") from None
        if csock is not None:
            from skiff.runtime import console

            console.setup_console(sys, csock, *_console_size(proc, console_socket), bind_console=False)
        exe = procmod.prepare(sys, proc, seccomp_filter=seccomp_filter, caps_last=_caps.last_cap())
        if seccomp_filter is not None and proc.no_new_privileges:
            seccomp_filter.load()  # type: ignore[attr-defined]
        os.execve(exe, proc.args, procmod.env_dict(proc.env))
    except BaseException as e:
        child_fail(chan, _describe(e))


# --- waiting ----------------------------------------------------------------------------------

FORWARDED_SIGNALS = (1, 2, 3, 10, 12, 15, 28)  # HUP INT QUIT USR1 USR2 TERM WINCH


def wait_forwarding_signals(pid: int, own_console: OwnConsole | None = None) -> int:
    """Wait for ``pid`` (our child through the subreaper bit), forwarding signals to it; reap any
    orphans re-parented to us meanwhile. Returns an exit status in the shell's convention.
    With ``own_console``, proxy its pty to our stdin/stdout meanwhile (SIGWINCH then resizes
    the pty instead of being forwarded)."""
    import _signal

    if own_console is not None and own_console.master >= 0:
        from skiff.runtime import console

        return console.proxy(own_console.master, pid, tuple(s for s in FORWARDED_SIGNALS if s != 28))

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for s in FORWARDED_SIGNALS:
        _signal.signal(s, forward)
    while True:
        try:
            wpid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        except InterruptedError:
            continue
        if wpid == pid:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code
