"""Registry authentication: credentials, ``WWW-Authenticate`` challenges, basic and bearer.

Where credentials come from:

- an ``AuthConfig`` given by the caller: what the Docker CLI sends in ``X-Registry-Auth``
  (``username``/``password``, or ``identitytoken`` for the OAuth2 refresh-token flow, or a
  ready ``registrytoken``); ``AuthConfig.from_header`` decodes that header;
- else the Docker CLI's config file, ``$DOCKER_CONFIG/config.json`` or
  ``~/.docker/config.json``: ``auths[<registry>].auth`` (base64 of ``user:password``), or
  ``username``/``password``/``identitytoken`` fields. Docker Hub's key is
  ``https://index.docker.io/v1/``; other keys may carry a scheme and path, which are ignored.
  Credential helpers (``credsStore``, ``credHelpers``) run external programs; they are not
  supported, and asking for a registry's credentials when one applies raises
  ``CredentialHelperNotSupported`` (only when the registry actually asks for credentials, so
  anonymous pulls still work with such a config).

The flow is the one of the distribution spec and Docker: a request is sent without
credentials; a 401 names the scheme in ``WWW-Authenticate``. ``Basic``: the credentials are
sent with every later request to that host. ``Bearer realm=..,service=..,scope=..``: a token is
fetched from the realm (GET with basic credentials if there are any, or POST of a refresh token
for an identity token), for the scopes the request needs (``repository:NAME:pull[,push]``),
cached until it expires, and sent as ``Authorization: Bearer``. An ``error=insufficient_scope``
challenge for a token that already holds the scope means access is denied.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.parse

from skiff.images.errors import ImageError, InvalidArgument

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
TOKEN_DEFAULT_EXPIRY = 60  # seconds, when the token server gives no expires_in (as Docker assumes)


class AuthError(ImageError):
    """Authentication against a registry (or its token server) failed."""


class CredentialHelperNotSupported(AuthError):
    """The Docker config sends this registry's credentials to a credential helper program."""


class AuthConfig:
    """Credentials for one registry, in Docker's AuthConfig shape."""

    __slots__ = ("identity_token", "password", "registry_token", "server_address", "username")

    def __init__(self, username: str = "", password: str = "", *, identity_token: str = "",
                 registry_token: str = "", server_address: str = "") -> None:
        self.username = username
        self.password = password
        self.identity_token = identity_token
        self.registry_token = registry_token
        self.server_address = server_address

    def __repr__(self) -> str:  # never show secrets
        return f"AuthConfig(username={self.username!r}, server_address={self.server_address!r})"

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    @classmethod
    def from_json(cls, doc: object, where: str = "auth config") -> AuthConfig:
        if not isinstance(doc, dict):
            raise InvalidArgument(f"{where}: expected a JSON object")
        fields = {}
        for key in ("username", "password", "auth", "identitytoken", "registrytoken", "serveraddress"):
            value = doc.get(key, doc.get(key.capitalize(), ""))  # Docker accepts "Username" too
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise InvalidArgument(f"{where}: {key}: expected a string")
            fields[key] = value
        username, password = fields["username"], fields["password"]
        if fields["auth"]:
            username, password = decode_auth(fields["auth"], f"{where}: auth")
        return cls(username, password, identity_token=fields["identitytoken"],
                   registry_token=fields["registrytoken"], server_address=fields["serveraddress"])

    @classmethod
    def from_header(cls, value: str) -> AuthConfig:
        """Decode Docker's ``X-Registry-Auth`` header (URL-safe base64 of the JSON)."""
        if not value:
            return cls()
        padded = value + "=" * (-len(value) % 4)
        try:
            raw = base64.urlsafe_b64decode(padded.encode("ascii"))
            doc = json.loads(raw)
        except (ValueError, UnicodeError) as e:
            raise InvalidArgument(f"X-Registry-Auth header: not base64-encoded JSON: {e}") from e
        return cls.from_json(doc, "X-Registry-Auth header")


def decode_auth(value: str, where: str) -> tuple[str, str]:
    """``base64("user:password")`` -> (user, password), as the ``auth`` field stores them."""
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (ValueError, UnicodeError) as e:
        raise InvalidArgument(f"{where}: not base64 of 'user:password': {e}") from e
    user, sep, password = raw.partition(":")
    if not sep:
        raise InvalidArgument(f"{where}: decoded value has no ':' between user and password")
    return user, password


def registry_key(server: str) -> str:
    """The host[:port] a config key or server address names (scheme and path dropped)."""
    s = server.strip()
    if "://" in s:
        s = urllib.parse.urlsplit(s).netloc or s
    s = s.split("/", 1)[0]
    return "docker.io" if s in _DOCKER_HUB_HOSTS else s


class DockerConfig:
    """The ``auths`` of a Docker CLI config file (read once, when first needed)."""

    def __init__(self, path: str | None = None) -> None:
        if path is None:
            base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
            path = os.path.join(base, "config.json")
        self.path = path
        self._lock = threading.Lock()
        self._loaded = False
        self._auths: dict[str, AuthConfig] = {}
        self._creds_store = ""
        self._cred_helpers: dict[str, str] = {}

    def _load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            try:
                with open(self.path, "rb") as f:
                    doc = json.load(f)
            except FileNotFoundError:
                doc = {}
            except OSError as e:
                raise AuthError(f"read Docker config {self.path}: {e.strerror}") from e
            except ValueError as e:
                raise AuthError(f"Docker config {self.path}: not valid JSON: {e}") from e
            if not isinstance(doc, dict):
                raise AuthError(f"Docker config {self.path}: expected a JSON object")
            auths = doc.get("auths") or {}
            if not isinstance(auths, dict):
                raise AuthError(f"Docker config {self.path}: auths: expected an object")
            parsed = {}
            for key, entry in auths.items():
                cfg = AuthConfig.from_json(entry, f"Docker config {self.path}: auths[{key!r}]")
                if not cfg.empty:
                    parsed[registry_key(key)] = cfg
            store = doc.get("credsStore") or ""
            helpers = doc.get("credHelpers") or {}
            if not isinstance(store, str) or not isinstance(helpers, dict):
                raise AuthError(f"Docker config {self.path}: credsStore/credHelpers: unexpected type")
            self._auths = parsed
            self._creds_store = store
            self._cred_helpers = {registry_key(k): str(v) for k, v in helpers.items()}
            self._loaded = True

    def credentials(self, host: str) -> AuthConfig | None:
        """The credentials for registry ``host`` (``docker.io`` for Docker Hub), or None."""
        self._load()
        key = registry_key(host)
        helper = self._cred_helpers.get(key)
        if helper:
            raise CredentialHelperNotSupported(
                f"Docker config {self.path}: credHelpers names the credential helper "
                f"docker-credential-{helper} for {key}: credential helpers are not supported; "
                f"put the credentials in \"auths\" (docker login with no credsStore)")
        found = self._auths.get(key)
        if found is None and self._creds_store:
            raise CredentialHelperNotSupported(
                f"Docker config {self.path}: credsStore names the credential helper "
                f"docker-credential-{self._creds_store}, which would hold the credentials for "
                f"{key}: credential helpers are not supported; put the credentials in \"auths\"")
        return found


# --- challenges -----------------------------------------------------------------------------

class Challenge:
    __slots__ = ("params", "scheme")

    def __init__(self, scheme: str, params: dict[str, str]) -> None:
        self.scheme = scheme  # lower case: "basic", "bearer"
        self.params = params

    def __repr__(self) -> str:
        return f"Challenge({self.scheme!r}, {self.params!r})"


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _skip(value: str, i: int, chars: str) -> int:
    while i < len(value) and value[i] in chars:
        i += 1
    return i


def _token_at(value: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(value) and value[j] in _TOKEN_CHARS:
        j += 1
    return value[i:j], j


def _quoted_at(value: str, i: int) -> tuple[str, int]:
    """The quoted string starting at ``value[i] == '"'`` (backslash escapes) and the index after it."""
    buf = []
    i += 1
    while i < len(value) and value[i] != '"':
        if value[i] == "\\" and i + 1 < len(value):
            i += 1
        buf.append(value[i])
        i += 1
    return "".join(buf), i + 1


def parse_challenges(values: list[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values (RFC 7235: several challenges per value,
    parameters as ``key=token`` or ``key="quoted \\" string"``)."""
    out: list[Challenge] = []
    for value in values:
        i, n = 0, len(value)
        current: Challenge | None = None
        while True:
            i = _skip(value, i, " \t,")
            if i >= n:
                break
            word, j = _token_at(value, i)
            if not word:
                break  # garbage: stop parsing this value
            k = _skip(value, j, " \t")
            if k < n and value[k] == "=" and current is not None:
                k = _skip(value, k + 1, " \t")
                if k < n and value[k] == '"':
                    param, k = _quoted_at(value, k)
                else:  # unquoted: lenient, up to the next comma or blank (URLs are not tokens)
                    end = k
                    while end < n and value[end] not in ", \t":
                        end += 1
                    param, k = value[k:end], end
                current.params[word.lower()] = param
                i = k
            else:
                current = Challenge(word.lower(), {})
                out.append(current)
                i = j
    return out


# --- the authorizer -------------------------------------------------------------------------

class _Token:
    __slots__ = ("expires", "value")

    def __init__(self, value: str, expires: float) -> None:
        self.value = value
        self.expires = expires


class Authorizer:
    """Per-registry authentication state, shared by the threads of one pull or push.

    ``credentials`` is an ``AuthConfig`` (used for any host), a ``DockerConfig``, a callable
    ``host -> AuthConfig | None``, or None (anonymous). ``fetch_token`` is set by the registry
    client (it performs the HTTP request to the token realm).
    """

    def __init__(self, credentials: object = None) -> None:
        self._credentials = credentials
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, str, tuple[str, ...]], _Token] = {}
        self._creds_cache: dict[str, AuthConfig | None] = {}

    def credentials_for(self, host: str) -> AuthConfig | None:
        with self._lock:
            if host in self._creds_cache:
                return self._creds_cache[host]
        src = self._credentials
        if src is None:
            found = None
        elif isinstance(src, AuthConfig):
            found = None if src.empty else src
        elif isinstance(src, DockerConfig):
            found = src.credentials(host)
        elif callable(src):
            found = src(host)
        else:
            raise InvalidArgument(f"registry credentials: unsupported type {type(src).__name__}")
        with self._lock:
            self._creds_cache[host] = found
        return found

    def challenge_for(self, host: str) -> Challenge | None:
        with self._lock:
            return self._challenges.get(host)

    def learn(self, host: str, challenges: list[Challenge]) -> Challenge | None:
        """Remember the scheme a 401 asked for (bearer preferred over basic)."""
        chosen = None
        for scheme in ("bearer", "basic"):
            for c in challenges:
                if c.scheme == scheme:
                    chosen = c
                    break
            if chosen is not None:
                break
        if chosen is not None:
            with self._lock:
                self._challenges[host] = chosen
        return chosen

    def cached_token(self, host: str, realm: str, scopes: tuple[str, ...]) -> str | None:
        with self._lock:
            tok = self._tokens.get((host, realm, scopes))
        if tok is not None and tok.expires > time.monotonic() + 5:
            return tok.value
        return None

    def store_token(self, host: str, realm: str, scopes: tuple[str, ...], value: str, expires_in: float) -> None:
        with self._lock:
            self._tokens[(host, realm, scopes)] = _Token(value, time.monotonic() + expires_in)

    def drop_token(self, host: str, realm: str, scopes: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop((host, realm, scopes), None)


def basic_header(creds: AuthConfig) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def merge_scopes(challenge_scope: str, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """The scopes to ask a token for: what the request needs plus what the challenge named."""
    scopes = set(wanted)
    for s in challenge_scope.split(" "):
        if s:
            scopes.add(s)
    return tuple(sorted(scopes))


def repository_scope(path: str, push: bool = False) -> str:
    return f"repository:{path}:{'pull,push' if push else 'pull'}"
