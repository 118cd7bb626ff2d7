"""Local registries for tests: Debian's ``docker-registry`` on 127.0.0.1, a token server of our
own for the bearer flow, and a faulty proxy to break downloads on purpose.

- ``Registry.start(base, auth=None | "htpasswd" | "token", ...)`` writes a config file and an
  empty storage directory under ``base``, starts ``docker-registry serve`` on a free
  127.0.0.1 port and waits until ``GET /v2/`` answers. ``stop()`` ends the process by its PID
  (SIGTERM, then SIGKILL after 10 s), waits for it and removes ``base``.
  ``htpasswd``: the password file holds bcrypt hashes made by the C library's ``crypt``
  (libxcrypt's ``$2b$``, which Go's bcrypt reads); no Python package or apache2-utils needed.
- ``TokenServer``: an HTTP server in a thread of the test process, answering Docker's token
  requests (``GET /token?service=..&scope=..`` with optional basic credentials). It signs
  RS256 JWTs with a key and self-signed certificate made by ``openssl`` (the certificate is in
  the JWT's ``x5c`` header and is the registry's ``rootcertbundle``). Valid users get every
  action they ask for, anonymous clients ``pull`` when ``anonymous_pull`` is set, wrong
  credentials a 401. Requests are recorded in ``requests``.
- ``FaultProxy``: a reverse proxy in front of a registry that records requests and can cut a
  blob download after N bytes (``cut[digest] = (n, times)``) or flip a byte of it
  (``corrupt.add(digest)``).

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import ctypes
import http.client
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "skiff-test-registry"
ISSUER = "skiff-test-token-issuer"


class RegistryUtilError(Exception):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- htpasswd with bcrypt from libcrypt -----------------------------------------------------

def bcrypt_hash(password: str, cost: int = 5) -> str:
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2b$", cost, None, 0)
    if not salt:
        raise RegistryUtilError("libcrypt: crypt_gensalt($2b$) failed: bcrypt not supported")
    out = lib.crypt(password.encode(), salt)
    if not out or not out.startswith(b"$2b$"):
        raise RegistryUtilError(f"libcrypt: bcrypt hashing failed: {out!r}")
    return out.decode()


def htpasswd_line(user: str, password: str) -> str:
    return f"{user}:{bcrypt_hash(password)}\n"


# --- token server ---------------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenServer:
    def __init__(self, base: Path, users: dict[str, str], *, anonymous_pull: bool = False,
                 refresh_tokens: dict[str, str] | None = None) -> None:
        self.base = base
        self.users = dict(users)
        self.anonymous_pull = anonymous_pull
        self.refresh_tokens = dict(refresh_tokens or {})  # OAuth2 refresh token -> account
        self.requests: list[dict] = []
        self.key = base / "token.key"
        self.cert = base / "token.crt"
        base.mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                        "-out", str(self.cert), "-days", "2", "-subj", "/CN=skiff-test-token"],
                       check=True, capture_output=True, timeout=60)
        pem = self.cert.read_text()
        self._x5c = "".join(line for line in pem.splitlines() if line and not line.startswith("-----"))
        self.port = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        proc = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                              input=signing_input.encode(), capture_output=True, check=True, timeout=60)
        return f"{signing_input}.{_b64url(proc.stdout)}"

    def _deny(self, handler: http.server.BaseHTTPRequestHandler, details: str) -> None:
        body = json.dumps({"details": details}).encode()
        handler.send_response(401)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(parsed.query)
        if handler.command == "POST":  # OAuth2: grant_type=refresh_token (Docker's identity tokens)
            length = int(handler.headers.get("Content-Length") or 0)
            query = urllib.parse.parse_qs(handler.rfile.read(length).decode())
        scopes = [s for v in query.get("scope", []) for s in v.split(" ")]
        account = ""
        authed = False
        auth = handler.headers.get("Authorization", "")
        record = {"method": handler.command, "path": parsed.path, "scopes": scopes,
                  "service": query.get("service", [""])[0], "authorization": auth.split(" ", 1)[0] if auth else ""}
        self.requests.append(record)
        if handler.command == "POST":
            if query.get("grant_type") != ["refresh_token"]:
                self._deny(handler, "unsupported grant_type")
                return
            account = self.refresh_tokens.get(query.get("refresh_token", [""])[0], "")
            if not account:
                self._deny(handler, "invalid refresh token")
                return
            authed = True
        elif auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                user, password = "", ""
            if self.users.get(user) != password or not user:
                self._deny(handler, "incorrect username or password")
                return
            account, authed = user, True
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind != "repository" or not name:
                    continue
                wanted = [a for a in actions.split(",") if a]
                if authed:
                    granted = wanted
                elif self.anonymous_pull:
                    granted = [a for a in wanted if a == "pull"]
                else:
                    granted = []
                access.append({"type": "repository", "name": name, "actions": granted})
        token = self.sign(self.claims(account, access))
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    @staticmethod
    def claims(account: str, access: list[dict]) -> dict:
        now = int(time.time())
        return {"iss": ISSUER, "sub": account, "aud": SERVICE, "exp": now + 300, "nbf": now - 30,
                "iat": now, "jti": secrets.token_hex(8), "access": access}

    def start(self) -> TokenServer:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer._handle(self)

            def do_POST(self) -> None:
                outer._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


# --- docker-registry ------------------------------------------------------------------------

class Registry:
    def __init__(self, base: Path, port: int, proc: subprocess.Popen, auth: str | None,
                 users: dict[str, str]) -> None:
        self.base = base
        self.port = port
        self.proc = proc
        self.auth = auth
        self.users = users

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def storage(self) -> Path:
        return self.base / "storage"

    @classmethod
    def start(cls, base: Path, auth: str | None = None, *, users: dict[str, str] | None = None,
              token_server: TokenServer | None = None) -> Registry:
        base.mkdir(parents=True, exist_ok=True)
        storage = base / "storage"
        storage.mkdir()
        users = dict(users or {})
        port = free_port()
        config: dict = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
        }
        if auth == "htpasswd":
            pw = base / "htpasswd"
            pw.write_text("".join(htpasswd_line(u, p) for u, p in users.items()))
            config["auth"] = {"htpasswd": {"realm": "skiff-test-realm", "path": str(pw)}}
        elif auth == "token":
            if token_server is None:
                raise RegistryUtilError("token auth needs a TokenServer")
            config["auth"] = {"token": {"realm": token_server.realm, "service": SERVICE, "issuer": ISSUER,
                                        "rootcertbundle": str(token_server.cert)}}
        elif auth is not None:
            raise RegistryUtilError(f"unknown auth kind {auth!r}")
        cfg = base / "config.yml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        log = open(base / "registry.log", "wb")
        try:
            proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        finally:
            log.close()
        reg = cls(base, port, proc, auth, users)
        try:
            reg._wait_ready()
        except BaseException:
            reg.stop()
            raise
        return reg

    def _wait_ready(self, deadline_s: float = 30.0) -> None:
        end = time.monotonic() + deadline_s
        while True:
            if self.proc.poll() is not None:
                raise RegistryUtilError(f"docker-registry exited with {self.proc.returncode}: {self.log()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/v2/")
                status = conn.getresponse().status
                conn.close()
                if status in (200, 401):
                    return
            except OSError:
                pass
            if time.monotonic() > end:
                raise RegistryUtilError(f"docker-registry on port {self.port} not ready: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return (self.base / "registry.log").read_text(errors="replace")[-4000:]
        except OSError as e:
            return f"(no log: {e})"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        shutil.rmtree(self.base)


# --- a faulty proxy -------------------------------------------------------------------------

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade"}


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests: list[dict] = []
        self.cut: dict[str, list[int]] = {}  # digest -> [bytes to send before closing, times left]
        self.corrupt: set[str] = set()
        self._lock = threading.Lock()
        self.port = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        method = handler.command
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
        with self._lock:
            self.requests.append({"method": method, "path": handler.path, "range": handler.headers.get("Range")})
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        conn.request(method, handler.path, body=body, headers=headers)
        resp = conn.getresponse()
        digest = ""
        if method == "GET" and "/blobs/sha256:" in handler.path and resp.status in (200, 206):
            digest = handler.path.rsplit("/", 1)[1]
        handler.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP:
                handler.send_header(k, v)
        handler.end_headers()
        limit = None
        with self._lock:
            plan = self.cut.get(digest)
            if plan and plan[1] > 0:
                plan[1] -= 1
                limit = plan[0]
            flip = digest in self.corrupt
        sent = 0
        first = True
        if method != "HEAD":
            while True:
                chunk = resp.read(65536)
                if not chunk:
                    break
                if flip and first:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                first = False
                if limit is not None and sent + len(chunk) >= limit:
                    handler.wfile.write(chunk[:limit - sent])
                    handler.wfile.flush()
                    handler.close_connection = True
                    conn.close()
                    handler.connection.shutdown(socket.SHUT_RDWR)
                    return
                handler.wfile.write(chunk)
                sent += len(chunk)
        conn.close()

    def start(self) -> FaultProxy:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _go(self) -> None:
                outer._forward(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _go

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
