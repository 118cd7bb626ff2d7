"""A scripted daemon for unit tests of the `skiff` CLI: an HTTP server on a Unix socket that
records each request and lets the test answer it (``Server``), and the replies tests send
(``reply``, ``chunked``)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class Server:
    """Serves one request per connection; reads Content-Length or chunked request bodies (unless
    ``read_body`` is false) and records (method, path, headers, chunk sizes, body) in ``reqs``;
    ``handler(req, conn)`` answers."""

    def __init__(self, path: str, handler: Callable[[dict, socket.socket], object],
                 read_body: bool = True) -> None:
        self.handler = handler
        self.read_body = read_body
        self.reqs: list[dict] = []
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(path)
        self.srv.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c: socket.socket) -> None:
        f = c.makefile("rb")
        with c, f:
            line = f.readline().decode()
            if not line:
                return
            method, path, _ = line.split(" ")
            headers = {}
            while True:
                h = f.readline().decode().strip()
                if not h:
                    break
                k, _, v = h.partition(":")
                headers[k.lower()] = v.strip()
            req = {"method": method, "path": path, "headers": headers, "chunks": [], "body": b""}
            if self.read_body:
                if headers.get("transfer-encoding") == "chunked":
                    parts = []
                    while True:
                        n = int(f.readline().strip(), 16)
                        if n == 0:
                            f.readline()
                            break
                        parts.append(f.read(n))
                        f.readline()
                    req["chunks"] = [len(p) for p in parts]
                    req["body"] = b"".join(parts)
                else:
                    req["body"] = f.read(int(headers.get("content-length", 0)))
            self.reqs.append(req)
            self.handler(req, c)

    def close(self) -> None:
        self.srv.close()


def reply(c: socket.socket, status: int, body: bytes, ctype: str = "application/json", reason: str = "OK") -> None:
    """A whole response with a Content-Length; the connection closes after it."""
    c.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
              f"Connection: close\r\n\r\n".encode() + body)


def chunked(c: socket.socket, lines: list[bytes]) -> None:
    """A 200 JSON response in chunked encoding, one chunk per item of ``lines``."""
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    for ln in lines:
        c.sendall(b"%x\r\n" % len(ln) + ln + b"\r\n")
    c.sendall(b"0\r\n\r\n")
