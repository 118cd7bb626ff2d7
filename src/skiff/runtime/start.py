"""``start``: release a created container's init by opening the other end of its exec FIFO.

Kept apart from ``launch`` so that ``skiff-runc start`` imports only what it needs.
"""

from __future__ import annotations

import os

from skiff.runtime.cli import RuntimeFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.oci.spec import Config
    from skiff.runtime.state import ContainerState


def wait_exec(fd: int, poller: object = None) -> None:
    """Read the exec FIFO (non-blocking ``fd``) until end-of-file.

    The init keeps its write end open, close-on-exec, from the byte it writes until its
    ``execve``: end-of-file means the container's process has been executed (or the init died,
    which closes it too). ``poller``: a ``select.poll`` with ``fd`` registered (made if None).
    """
    if poller is None:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLIN)
    while True:
        poller.poll(100)  # type: ignore[attr-defined]
        try:
            if not os.read(fd, 4096):
                return
        except BlockingIOError:
            pass  # the init is still between the byte and its execve (startContainer hooks)


def start(st: ContainerState, config: Config | None = None) -> None:
    """Release a created container's init: open the exec FIFO, read its byte, remove it."""
    import select

    status = st.status()
    if status == "stopped":
        raise RuntimeFailure("cannot start a container that has stopped")
    if status != "created":
        raise RuntimeFailure(f"cannot start an already {status} container" if status in ("running", "paused")
                             else f"cannot start a container in the {status} state")
    try:
        fd = os.open(st.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RuntimeFailure(f"container {st.id} has already been started") from None
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        while True:
            if p.poll(100) and os.read(fd, 1):
                break
            if not st.alive():
                raise RuntimeFailure(f"container {st.id}: the init process exited before it was started")
        try:
            os.unlink(st.fifo)
        except FileNotFoundError:
            pass
        wait_exec(fd, p)
    finally:
        os.close(fd)
    if config is None:
        if not (st.config.get("hooks") or {}).get("poststart"):
            return
        from skiff.oci.spec import parse_config

        config = parse_config(st.config)
    if "poststart" in config.hooks:
        from skiff.runtime.hooks import run_hooks

        run_hooks(config.hooks["poststart"], st.oci_state("running"), "poststart", warn_only=True)
