"""Typed messages between the runtime and the processes it forks into the container.

A ``SOCK_SEQPACKET`` socketpair keeps message boundaries, so each message is one JSON object
``{"type": ..., ...}``. Both ends are close-on-exec: when the container process ``execve``s,
its end closes and the runtime reads end-of-file, which is how it learns that the exec happened.

Messages, child → runtime:
  ``userns``      the child unshared a user namespace; the runtime writes its id maps
  ``pid``         the child forked the container's process: ``{"pid": N}`` (host PID)
  ``mounted``     the init prepared the rootfs; the runtime runs prestart/createRuntime hooks
  ``ready``       the init is set up and about to wait on the exec FIFO
  ``error``       ``{"message": ...}``: set-up failed; the sender exits
runtime → child:
  ``go``          the runtime put the child in its cgroup: carry on
  ``userns-done`` id maps written
  ``hooks-done``  runtime-namespace hooks ran
"""

from __future__ import annotations

import _socket
import os

from skiff import fastjson as json

MAX_MESSAGE = 1 << 16


class SyncError(Exception):
    pass


class Channel:
    __slots__ = ("sock",)

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock

    @staticmethod
    def pair() -> tuple[Channel, Channel]:
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        return Channel(a), Channel(b)

    def send(self, type: str, **fields: object) -> None:
        fields["type"] = type
        self.sock.send(json.dumps(fields).encode())

    def recv(self) -> dict | None:
        """The next message, or None at end-of-file (the other side exited or exec'd)."""
        while True:
            try:
                data = self.sock.recv(MAX_MESSAGE)
            except InterruptedError:
                continue
            except ConnectionResetError:
                # The other side closed with a message of ours unread (the runtime sends
                # "hooks-done" ahead when no hook runs in between): the kernel reports that
                # first, but what it sent before closing, its "error" above all, is still
                # queued behind.
                try:
                    data = self.sock.recv(MAX_MESSAGE, _socket.MSG_DONTWAIT)
                except (BlockingIOError, ConnectionResetError, InterruptedError):
                    return None
            if not data:
                return None
            return json.loads(data)

    def expect(self, type: str) -> dict:
        """Wait for a message of ``type``; an ``error`` message or EOF raises SyncError."""
        msg = self.recv()
        if msg is None:
            raise SyncError(f"the container process exited while the runtime waited for {type!r}")
        if msg.get("type") == "error":
            raise SyncError(msg.get("message", "unknown error"))
        if msg.get("type") != type:
            raise SyncError(f"expected message {type!r} from the container process, got {msg.get('type')!r}")
        return msg

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def child_fail(chan: Channel, message: str) -> None:
    """Report a set-up error to the runtime and end this (forked) process."""
    try:
        chan.send("error", message=message)
    finally:
        os._exit(1)
