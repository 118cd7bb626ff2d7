"""Image references, parsed and normalised exactly as Docker does.

The grammar is distribution/reference's (v0.6, what Docker 25-27 link)::

    reference       := name [ ":" tag ] [ "@" digest ]
    name            := [domain '/'] remote-name
    domain          := host [':' port-number]
    host            := domain-name | '[' IPv6address ']'
    domain-name     := domain-component ['.' domain-component]*
    domain-component:= /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    remote-name     := path-component ['/' path-component]*
    path-component  := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
    separator       := /[_.]|__|[-]+/
    tag             := /[\\w][\\w.-]{0,127}/
    digest          := algorithm ":" /[0-9a-fA-F]{32,}/   (then checked as go-digest does)

Normalisation (``parse_normalized_named``): a first path element is a registry host when it
is ``localhost``, holds a ``.`` or a ``:``, or has an uppercase letter (a path cannot);
otherwise the host is ``docker.io``. ``index.docker.io`` becomes ``docker.io``, and a one-element
path on ``docker.io`` gets ``library/``. ``parse_docker_ref`` then adds ``latest`` when there is
neither tag nor digest, and drops the tag when there are both (the digest wins), as containerd
and Docker's image service do.

Error messages are Docker's, word for word (the CLI and the Engine API show them as they are):
``invalid reference format``, ``invalid reference format: repository name (library/Busybox)
must be lowercase``, ``repository name must not be more than 255 characters``, go-digest's
``invalid checksum digest length`` ...; the offending input is on the exception's
``reference`` attribute.
"""

from __future__ import annotations

import re

from skiff.images.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
LOCALHOST = "localhost"
NAME_TOTAL_LENGTH_MAX = 255

ERR_REFERENCE_INVALID_FORMAT = "invalid reference format"
ERR_TAG_INVALID_FORMAT = "invalid tag format"
ERR_NAME_CONTAINS_UPPERCASE = "repository name must be lowercase"
ERR_NAME_EMPTY = "repository name must have at least one component"
ERR_NAME_TOO_LONG = f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
ERR_NAME_NOT_CANONICAL = "repository name must be canonical"
ERR_DIGEST_INVALID_FORMAT = "invalid checksum digest format"
ERR_DIGEST_INVALID_LENGTH = "invalid checksum digest length"
ERR_DIGEST_UNSUPPORTED = "unsupported digest algorithm"

# hex length of each digest algorithm Docker accepts (go-digest with crypto/sha256 and sha512)
DIGEST_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = _ALNUM + r"(?:" + _SEPARATOR + _ALNUM + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_AND_PORT = r"(?:" + _DOMAIN_NAME + r"|" + _IPV6 + r")(?::[0-9]+)?"
_NAME = r"(?:" + _DOMAIN_AND_PORT + r"/)?" + _REMOTE_NAME
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"

# re.ASCII: Go's \w is [0-9A-Za-z_]; fullmatch: Go's $ does not match before a final newline.
_REFERENCE_RE = re.compile(r"(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?", re.ASCII)
_NAME_RE = re.compile(r"(?:(" + _DOMAIN_AND_PORT + r")/)?(" + _REMOTE_NAME + r")", re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)
_GO_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", re.ASCII)
_HEX_RE = {alg: re.compile(f"[a-f0-9]{{{n}}}", re.ASCII) for alg, n in DIGEST_ALGORITHMS.items()}


class ReferenceError(InvalidArgument):
    """A string is not a valid image reference (or digest); the message is Docker's."""

    def __init__(self, message: str, reference: str) -> None:
        super().__init__(message)
        self.reference = reference


class Reference:
    """A parsed reference: ``domain`` may be empty (only from ``parse``), ``path`` is empty
    only for a digest-only reference from ``parse_any_reference``; ``tag``/``digest`` may be
    empty."""

    __slots__ = ("digest", "domain", "path", "tag")

    def __init__(self, domain: str, path: str, tag: str = "", digest: str = "") -> None:
        self.domain = domain
        self.path = path
        self.tag = tag
        self.digest = digest

    @property
    def name(self) -> str:
        """The repository name, ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def __repr__(self) -> str:
        return f"Reference({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    @property
    def is_name_only(self) -> bool:
        return not self.tag and not self.digest

    def familiar(self) -> Reference:
        """The short form Docker shows: no ``docker.io/``, no ``library/`` for official images."""
        domain, path = self.domain, self.path
        if domain == DEFAULT_DOMAIN:
            domain = ""
            rest = path.removeprefix(OFFICIAL_REPO_PREFIX)
            if rest != path and "/" not in rest:
                path = rest
        return Reference(domain, path, self.tag, self.digest)

    def familiar_name(self) -> str:
        return self.familiar().name

    def familiar_string(self) -> str:
        return str(self.familiar())

    def with_tag(self, tag: str) -> Reference:
        """This repository with ``tag`` (a digest, if any, is kept, as Go's WithTag does)."""
        if not _TAG_RE.fullmatch(tag):
            raise ReferenceError(ERR_TAG_INVALID_FORMAT, tag)
        return Reference(self.domain, self.path, tag, self.digest)

    def with_digest(self, digest: str) -> Reference:
        """This repository with ``digest`` (a tag, if any, is kept)."""
        if not re.fullmatch(_DIGEST, digest, re.ASCII):
            raise ReferenceError("invalid digest format", digest)
        return Reference(self.domain, self.path, self.tag, validate_digest(digest))

    def trimmed(self) -> Reference:
        """The repository alone (no tag, no digest)."""
        return Reference(self.domain, self.path)


def validate_digest(digest: str) -> str:
    """``digest`` if it is a valid digest of a supported algorithm (go-digest's Validate)."""
    algorithm, sep, encoded = digest.partition(":")
    if not sep or not encoded:
        raise ReferenceError(ERR_DIGEST_INVALID_FORMAT, digest)
    pattern = _HEX_RE.get(algorithm)
    if pattern is None:
        if not _GO_DIGEST_RE.fullmatch(digest):
            raise ReferenceError(ERR_DIGEST_INVALID_FORMAT, digest)
        raise ReferenceError(ERR_DIGEST_UNSUPPORTED, digest)
    if len(encoded) != DIGEST_ALGORITHMS[algorithm]:
        raise ReferenceError(ERR_DIGEST_INVALID_LENGTH, digest)
    if not pattern.fullmatch(encoded):
        raise ReferenceError(ERR_DIGEST_INVALID_FORMAT, digest)
    return digest


def parse(s: str) -> Reference:
    """A reference as written (no normalisation), distribution/reference's ``Parse``."""
    if s == "":
        raise ReferenceError(ERR_NAME_EMPTY, s)
    m = _REFERENCE_RE.fullmatch(s)
    if m is None:
        lower = s.lower()
        if lower != s and _REFERENCE_RE.fullmatch(lower):
            raise ReferenceError(ERR_NAME_CONTAINS_UPPERCASE, s)
        raise ReferenceError(ERR_REFERENCE_INVALID_FORMAT, s)
    name, tag, digest = m.group(1), m.group(2) or "", m.group(3) or ""
    nm = _NAME_RE.fullmatch(name)
    domain, path = (nm.group(1) or "", nm.group(2)) if nm else ("", name)
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise ReferenceError(ERR_NAME_TOO_LONG, s)
    if digest:
        validate_digest(digest)
    return Reference(domain, path, tag, digest)


def _split_docker_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if first == LOCALHOST:
        domain, remote = first, rest
    elif first == LEGACY_DEFAULT_DOMAIN:
        domain, remote = DEFAULT_DOMAIN, rest
    elif "." in first or ":" in first or first.lower() != first:
        domain, remote = first, rest
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_REPO_PREFIX + remote
    return domain, remote


def parse_normalized_named(s: str) -> Reference:
    """A reference in Docker's normalised form: ``busybox`` -> ``docker.io/library/busybox``
    (no tag added; see ``parse_docker_ref``)."""
    if _IDENTIFIER_RE.fullmatch(s):
        raise ReferenceError(f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings", s)
    domain, remainder = _split_docker_domain(s)
    remote = remainder.partition(":")[0]
    if remote.lower() != remote:
        raise ReferenceError(
            f"{ERR_REFERENCE_INVALID_FORMAT}: repository name ({remote}) must be lowercase", s)
    try:
        ref = parse(domain + "/" + remainder)
    except ReferenceError as e:
        raise ReferenceError(str(e), s) from None
    if not ref.path:
        raise ReferenceError(f"reference {ref} has no name", s)
    return ref


def tag_name_only(ref: Reference) -> Reference:
    """``ref`` with tag ``latest`` when it has neither tag nor digest."""
    return Reference(ref.domain, ref.path, DEFAULT_TAG) if ref.is_name_only else ref


def parse_docker_ref(s: str) -> Reference:
    """The name an image is stored under: normalised, ``latest`` by default, digest over tag."""
    ref = parse_normalized_named(s)
    if ref.tag and ref.digest:
        return Reference(ref.domain, ref.path, "", ref.digest)
    return tag_name_only(ref)


def parse_named(s: str) -> Reference:
    """A reference that must already be in canonical form (``docker.io/library/busybox``)."""
    ref = parse_normalized_named(s)
    if str(ref) != s:
        raise ReferenceError(ERR_NAME_NOT_CANONICAL, s)
    return ref


def parse_any_reference(s: str) -> Reference:
    """An image ID (64 hex digits), a digest, or a name; IDs and digests give a Reference
    with an empty name and only ``digest`` set."""
    if _IDENTIFIER_RE.fullmatch(s):
        return Reference("", "", "", "sha256:" + s)
    try:
        return Reference("", "", "", validate_digest(s))
    except ReferenceError:
        pass  # not a digest: a name, parsed below with its own errors
    return parse_normalized_named(s)


def familiar_string(s: str) -> str:
    """``docker.io/library/busybox:latest`` -> ``busybox:latest`` (any accepted input)."""
    return parse_normalized_named(s).familiar_string()
