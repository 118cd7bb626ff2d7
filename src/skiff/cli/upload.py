"""Streamed request bodies for `load`, `import` and `cp` into a container: the input is sent
piece by piece as it is read (Content-Length when the size is known, else chunked
transfer-encoding), never held in memory whole. Imported only by those commands."""

from __future__ import annotations

import os

from skiff.cli.http import CLIError, Response, _EmptyReply

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any

    from skiff.cli.http import Client


class BodyWriter:
    """Writes a request body to a socket as it is produced: raw bytes counted against a
    Content-Length, or chunked transfer-encoding frames. Nothing is buffered beyond one write."""

    def __init__(self, sock: socket.socket, size: int | None) -> None:
        self.sock = sock
        self.size = size
        self.sent = 0
        self.complete = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.size is not None:
            if self.sent + len(data) > self.size:
                raise CLIError(f"request body is longer than the {self.size} bytes announced "
                               "(the input changed while it was sent)")
            self.sock.sendall(data)
        else:
            self.sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
        self.sent += len(data)

    def finish(self) -> None:
        if self.size is None:
            self.sock.sendall(b"0\r\n\r\n")
        elif self.sent != self.size:
            raise CLIError(f"request body is {self.sent} bytes, not the {self.size} announced "
                           "(the input changed while it was sent)")
        self.complete = True


def copy_file(f: Any, chunk: int = 1 << 20) -> Any:
    """A producer for ``upload`` that copies binary file ``f`` in pieces of ``chunk`` bytes."""

    def produce(write: Any) -> None:
        while True:
            b = f.read(chunk)
            if not b:
                return
            write(b)
    return produce


def file_size(f: Any) -> int | None:
    """The byte count left in ``f`` if it is a regular file (Content-Length), else None."""
    import stat

    try:
        st = os.fstat(f.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        return st.st_size - f.tell()
    except OSError:
        return None


def upload(cli: Client, method: str, path: str, query: dict | None, produce: Any, ctype: str,
           size: int | None = None, headers: dict[str, str] | None = None) -> Response:
    """``Client.upload``: one fresh connection; the head, then ``produce(write)``'s pieces, then
    the response head. A streamed body cannot be replayed, so the API version is settled
    first (one /_ping unless DOCKER_API_VERSION is set). A daemon that answers before it has
    read everything (an error) has its answer read and raised; errors (>= 400) raise APIError."""
    if not cli._negotiated:
        cli._negotiate()
    url = cli.url(path, query)
    host = cli.hostname if not isinstance(cli.addr, str) else "api.moby.localhost"
    head = [f"{method} {url} HTTP/1.1", f"Host: {host}", "User-Agent: skiff-cli/1.0", f"Content-Type: {ctype}",
            f"Content-Length: {size}" if size is not None else "Transfer-Encoding: chunked"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock = cli._connect()
    w = BodyWriter(sock, size)
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        produce(w.write)
        w.finish()
    except (BrokenPipeError, ConnectionResetError):
        pass    # the daemon stopped reading: it answered early (an error, read below)
    except BaseException:
        sock.close()
        raise
    try:
        r = cli._read_head(sock, b"", method)
    except _EmptyReply:
        sock.close()
        raise CLIError(f"error during connect: {method} {url}: the daemon closed the connection") from None
    if r.status >= 400:
        raise cli._error(r)
    if not w.complete:
        r.body.close()
        raise CLIError(f"error sending the request body of {method} {url}: the daemon stopped reading it")
    return r
