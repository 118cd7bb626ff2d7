"""The last steps before ``execve``, shared by a container's init and by ``exec``.

Order matters and follows the kernel's rules:
  rlimits, oom_score_adj, personality, umask   (still fully privileged)
  seccomp, when noNewPrivileges is off          (loading a filter then needs CAP_SYS_ADMIN)
  bounding set, then setgroups/setresgid/setresuid with KEEPCAPS, then capset and ambient caps
  no_new_privs, chdir(cwd)
  ... the caller waits for ``start`` here (init) ...
  seccomp, when noNewPrivileges is on           (as close to execve as possible)
  execve
"""

from __future__ import annotations

import os

from skiff.runtime.syscalls import PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS, Syscalls

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.oci.spec import Process

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
RLIM_INFINITY = (1 << 64) - 1


class ProcessSetupError(Exception):
    pass


def _not_executable(file: str) -> str:
    """Why ``file`` is no executable by its mode (Go 1.19's ``exec.findExecutable``, which runc
    1.1 uses), or "": a directory, or a file without any execute bit, is "permission denied"."""
    try:
        st = os.stat(file)
    except OSError as e:
        return f"stat {file}: {(e.strerror or str(e)).lower()}"
    if (st.st_mode & 0o170000) != 0o040000 and st.st_mode & 0o111:
        return ""
    return "permission denied"


def find_executable(name: str, env: list[str]) -> str:
    """Resolve ``args[0]`` like runc 1.1 before ``create`` returns, with the container's PATH,
    inside the current root, as the process's user: Go's ``exec.LookPath`` (mode bits), then
    ``access(X_OK)`` (no permission for this user, a noexec mount).
    The messages are runc's: the CLI maps "not found"/"no such file" to 127, "permission
    denied" to 126."""
    if "/" in name:
        why = _not_executable(name)
        if why:
            raise ProcessSetupError(f'exec: "{name}": {why}')
        found = name
    else:
        path = ""
        for e in env:
            if e.startswith("PATH="):
                path = e[5:]
        if not path:
            path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for d in path.split(":"):
            cand = os.path.join(d or ".", name)
            if not _not_executable(cand):
                found = cand
                break
        else:
            raise ProcessSetupError(f'exec: "{name}": executable file not found in $PATH')
    # runc asks faccessat2(AT_EACCESS) and falls back to access(2) when a seccomp filter refuses
    # faccessat2 (EPERM) or the kernel lacks it; here the real and effective ids are the same
    # (set_user ran), so access(2), which filters allow, gives the same answer
    if not os.access(found, os.X_OK):
        raise ProcessSetupError(f"exec {found}: permission denied")
    return found


def apply_rlimits(sys: Syscalls, proc: Process) -> None:
    for r in proc.rlimits:
        soft = min(r.soft, RLIM_INFINITY)
        hard = min(r.hard, RLIM_INFINITY)
        if soft > hard:
            raise ProcessSetupError(f"process.rlimits {r.type}: soft limit {r.soft} is above hard limit {r.hard}")
        # the resource module wants -1 for infinity
        try:
            sys.setrlimit(RLIMITS[r.type], -1 if soft == RLIM_INFINITY else soft,
                          -1 if hard == RLIM_INFINITY else hard)
        except (OSError, ValueError) as e:
            why = getattr(e, "strerror", None) or str(e)
            raise ProcessSetupError(
                f"process.rlimits {r.type}: cannot set soft {r.soft} hard {r.hard}: {why}"
                " (raising a hard limit needs CAP_SYS_RESOURCE)") from None


def write_oom_score_adj(value: int | None, proc_dir: str = "/proc/self") -> None:
    if value is None:
        return
    try:
        with open(f"{proc_dir}/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as e:
        raise ProcessSetupError(f"process.oomScoreAdj: write {proc_dir}/oom_score_adj: {e.strerror}") from None


def set_user(sys: Syscalls, proc: Process, caps_last: int) -> None:
    """Drop the bounding set, switch uid/gid keeping capabilities, then set the capability sets.

    An absent ``process.capabilities`` means no capabilities at all (as runc does)."""
    from skiff.runtime import caps as capsmod

    c = capsmod.configured(proc.capabilities)
    capsmod.drop_bounding(sys, capsmod.parse(c.bounding, "process.capabilities.bounding", caps_last),
                          caps_last)
    u = proc.user
    sys.setgroups(u.additional_gids)
    sys.prctl(PR_SET_KEEPCAPS, 1)
    sys.setresgid(u.gid)
    sys.setresuid(u.uid)
    sys.prctl(PR_SET_KEEPCAPS, 0)
    capsmod.apply(sys, c, caps_last)


def prepare(sys: Syscalls, proc: Process, *, seccomp_filter: object | None, caps_last: int) -> str:
    """Everything up to (not including) the late seccomp load and execve.

    Returns the resolved executable path. Raises ProcessSetupError/OSError with a message that
    names the failing part of the process spec.
    """
    if not any(e.startswith("HOME=") for e in proc.env):
        # As runc: a process without HOME gets the home of its uid in the container's
        # /etc/passwd, or "/" (dockerd leaves HOME to the runtime). Read while still root.
        proc.env = [*proc.env, f"HOME={home_dir(proc.user.uid)}"]
    apply_rlimits(sys, proc)
    write_oom_score_adj(proc.oom_score_adj)
    if proc.user.umask is not None:
        sys.umask(proc.user.umask)
    else:
        sys.umask(0o022)
    if seccomp_filter is not None and not proc.no_new_privileges:
        seccomp_filter.load()  # type: ignore[attr-defined]
    set_user(sys, proc, caps_last)
    if proc.no_new_privileges:
        sys.prctl(PR_SET_NO_NEW_PRIVS, 1)
    try:
        sys.chdir(proc.cwd)
    except OSError as e:
        raise ProcessSetupError(f"process.cwd: chdir to {proc.cwd}: {e.strerror}") from None
    return find_executable(proc.args[0], proc.env)


def home_dir(uid: int, passwd: str = "/etc/passwd") -> str:
    """The home directory of the first ``passwd`` entry for ``uid``; ``/`` when there is none
    (or no passwd file)."""
    try:
        with open(passwd, "rb") as f:
            data = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return "/"
    except OSError as e:
        raise ProcessSetupError(f"process.env: HOME for uid {uid}: read {passwd}: {e.strerror}") from None
    want = str(uid).encode()
    for line in data.split(b"\n"):
        fields = line.split(b":")
        if len(fields) >= 6 and fields[2].strip() == want:
            return fields[5].decode(errors="surrogateescape")
    return "/"


def env_dict(env: list[str]) -> dict[str, str]:
    out = {}
    for e in env:
        k, _, v = e.partition("=")
        out[k] = v
    return out


def close_inherited_fds(keep_upto: int) -> None:
    """Mark every fd above ``keep_upto`` close-on-exec, so nothing of the caller leaks in."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > keep_upto:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the fd of the listdir itself, closed by now
