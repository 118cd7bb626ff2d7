"""A registry client for the OCI distribution spec (Docker registry API v2), over http.client.

One ``RegistryClient`` talks to one registry (``domain`` as references name it; Docker Hub's
``docker.io`` is reached at ``registry-1.docker.io``) and is shared by the threads of a pull or
push: connections are pooled per thread-safe pool, authentication state lives in its
``Authorizer`` (see ``auth``).

Transport security, as Docker decides it: HTTPS with certificate verification, except for
insecure registries: ``localhost``, ``127.0.0.0/8``, ``::1`` and the ``insecure_registries``
given (``host[:port]`` entries or CIDRs). For those, HTTPS is tried first without verifying the
certificate and plain HTTP is used when the registry does not speak TLS.

Before the first request the client pings ``GET /v2/`` (as Docker does) and learns from a 401
which authentication scheme the registry wants, so later requests (uploads included) carry
credentials from the start. A 401 on a later request (e.g. a token without the needed scope)
gets one retry with fresh credentials.

Errors are ``RegistryError`` subclasses worded as Docker words them: the registry's error
codes become ``<code in words>: <message>`` (``manifest unknown: manifest unknown``,
``unauthorized: authentication required``, ``denied: requested access to the resource is
denied``), prefixed by the request as Go prints a failed request (``Get "URL": ...``) so the
object is named too. Status classes map onto the library's errors: 404 -> NotFound, 429/5xx
and connection failures -> Unavailable.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import socket
import ssl
import sys
import threading
import urllib.parse

from skiff.images.errors import DigestMismatch, ImageError, InvalidArgument, NotFound, Unavailable
from skiff.images.manifest import (
    INDEX_TYPES,
    MANIFEST_ACCEPT,
    MANIFEST_TYPES,
    MAX_MANIFEST_SIZE,
    SCHEMA1_REFUSED,
    SCHEMA1_TYPES,
    detect_media_type,
)
from skiff.images.reference import validate_digest
from skiff.images.registry.auth import (
    AuthConfig,
    Authorizer,
    Challenge,
    basic_header,
    merge_scopes,
    parse_challenges,
    repository_scope,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import BinaryIO

USER_AGENT = "skiff/0.1 (registry client; containerd/1.6 compatible)"
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
BLOCK = 1 << 20
MAX_ERROR_BODY = 1 << 20
MAX_REDIRECTS = 10
MIN_TOKEN_LIFETIME = 60  # seconds: Docker treats shorter expires_in as 60


class RegistryError(ImageError):
    """A registry request failed; ``status`` is the HTTP status (0: no response), ``errors``
    the registry's ``(code, message, detail)`` list."""

    def __init__(self, message: str, *, status: int = 0, errors: list[tuple[str, str, object]] | None = None,
                 method: str = "", url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []
        self.method = method
        self.url = url

    @property
    def codes(self) -> list[str]:
        return [c for c, _, _ in self.errors]


class RegistryUnauthorized(RegistryError):
    code = "UNAUTHENTICATED"


class RegistryDenied(RegistryError):
    code = "PERMISSION_DENIED"


class RegistryNotFound(RegistryError, NotFound):
    code = "NOT_FOUND"


class RegistryUnavailable(RegistryError, Unavailable):
    code = "UNAVAILABLE"


class ManifestDigestMismatch(RegistryError, DigestMismatch):
    """A manifest's bytes do not hash to the digest asked for or announced."""

    code = "FAILED_PRECONDITION"


class BlobSizeMismatch(RegistryError):
    """The registry sent more or fewer bytes than the descriptor's size."""


def _go_method(method: str) -> str:
    return method[:1] + method[1:].lower()


def code_words(code: str) -> str:
    """``MANIFEST_UNKNOWN`` -> ``manifest unknown`` (how Docker prints a registry error code)."""
    return code.replace("_", " ").lower()


def parse_error_body(body: bytes) -> list[tuple[str, str, object]]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(doc, dict):
        return []
    errs = doc.get("errors")
    out: list[tuple[str, str, object]] = []
    details = doc.get("details")
    if isinstance(details, str) and details:  # token servers (Docker Hub) answer 401 this way
        out.append(("UNAUTHORIZED", details, None))
    if isinstance(errs, list):
        for e in errs:
            if isinstance(e, dict) and isinstance(e.get("code"), str):
                msg = e.get("message")
                out.append((e["code"], msg if isinstance(msg, str) else "", e.get("detail")))
    return out


def error_from_response(method: str, url: str, status: int, reason: str, body: bytes,
                        challenges: list[Challenge] | None = None) -> RegistryError:
    """The RegistryError for a failed response, worded as Docker's registry client words it."""
    errors: list[tuple[str, str, object]] = []
    for c in challenges or []:
        if c.scheme == "bearer":
            kind = {"invalid_token": "UNAUTHORIZED", "insufficient_scope": "DENIED"}.get(c.params.get("error", ""))
            if kind:
                default = "authentication required" if kind == "UNAUTHORIZED" else \
                    "requested access to the resource is denied"
                errors.append((kind, c.params.get("error_description") or default, None))
                break
    errors.extend(parse_error_body(body))
    if errors:
        text = ", ".join(f"{code_words(c)}: {m}" if m else code_words(c) for c, m, _ in errors)
    elif status == 401:
        errors = [("UNAUTHORIZED", "authentication required", None)]
        text = "unauthorized: authentication required"
    else:
        text = f"received unexpected HTTP status: {status} {reason}".rstrip()
    message = f'{_go_method(method)} "{url}": {text}'
    first = errors[0][0] if errors else ""  # Docker goes by the first error
    cls: type[RegistryError]
    if first == "UNAUTHORIZED":
        cls = RegistryUnauthorized
    elif first == "DENIED" or (not first and status == 403):
        cls = RegistryDenied
    elif first in ("MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN", "BLOB_UPLOAD_UNKNOWN") or status == 404:
        cls = RegistryNotFound
    elif status == 401:
        cls = RegistryUnauthorized
    elif status == 403:
        cls = RegistryDenied
    elif first == "TOOMANYREQUESTS" or status == 429 or status >= 500:
        cls = RegistryUnavailable
    else:
        cls = RegistryError
    return cls(message, status=status, errors=errors, method=method, url=url)


# --- which registries may use plain HTTP ----------------------------------------------------

def _split_host_port(netloc: str) -> tuple[str, int | None]:
    if netloc.startswith("["):
        end = netloc.find("]")
        host = netloc[1:end]
        rest = netloc[end + 1:]
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = netloc.rpartition(":")
    if sep and port.isdigit() and host:
        return host, int(port)
    return netloc, None


def is_insecure_registry(netloc: str, insecure_registries: Iterable[str] = ()) -> bool:
    """Whether ``netloc`` (host[:port]) may be reached without verified TLS (see module doc)."""
    host, _port = _split_host_port(netloc)
    if host == "localhost":
        return True
    ip = None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    if ip is not None and ip.is_loopback:
        return True
    for entry in insecure_registries:
        entry = entry.strip()
        if not entry:
            continue
        if "://" in entry:
            entry = urllib.parse.urlsplit(entry).netloc
        if entry in (netloc, host):
            return True
        if "/" in entry and ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


# --- HTTP plumbing --------------------------------------------------------------------------

class _Pool:
    """Idle keep-alive connections per (scheme, netloc)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._unverified = ssl.create_default_context()
        self._unverified.check_hostname = False
        self._unverified.verify_mode = ssl.CERT_NONE
        self._verified = ssl.create_default_context()

    def get(self, scheme: str, netloc: str, verify: bool) -> http.client.HTTPConnection:
        with self._lock:
            idle = self._idle.get((scheme, netloc))
            if idle:
                return idle.pop()
        host, port = _split_host_port(netloc)
        conn: http.client.HTTPConnection
        if scheme == "https":
            ctx = self._verified if verify else self._unverified
            conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=ctx, blocksize=BLOCK)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout, blocksize=BLOCK)
        return conn

    def put(self, scheme: str, netloc: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault((scheme, netloc), []).append(conn)

    def close_all(self) -> None:
        with self._lock:
            conns = [c for lst in self._idle.values() for c in lst]
            self._idle.clear()
        for c in conns:
            c.close()


class Response:
    """A response whose body is read by the caller (``read``/``read_all``), then ``close``d."""

    def __init__(self, pool: _Pool, scheme: str, netloc: str, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse, method: str, url: str) -> None:
        self._pool = pool
        self._scheme = scheme
        self._netloc = netloc
        self._conn: http.client.HTTPConnection | None = conn
        self._resp = resp
        self.method = method
        self.url = url
        self.status = resp.status
        self.reason = resp.reason
        self.headers = resp.headers

    def header(self, name: str) -> str:
        return self.headers.get(name, "") or ""

    def read(self, n: int = BLOCK) -> bytes:
        """Up to ``n`` bytes; b"" at the end; a connection lost early raises RegistryUnavailable."""
        try:
            return self._resp.read(n)
        except (http.client.IncompleteRead, OSError, http.client.HTTPException) as e:
            self._discard()
            raise RegistryUnavailable(f'{_go_method(self.method)} "{self.url}": reading the response body: '
                                      f"{_reason(e)}", method=self.method, url=self.url) from e

    def read_all(self, limit: int) -> bytes:
        chunks = []
        total = 0
        while True:
            chunk = self.read(min(BLOCK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                self._discard()
                raise RegistryError(f'{_go_method(self.method)} "{self.url}": response body larger than '
                                    f"{limit} bytes", status=self.status, method=self.method, url=self.url)
        self.close()
        return b"".join(chunks)

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Give the connection back for reuse if the body was read to its end, else close it."""
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        if self._resp.isclosed() and not self._resp.will_close:
            self._pool.put(self._scheme, self._netloc, conn)
        else:
            conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(e: BaseException) -> str:
    if isinstance(e, http.client.IncompleteRead):
        return f"connection closed after {len(e.partial)} bytes, {e.expected} more expected"
    if isinstance(e, ConnectionRefusedError):
        return "connect: connection refused"
    if isinstance(e, ssl.SSLError):
        return f"TLS: {e.reason or e}"
    if isinstance(e, socket.timeout | TimeoutError):
        return "i/o timeout"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


class _BodyReader:
    """At most ``size`` bytes of ``f`` from its current position, rewindable, with progress."""

    def __init__(self, f: BinaryIO, size: int, progress: Callable[[int], None] | None = None) -> None:
        self._f = f
        self._start = f.tell()
        self.size = size
        self._left = size
        self._progress = progress

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        if n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        self._left -= len(data)
        if self._progress is not None and data:
            self._progress(len(data))
        if not data and self._left > 0:
            raise ImageError(f"blob reader ended {self._left} bytes early")
        return data

    def rewind(self) -> None:
        self._f.seek(self._start)
        self._left = self.size


# --- the client -----------------------------------------------------------------------------

class RegistryClient:
    def __init__(self, domain: str, authorizer: Authorizer | None = None, *,
                 insecure_registries: Iterable[str] = (), timeout: float = 60.0,
                 user_agent: str = USER_AGENT) -> None:
        if not domain or "/" in domain:
            raise InvalidArgument(f"registry {domain!r}: expected host[:port]")
        self.domain = domain
        self.netloc = DOCKER_HUB_REGISTRY if domain in ("docker.io", "index.docker.io") else domain
        self.insecure = is_insecure_registry(self.netloc, insecure_registries)
        self.authorizer = authorizer or Authorizer()
        self.user_agent = user_agent
        self._pool = _Pool(timeout)
        self._scheme: str | None = None
        self._ready_lock = threading.Lock()

    def close(self) -> None:
        self._pool.close_all()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- set-up

    @property
    def scheme(self) -> str:
        self.ensure_ready()
        assert self._scheme is not None
        return self._scheme

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    def ensure_ready(self) -> None:
        """Decide HTTP or HTTPS and learn the registry's auth challenge (``GET /v2/``)."""
        if self._scheme is not None:
            return
        with self._ready_lock:
            if self._scheme is not None:
                return
            schemes = ["https", "http"] if self.insecure else ["https"]
            last: RegistryError | None = None
            for scheme in schemes:
                url = f"{scheme}://{self.netloc}/v2/"
                try:
                    resp = self._send_once("GET", url, {"User-Agent": self.user_agent}, None)
                except RegistryUnavailable as e:
                    last = e
                    if scheme == "https" and len(schemes) > 1:
                        continue
                    raise
                body = resp.read_all(MAX_ERROR_BODY)
                if resp.status == 401:
                    self.authorizer.learn(self.netloc, parse_challenges(resp.headers.get_all("WWW-Authenticate") or []))
                elif resp.status != 200:
                    raise error_from_response("GET", url, resp.status, resp.reason, body)
                self._scheme = scheme
                return
            assert last is not None
            raise last

    # -- requests

    def _send_once(self, method: str, url: str, headers: dict[str, str],
                   body: bytes | _BodyReader | None) -> Response:
        parts = urllib.parse.urlsplit(url)
        scheme, netloc = parts.scheme, parts.netloc
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        verify = not is_insecure_registry(netloc) and not (netloc == self.netloc and self.insecure)
        for attempt in range(2):
            conn = self._pool.get(scheme, netloc, verify)
            fresh = conn.sock is None
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                # A pooled keep-alive connection the server closed meanwhile: retry on a new one.
                if not fresh and attempt == 0 and isinstance(e, http.client.RemoteDisconnected | BrokenPipeError |
                                                             ConnectionResetError):
                    if isinstance(body, _BodyReader):
                        body.rewind()
                    continue
                raise RegistryUnavailable(f'{_go_method(method)} "{url}": {_reason(e)}',
                                          method=method, url=url) from e
            return Response(self._pool, scheme, netloc, conn, resp, method, url)
        raise AssertionError("unreachable")

    def _auth_header(self, scopes: tuple[str, ...]) -> str | None:
        challenge = self.authorizer.challenge_for(self.netloc)
        if challenge is None:
            return None
        creds = self.authorizer.credentials_for(self.domain)
        if challenge.scheme == "basic":
            return basic_header(creds) if creds is not None else None
        if challenge.scheme == "bearer":
            if creds is not None and creds.registry_token:
                return f"Bearer {creds.registry_token}"
            return "Bearer " + self._token(challenge, scopes, creds)
        return None

    def _token(self, challenge: Challenge, scopes: tuple[str, ...], creds: AuthConfig | None) -> str:
        realm = challenge.params.get("realm", "")
        if not realm:
            raise RegistryUnauthorized(f"registry {self.netloc}: bearer challenge without a realm")
        wanted = merge_scopes("", scopes)
        cached = self.authorizer.cached_token(self.netloc, realm, wanted)
        if cached is not None:
            return cached
        service = challenge.params.get("service", "")
        headers = {"User-Agent": self.user_agent}
        if creds is not None and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "service": service, "client_id": "docker", "scope": " ".join(wanted)}
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            method, url = "POST", realm
        else:
            query = [("service", service)] if service else []
            query += [("scope", s) for s in wanted]
            if creds is not None and creds.username:
                query.append(("account", creds.username))
                headers["Authorization"] = basic_header(creds)
            sep = "&" if "?" in realm else "?"
            method, url, body = "GET", realm + (sep + urllib.parse.urlencode(query) if query else ""), b""
        resp = self._send_follow(method, url, headers, body or None)
        data = resp.read_all(MAX_ERROR_BODY)
        if resp.status != 200:
            err = error_from_response(method, url, resp.status, resp.reason, data)
            raise type(err)(str(err), status=err.status, errors=err.errors, method=method, url=url)
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise RegistryUnauthorized(f'{_go_method(method)} "{realm}": token response is not JSON: {e}') from e
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryUnauthorized(f'{_go_method(method)} "{realm}": token response has no token')
        expires = doc.get("expires_in")
        lifetime = expires if isinstance(expires, int) and expires >= MIN_TOKEN_LIFETIME else MIN_TOKEN_LIFETIME
        self.authorizer.store_token(self.netloc, realm, wanted, token, lifetime)
        return token

    def _send_follow(self, method: str, url: str, headers: dict[str, str],
                     body: bytes | _BodyReader | None) -> Response:
        """Send, following redirects for GET and HEAD (dropping credentials across hosts)."""
        origin = urllib.parse.urlsplit(url).netloc
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._send_once(method, url, headers, body)
            if method not in ("GET", "HEAD") or resp.status not in (301, 302, 303, 307, 308):
                return resp
            location = resp.header("Location")
            resp.read_all(MAX_ERROR_BODY)
            if not location:
                raise RegistryError(f'{_go_method(method)} "{url}": redirect ({resp.status}) without a Location',
                                    status=resp.status, method=method, url=url)
            url = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(url).netloc != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise RegistryError(f'{_go_method(method)} "{url}": stopped after {MAX_REDIRECTS} redirects',
                            method=method, url=url)

    def request(self, method: str, url: str, *, scopes: tuple[str, ...], headers: dict[str, str] | None = None,
                body: bytes | _BodyReader | None = None, ok: tuple[int, ...] = (200,)) -> Response:
        """Send an authenticated request; a status outside ``ok`` raises the registry's error.
        ``url`` is absolute or a path under the registry."""
        self.ensure_ready()
        if url.startswith("/"):
            url = self.base_url + url
        last_header: str | None = None
        for attempt in range(2):
            hdrs = {"User-Agent": self.user_agent}
            hdrs.update(headers or {})
            auth = self._auth_header(scopes)
            if auth is not None:
                hdrs["Authorization"] = auth
            if isinstance(body, _BodyReader) and attempt:
                body.rewind()
            resp = self._send_follow(method, url, hdrs, body)
            if resp.status in ok:
                return resp
            data = resp.read_all(MAX_ERROR_BODY) if method != "HEAD" else b""
            if method == "HEAD":
                resp.close()
            challenges = parse_challenges(resp.headers.get_all("WWW-Authenticate") or [])
            if resp.status == 401 and attempt == 0 and challenges:
                chosen = self.authorizer.learn(self.netloc, challenges)
                if chosen is not None and chosen.scheme == "bearer":
                    realm = chosen.params.get("realm", "")
                    self.authorizer.drop_token(self.netloc, realm, merge_scopes("", scopes))
                last_header = auth
                new_header = self._auth_header(scopes)
                if new_header is None and chosen is not None and chosen.scheme == "basic":
                    raise RegistryUnauthorized(f'{_go_method(method)} "{url}": no basic auth credentials',
                                               status=401, method=method, url=url,
                                               errors=[("UNAUTHORIZED", "authentication required", None)])
                if new_header is not None and new_header != last_header:
                    continue
            raise error_from_response(method, url, resp.status, resp.reason, data, challenges)
        raise AssertionError("unreachable")

    # -- manifests

    def get_manifest(self, repo: str, reference: str, accept: tuple[str, ...] = MANIFEST_ACCEPT
                     ) -> tuple[bytes, str, str]:
        """(document, media type, digest) of a manifest or index by tag or digest, verified:
        a digest reference must match the bytes, and so must the ``Docker-Content-Digest``
        the registry sends."""
        url = f"/v2/{repo}/manifests/{reference}"
        resp = self.request("GET", url, scopes=(repository_scope(repo),), headers={"Accept": ", ".join(accept)})
        content_type = resp.header("Content-Type").split(";", 1)[0].strip()
        header_digest = resp.header("Docker-Content-Digest").strip()
        length = resp.header("Content-Length")
        if length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
            resp.close()
            raise RegistryError(f'Get "{resp.url}": manifest of {length} bytes is larger than the '
                                f"{MAX_MANIFEST_SIZE} bytes allowed", method="GET", url=resp.url)
        data = resp.read_all(MAX_MANIFEST_SIZE)
        digest = _verify_manifest_digest(data, reference, header_digest, resp.url)
        if content_type in SCHEMA1_TYPES:
            raise InvalidArgument(f'Get "{resp.url}": {SCHEMA1_REFUSED}')
        if content_type in MANIFEST_TYPES or content_type in INDEX_TYPES:
            media_type = content_type
        else:
            media_type = detect_media_type(data, f"manifest {repo}:{reference}")
            if media_type in SCHEMA1_TYPES:
                raise InvalidArgument(f'Get "{resp.url}": {SCHEMA1_REFUSED}')
        return data, media_type, digest

    def head_manifest(self, repo: str, reference: str) -> tuple[str, str, int] | None:
        """(digest, media type, size) of a manifest, or None when the registry does not have it."""
        url = f"/v2/{repo}/manifests/{reference}"
        try:
            resp = self.request("HEAD", url, scopes=(repository_scope(repo),),
                                headers={"Accept": ", ".join(MANIFEST_ACCEPT)})
        except RegistryNotFound:
            return None
        resp.close()
        length = resp.header("Content-Length")
        return (resp.header("Docker-Content-Digest"), resp.header("Content-Type").split(";", 1)[0].strip(),
                int(length) if length.isdigit() else -1)

    def put_manifest(self, repo: str, reference: str, media_type: str, data: bytes) -> str:
        """Upload a manifest under a tag or its digest; returns the digest (checked against the
        registry's ``Docker-Content-Digest``)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        url = f"/v2/{repo}/manifests/{reference}"
        resp = self.request("PUT", url, scopes=(repository_scope(repo, push=True),),
                            headers={"Content-Type": media_type, "Content-Length": str(len(data))},
                            body=data, ok=(200, 201, 202))
        resp.read_all(MAX_ERROR_BODY)
        said = resp.header("Docker-Content-Digest").strip()
        if said and said != digest:
            raise RegistryError(f'Put "{resp.url}": registry stored the manifest as {said}, expected {digest}',
                                method="PUT", url=resp.url)
        return digest

    def list_tags(self, repo: str) -> list[str]:
        resp = self.request("GET", f"/v2/{repo}/tags/list", scopes=(repository_scope(repo),))
        data = resp.read_all(MAX_MANIFEST_SIZE)
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise RegistryError(f'Get "{resp.url}": tag list is not JSON: {e}', url=resp.url) from e
        tags = doc.get("tags") if isinstance(doc, dict) else None
        if tags is None:
            return []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise RegistryError(f'Get "{resp.url}": tag list: "tags" is not an array of strings', url=resp.url)
        return tags

    # -- blobs: pull

    def open_blob(self, repo: str, digest: str, offset: int = 0) -> tuple[Response, int]:
        """A response streaming blob ``digest`` from ``offset`` (HTTP Range) and the offset the
        body really starts at (0 when the registry ignored the range)."""
        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", scopes=(repository_scope(repo),),
                            headers=headers, ok=(200, 206))
        if resp.status == 200:
            return resp, 0
        content_range = resp.header("Content-Range")
        start = -1
        if content_range.startswith("bytes "):
            first = content_range[6:].split("-", 1)[0]
            if first.isdigit():
                start = int(first)
        if start != offset:
            resp.close()
            raise RegistryError(f'Get "{resp.url}": asked for bytes from {offset}, got Content-Range '
                                f"{content_range!r}", status=206, method="GET", url=resp.url)
        return resp, start

    def blob_size(self, repo: str, digest: str, *, push: bool = False) -> int | None:
        """The size of a blob the repository holds, or None (``HEAD``)."""
        try:
            resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=(repository_scope(repo, push),))
        except RegistryNotFound:
            return None
        resp.close()
        length = resp.header("Content-Length")
        return int(length) if length.isdigit() else -1

    # -- blobs: push

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> tuple[bool, str]:
        """Cross-repository mount: (True, "") when mounted, else (False, upload location) —
        the registry started an ordinary upload instead."""
        query = urllib.parse.urlencode({"mount": digest, "from": from_repo})
        scopes = tuple(sorted({repository_scope(repo, push=True), repository_scope(from_repo)}))
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?{query}", scopes=scopes,
                            headers={"Content-Length": "0"}, body=b"", ok=(201, 202))
        resp.read_all(MAX_ERROR_BODY)
        if resp.status == 201:
            return True, ""
        return False, self._location(resp)

    def start_upload(self, repo: str) -> str:
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scopes=(repository_scope(repo, push=True),),
                            headers={"Content-Length": "0"}, body=b"", ok=(202,))
        resp.read_all(MAX_ERROR_BODY)
        return self._location(resp)

    def _location(self, resp: Response) -> str:
        loc = resp.header("Location")
        if not loc:
            raise RegistryError(f'{_go_method(resp.method)} "{resp.url}": upload response without a Location',
                                status=resp.status, method=resp.method, url=resp.url)
        return urllib.parse.urljoin(resp.url, loc)

    @staticmethod
    def _with_query(url: str, **params: str) -> str:
        sep = "&" if urllib.parse.urlsplit(url).query else "?"
        return url + sep + urllib.parse.urlencode(params)

    def upload_blob(self, repo: str, location: str, digest: str, f: BinaryIO, size: int, *,
                    chunk_size: int | None = None, progress: Callable[[int], None] | None = None) -> None:
        """Upload ``size`` bytes of ``f`` to an upload session and close it with ``digest``:
        one PUT (monolithic) when ``chunk_size`` is None or the blob fits in one chunk, else
        PATCHes of ``chunk_size`` bytes followed by a PUT. A failed upload is cancelled."""
        scopes = (repository_scope(repo, push=True),)
        try:
            if chunk_size is None or size <= chunk_size:
                body = _BodyReader(f, size, progress)
                resp = self.request("PUT", self._with_query(location, digest=digest), scopes=scopes,
                                    headers={"Content-Type": "application/octet-stream",
                                             "Content-Length": str(size)}, body=body, ok=(201,))
                resp.read_all(MAX_ERROR_BODY)
                return
            offset = 0
            while offset < size:
                n = min(chunk_size, size - offset)
                body = _BodyReader(f, n, progress)
                resp = self.request("PATCH", location, scopes=scopes, body=body, ok=(202,), headers={
                    "Content-Type": "application/octet-stream", "Content-Length": str(n),
                    "Content-Range": f"{offset}-{offset + n - 1}"})
                resp.read_all(MAX_ERROR_BODY)
                got = resp.header("Range")
                if got and got.rpartition("-")[2].isdigit() and int(got.rpartition("-")[2]) != offset + n - 1:
                    raise RegistryError(f'Patch "{location}": registry holds {got}, expected 0-{offset + n - 1}',
                                        method="PATCH", url=location)
                location = self._location(resp)
                offset += n
            resp = self.request("PUT", self._with_query(location, digest=digest), scopes=scopes,
                                headers={"Content-Length": "0"}, body=b"", ok=(201,))
            resp.read_all(MAX_ERROR_BODY)
        except BaseException:
            self._cancel_upload(location, scopes)
            raise

    def _cancel_upload(self, location: str, scopes: tuple[str, ...]) -> None:
        try:
            resp = self.request("DELETE", location, scopes=scopes, ok=(200, 202, 204, 404))
            resp.read_all(MAX_ERROR_BODY)
        except ImageError as e:
            print(f"skiff: cleanup: cancel upload {location}: {e}", file=sys.stderr)


def _verify_manifest_digest(data: bytes, reference: str, header_digest: str, url: str) -> str:
    expected = reference if ":" in reference else header_digest
    algorithm = expected.partition(":")[0] if expected else "sha256"
    if algorithm not in ("sha256", "sha384", "sha512"):
        raise RegistryError(f'Get "{url}": unsupported digest algorithm {algorithm!r}', url=url)
    actual = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    for claimed, what in ((reference if ":" in reference else "", "the requested digest"),
                          (header_digest, "Docker-Content-Digest")):
        if not claimed:
            continue
        validate_digest(claimed)
        if claimed.partition(":")[0] != algorithm:
            claimed_alg = claimed.partition(":")[0]
            actual_other = f"{claimed_alg}:{hashlib.new(claimed_alg, data).hexdigest()}"
            if actual_other != claimed:
                raise ManifestDigestMismatch(f'Get "{url}": manifest verification failed for digest {claimed} '
                                             f"({what}): content has digest {actual_other}", url=url)
        elif claimed != actual:
            raise ManifestDigestMismatch(f'Get "{url}": manifest verification failed for digest {claimed} '
                                         f"({what}): content has digest {actual}", url=url)
    if algorithm != "sha256":
        return actual
    return "sha256:" + hashlib.sha256(data).hexdigest()
