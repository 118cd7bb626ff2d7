"""A small HTTP/1.1 client over raw sockets for the Docker Engine API (skiffd or dockerd).

No ``http.client``: it costs milliseconds to import and cannot hijack. One idle keep-alive
connection is reused for sequential requests; streams and hijacked (101) connections get their
own socket. Bodies: Content-Length, chunked, or until close; ``Stream`` gives a ``read(n)`` over
any of them so the multiplexed-stream demuxer does not care where bytes come from.
"""

from __future__ import annotations

import _socket
import os

from skiff import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator
    from typing import Any

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(s: str, safe: str = "") -> str:
    """Percent-encode like urllib.parse.quote (which costs ~7 ms of imports)."""
    ok = _SAFE | frozenset(safe.encode())
    return "".join(chr(b) if b in ok else f"%{b:02X}" for b in s.encode())

DEFAULT_HOST = "unix:///run/skiff/skiff.sock"
MAX_API = "1.47"
MIN_API = "1.24"


class CLIError(Exception):
    """An error the CLI prints as is (``msg``) and exits with ``code``."""

    def __init__(self, msg: str, code: int = 1) -> None:
        super().__init__(msg)
        self.msg = msg
        self.code = code


class APIError(CLIError):
    """The daemon answered with an error status: ``Error response from daemon: <message>``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Error response from daemon: {message}", 1)
        self.status = status
        self.message = message


class ConnectError(CLIError):
    pass


def _vtuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (0,)


class Stream:
    """Body reader: ``read(n)`` returns up to n bytes (b"" at the end), ``read_exact``,
    ``readline``, ``chunks``. mode: "length", "chunked", "close" (to EOF; also hijacked)."""

    def __init__(self, sock: socket.socket, buf: bytes, mode: str, length: int = 0) -> None:
        self.sock = sock
        self.buf = buf
        self.mode = mode
        self.left = length          # bytes left in the body (length) or the current chunk
        self.done = mode == "length" and length == 0

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            if not self._fill():
                raise CLIError("error reading response: unexpected EOF in a chunked body")

    def read(self, n: int = 65536) -> bytes:
        if self.done:
            return b""
        if self.mode == "chunked":
            if self.left == 0:
                size_line = self._line().split(b";", 1)[0].strip()
                try:
                    self.left = int(size_line, 16)
                except ValueError:
                    raise CLIError(f"error reading response: bad chunk size {size_line!r}") from None
                if self.left == 0:
                    while self._line():     # trailers up to the empty line
                        pass
                    self.done = True
                    return b""
            if not self.buf and not self._fill():
                raise CLIError("error reading response: unexpected EOF in a chunk")
            take = min(n, self.left, len(self.buf))
            out, self.buf = self.buf[:take], self.buf[take:]
            self.left -= take
            if self.left == 0:
                self._line()                # the CRLF after the chunk data
            return out
        if self.mode == "length":
            if not self.buf and not self._fill():
                raise CLIError("error reading response: unexpected EOF")
            take = min(n, self.left, len(self.buf))
            out, self.buf = self.buf[:take], self.buf[take:]
            self.left -= take
            self.done = self.left == 0
            return out
        if not self.buf:
            try:
                if not self._fill():
                    self.done = True
                    return b""
            except OSError:
                self.done = True
                return b""
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_exact(self, n: int) -> bytes:
        parts = []
        while n > 0:
            b = self.read(n)
            if not b:
                break
            parts.append(b)
            n -= len(b)
        return b"".join(parts)

    def read_all(self) -> bytes:
        parts: list[bytes] = []
        while True:
            b = self.read()
            if not b:
                return b"".join(parts)
            parts.append(b)

    def lines(self) -> Iterator[bytes]:
        pending = b""
        while True:
            b = self.read()
            if not b:
                if pending.strip():
                    yield pending
                return
            pending += b
            while True:
                i = pending.find(b"\n")
                if i < 0:
                    break
                line, pending = pending[:i], pending[i + 1:]
                if line.strip():
                    yield line

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Response:
    def __init__(self, status: int, reason: str, headers: dict[str, str], body: Stream,
                 keep: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.keep = keep

    def json(self) -> Any:
        data = self.body.read_all()
        return fastjson.loads(data) if data.strip() else None


def demux(stream: Stream, out: Any, err: Any) -> None:
    """Copy a multiplexed stream (8-byte frame headers) to ``out``/``err`` (binary files)."""
    while True:
        hdr = stream.read_exact(8)
        if len(hdr) < 8:
            return
        size = int.from_bytes(hdr[4:8], "big")
        data = stream.read_exact(size)
        f = err if hdr[0] == 2 else out
        f.write(data)
        f.flush()
        if len(data) < size:
            return


def copy_raw(stream: Stream, out: Any) -> None:
    while True:
        b = stream.read()
        if not b:
            return
        out.write(b)
        out.flush()


class Client:
    def __init__(self, host: str | None = None, tls: dict | None = None) -> None:
        self.host = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        self.tls = tls
        self._idle: tuple[socket.socket, bytes] | None = None
        self._version = os.environ.get("DOCKER_API_VERSION") or None
        self._negotiated = self._version is not None
        if self.host.startswith("unix://"):
            self.addr: Any = self.host[7:]
            self.hostname = "localhost"
        elif self.host.startswith(("tcp://", "http://", "https://")):
            rest = self.host.split("://", 1)[1].rstrip("/")
            h, _, p = rest.rpartition(":")
            if not h:
                h, p = rest, ("2376" if self._use_tls() else "2375")
            self.addr = (h.strip("[]"), int(p))
            self.hostname = rest
        elif self.host.startswith("/"):
            self.addr = self.host
            self.hostname = "localhost"
        else:
            raise CLIError(f"unable to parse docker host `{self.host}`")

    def _use_tls(self) -> bool:
        return (bool(self.tls) or bool(os.environ.get("DOCKER_TLS_VERIFY")) or bool(os.environ.get("DOCKER_TLS"))
                or self.host.startswith("https://"))

    def connect_error(self, e: OSError) -> ConnectError:
        where = self.host if "://" in self.host else "unix://" + self.host
        hint = ""
        if where == DEFAULT_HOST:
            hint = " (start it as root with `skiffd`, or point DOCKER_HOST/-H at a running daemon)"
        return ConnectError(f"Cannot connect to the Docker daemon at {where}. Is the docker daemon "
                            f"running? skiffd is not answering: {e.strerror or e}{hint}")

    def _connect(self) -> socket.socket:
        try:
            if isinstance(self.addr, str):
                s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                try:
                    s.connect(self.addr)
                except OSError:
                    s.close()
                    raise
                return s  # type: ignore[return-value]  # same methods as socket.socket
            import socket

            s = socket.create_connection(self.addr)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            raise self.connect_error(e) from None
        if self._use_tls():
            s = self._wrap_tls(s)
        return s

    def _wrap_tls(self, s: socket.socket) -> socket.socket:
        import ssl

        certs = os.environ.get("DOCKER_CERT_PATH") or os.path.join(
            os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"))
        tls = self.tls or {}
        ctx = ssl.create_default_context()
        verify = tls.get("verify", bool(os.environ.get("DOCKER_TLS_VERIFY")))
        ca = tls.get("ca") or os.path.join(certs, "ca.pem")
        cert = tls.get("cert") or os.path.join(certs, "cert.pem")
        key = tls.get("key") or os.path.join(certs, "key.pem")
        if verify:
            if os.path.exists(ca):
                ctx.load_verify_locations(ca)
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if os.path.exists(cert) and os.path.exists(key):
            ctx.load_cert_chain(cert, key)
        try:
            return ctx.wrap_socket(s, server_hostname=self.addr[0])
        except (OSError, ssl.SSLError) as e:
            s.close()
            raise CLIError(f"error during connect: TLS handshake with {self.host}: {e}") from None

    # ---- version negotiation
    def version(self) -> str:
        """The API version in use: DOCKER_API_VERSION, else optimistically MAX_API; a daemon
        that answers "client version ... is too new" makes ``_negotiate`` ask /_ping."""
        return self._version or MAX_API

    def _too_new(self, e: APIError) -> bool:
        if e.status == 400 and "is too new" in e.message and not self._negotiated:
            self._negotiate()
            return True
        return False

    def _negotiate(self) -> str:
        if not self._negotiated:
            self._negotiated = True
            v = MAX_API
            try:
                r = self._do("GET", "/_ping", None, None, {}, False)
                sv = r.headers.get("api-version")
                r.body.read_all()
                self._release(r)
                if sv and _vtuple(sv) < _vtuple(MAX_API):
                    v = sv
            except APIError:
                pass
            self._version = v
        return self._version or MAX_API

    def api_at_least(self, v: str) -> bool:
        return _vtuple(self.version()) >= _vtuple(v)

    def do_versioned(self, method: str, path: str, query: dict | None = None) -> Response:
        """A request whose response the caller reads (headers read here, body left open),
        on a fresh connection, with the same too-new retry as ``request``."""
        r = self._do(method, self.url(path, query), None, None, {}, True)
        if r.status >= 400:
            e = self._error(r)
            if not self._too_new(e):
                raise e
            r = self._do(method, self.url(path, query), None, None, {}, True)
            if r.status >= 400:
                raise self._error(r)
        return r

    # ---- requests
    def _release(self, r: Response) -> None:
        if r.keep and r.body.done and self._idle is None:
            self._idle = (r.body.sock, r.body.buf)
        elif r.body.sock is not (self._idle[0] if self._idle else None):
            r.body.close()

    def _do(self, method: str, path: str, body: bytes | None, ctype: str | None,
            headers: dict[str, str], fresh: bool) -> Response:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.hostname if not isinstance(self.addr, str) else 'api.moby.localhost'}",
                "User-Agent: skiff-cli/1.0"]
        for k, v in headers.items():
            head.append(f"{k}: {v}")
        if body is not None:
            head.append(f"Content-Type: {ctype or 'application/json'}")
            head.append(f"Content-Length: {len(body)}")
        elif method in ("POST", "PUT"):
            head.append("Content-Length: 0")
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")
        for attempt in (0, 1):
            if not fresh and self._idle is not None:
                sock, buf = self._idle
                self._idle = None
                reused = True
            else:
                sock, buf, reused = self._connect(), b"", False
            try:
                sock.sendall(data)
                return self._read_head(sock, buf, method)
            except (BrokenPipeError, ConnectionResetError, _EmptyReply):
                sock.close()
                if reused and attempt == 0:
                    continue
                raise CLIError(f"error during connect: {method} {path}: the daemon closed the connection") from None
        raise AssertionError("unreachable")

    def _read_head(self, sock: socket.socket, buf: bytes, method: str) -> Response:
        while b"\r\n\r\n" not in buf:
            d = sock.recv(65536)
            if not d:
                if not buf:
                    raise _EmptyReply()
                raise CLIError("error reading response headers: connection closed")
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        keep = headers.get("connection", "").lower() != "close"
        if status == 101 or method == "HEAD" or status in (204, 304):
            mode, length = ("close", 0) if status == 101 else ("length", 0)
            if status != 101:
                return Response(status, reason, headers, Stream(sock, buf, "length", 0), keep)
            return Response(status, reason, headers, Stream(sock, buf, mode, length), False)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return Response(status, reason, headers, Stream(sock, buf, "chunked"), keep)
        if "content-length" in headers:
            n = int(headers["content-length"])
            return Response(status, reason, headers, Stream(sock, buf, "length", n), keep)
        return Response(status, reason, headers, Stream(sock, buf, "close"), False)

    def request(self, method: str, path: str, query: dict | None = None, body: Any = None,
                stream: bool = False, raw_body: bytes | None = None, ctype: str | None = None,
                headers: dict[str, str] | None = None, versioned: bool = True,
                fresh: bool = False) -> Response:
        """Send a request; errors (>= 400) raise APIError. ``stream``: the body is left
        unread (the caller reads ``r.body`` and closes it); else it is read into ``r.data``."""
        data = raw_body
        if body is not None:
            data = fastjson.dumps(body).encode()
        r = self._do(method, self.url(path, query, versioned), data, ctype, headers or {}, fresh or stream)
        if r.status >= 400:
            e = self._error(r)
            if not (versioned and self._too_new(e)):
                raise e
            r = self._do(method, self.url(path, query, versioned), data, ctype, headers or {}, fresh or stream)
            if r.status >= 400:
                raise self._error(r)
        if not stream:
            r.data = r.body.read_all()  # type: ignore[attr-defined]
            self._release(r)
        return r

    def upload(self, method: str, path: str, query: dict | None, produce: Any, ctype: str,
               size: int | None = None, headers: dict[str, str] | None = None) -> Response:
        """Send a request whose body is streamed, never held whole (see ``skiff.cli.upload``):
        ``produce(write)`` calls ``write(bytes)`` piece by piece; ``size`` known means
        Content-Length, else chunked. The response body is left open; errors raise APIError."""
        from skiff.cli.upload import upload

        return upload(self, method, path, query, produce, ctype, size, headers)

    def _error(self, r: Response) -> APIError:
        raw = r.body.read_all()
        self._release(r)
        msg = raw.decode(errors="replace").strip()
        if r.headers.get("content-type", "").startswith("application/json"):
            try:
                msg = fastjson.loads(raw).get("message", msg)
            except (ValueError, AttributeError):
                pass
        if not msg:
            msg = f"{r.status} {r.reason}"
        return APIError(r.status, msg)

    def url(self, path: str, query: dict | None = None, versioned: bool = True) -> str:
        url = f"/v{self.version()}{path}" if versioned else path
        if query:
            parts: list[str] = []
            for k, v in query.items():
                if v is None:
                    continue
                if isinstance(v, list) and type(v).__name__ == "_Repeated":
                    parts.extend(f"{k}={quote(str(x), safe='')}" for x in v)
                    continue
                if isinstance(v, bool):
                    v = "1" if v else "0"
                elif isinstance(v, (dict, list)):
                    v = fastjson.dumps(v)
                parts.append(f"{k}={quote(str(v), safe='')}")
            if parts:
                url += "?" + "&".join(parts)
        return url

    def get_json(self, path: str, query: dict | None = None) -> Any:
        r = self.request("GET", path, query)
        return fastjson.loads(r.data) if r.data.strip() else None  # type: ignore[attr-defined]

    def post_json(self, path: str, query: dict | None = None, body: Any = None) -> Any:
        r = self.request("POST", path, query, body)
        return fastjson.loads(r.data) if r.data.strip() else None  # type: ignore[attr-defined]

    def hijack(self, path: str, query: dict | None = None, body: Any = None) -> Response:
        """POST with Upgrade: tcp; returns the response whose ``body`` is the raw connection."""
        data = fastjson.dumps(body).encode() if body is not None else None
        hdrs = {"Connection": "Upgrade", "Upgrade": "tcp"}
        ct = "application/json" if data else "text/plain"
        r = self._do("POST", self.url(path, query), data, ct, hdrs, True)
        if r.status >= 400:
            e = self._error(r)
            if not self._too_new(e):
                raise e
            r = self._do("POST", self.url(path, query), data, ct, hdrs, True)
            if r.status >= 400:
                raise self._error(r)
        if r.status != 101:
            # old daemons answer 200 and stream raw on the same connection
            r.body.mode = "close"
            r.body.done = False
        return r


class _EmptyReply(Exception):
    pass
