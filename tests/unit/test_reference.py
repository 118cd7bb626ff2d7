"""Image reference parsing and normalisation, case by case as Docker (distribution/reference v0.6
and go-digest) behaves."""

from __future__ import annotations

import pytest

from skiff.images import reference as r
from skiff.images.errors import InvalidArgument

H64 = "0123456789abcdef" * 4
H128 = H64 * 2

# input -> (parse_docker_ref result, familiar string of it)
VALID = [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox:musl", "docker.io/library/busybox:musl", "busybox:musl"),
    ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest", "busybox:latest"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("user/app/sub:v2", "docker.io/user/app/sub:v2", "user/app/sub:v2"),
    ("library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/app:v1", "localhost:5000/app:v1", "localhost:5000/app:v1"),
    ("localhost", "docker.io/library/localhost:latest", "localhost:latest"),
    ("127.0.0.1:5000/foo/bar", "127.0.0.1:5000/foo/bar:latest", "127.0.0.1:5000/foo/bar:latest"),
    ("example.com/app", "example.com/app:latest", "example.com/app:latest"),
    ("Example.COM/app", "Example.COM/app:latest", "Example.COM/app:latest"),
    ("FOO/bar", "FOO/bar:latest", "FOO/bar:latest"),  # an uppercase first element is a host
    ("registry:5000/app", "registry:5000/app:latest", "registry:5000/app:latest"),
    ("[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000/app:latest"),
    ("[2001:db8::1]/app:tag", "[2001:db8::1]/app:tag", "[2001:db8::1]/app:tag"),
    ("xn--bcher-kva.example/app", "xn--bcher-kva.example/app:latest", "xn--bcher-kva.example/app:latest"),
    ("a-b_c__d/e.f", "docker.io/a-b_c__d/e.f:latest", "a-b_c__d/e.f:latest"),
    # a first element with a dot is taken as a host, but "a-b_c.d__e" is no valid host name, so
    # the grammar reads the whole as a path and the name has no domain at all (Go does the same)
    ("a-b_c.d__e/f", "a-b_c.d__e/f:latest", "a-b_c.d__e/f:latest"),
    ("a---b", "docker.io/library/a---b:latest", "a---b:latest"),
    ("busybox:_x", "docker.io/library/busybox:_x", "busybox:_x"),
    ("busybox:V1.0-RC_2", "docker.io/library/busybox:V1.0-RC_2", "busybox:V1.0-RC_2"),
    ("busybox:" + "t" * 128, "docker.io/library/busybox:" + "t" * 128, "busybox:" + "t" * 128),
    (f"busybox@sha256:{H64}", f"docker.io/library/busybox@sha256:{H64}", f"busybox@sha256:{H64}"),
    (f"busybox:1.0@sha256:{H64}", f"docker.io/library/busybox@sha256:{H64}", f"busybox@sha256:{H64}"),
    (f"busybox@sha512:{H128}", f"docker.io/library/busybox@sha512:{H128}", f"busybox@sha512:{H128}"),
    (f"127.0.0.1:5000/x@sha256:{H64}", f"127.0.0.1:5000/x@sha256:{H64}", f"127.0.0.1:5000/x@sha256:{H64}"),
    ("a" * 300 + ".com/app", "a" * 300 + ".com/app:latest", "a" * 300 + ".com/app:latest"),
    ("docker.io/u/" + "a" * 253, "docker.io/u/" + "a" * 253 + ":latest", "u/" + "a" * 253 + ":latest"),
]

# input -> Docker's error message
INVALID = [
    ("", "invalid reference format"),
    ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
    ("UPPER:tag", "invalid reference format: repository name (library/UPPER) must be lowercase"),
    ("user/Busybox", "invalid reference format: repository name (user/Busybox) must be lowercase"),
    ("localhost/Foo", "invalid reference format: repository name (Foo) must be lowercase"),
    ("busybox:", "invalid reference format"),
    (":latest", "invalid reference format"),
    ("busybox:tag with space", "invalid reference format"),
    ("-busybox", "invalid reference format"),
    ("busybox-", "invalid reference format"),
    ("a__b___c", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("example.com:/app", "invalid reference format"),
    ("busybox:latest\n", "invalid reference format"),
    ("buśybox", "invalid reference format"),
    ("busybox:é", "invalid reference format"),
    ("busybox:-x", "invalid reference format"),
    ("busybox:" + "t" * 129, "invalid reference format"),
    ("busybox@sha256:abc", "invalid reference format"),
    ("busybox@sha256:" + "a" * 40, "invalid checksum digest length"),
    ("busybox@sha256:" + "A" * 64, "invalid checksum digest format"),
    ("busybox@md5:" + "a" * 32, "unsupported digest algorithm"),
    (f"busybox@SHA256:{H64}", "invalid reference format: repository name (library/busybox@SHA256) must be lowercase"),
    (H64, f"invalid repository name ({H64}), cannot specify 64-byte hexadecimal strings"),
    ("docker.io/" + "a" * 248, "repository name must not be more than 255 characters"),  # + library/
    ("u/" + "a" * 254, "repository name must not be more than 255 characters"),
]


@pytest.mark.parametrize(("text", "normalised", "familiar"), VALID, ids=[v[0][:40] for v in VALID])
def test_valid_references_normalise_as_docker_does(text, normalised, familiar):
    ref = r.parse_docker_ref(text)
    assert str(ref) == normalised
    assert ref.familiar_string() == familiar
    # normalising is idempotent
    assert str(r.parse_docker_ref(normalised)) == normalised


@pytest.mark.parametrize(("text", "message"), INVALID, ids=[repr(i[0][:40]) for i in INVALID])
def test_invalid_references_fail_with_dockers_message(text, message):
    with pytest.raises(r.ReferenceError) as info:
        r.parse_docker_ref(text)
    assert str(info.value) == message
    assert info.value.reference == text
    assert isinstance(info.value, InvalidArgument)


def test_table_has_at_least_forty_cases():
    assert len(VALID) + len(INVALID) >= 40


def test_parse_normalized_named_keeps_tag_and_digest_and_adds_no_tag():
    ref = r.parse_normalized_named(f"busybox:1.0@sha256:{H64}")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("docker.io", "library/busybox", "1.0", f"sha256:{H64}")
    bare = r.parse_normalized_named("busybox")
    assert bare.is_name_only and str(bare) == "docker.io/library/busybox"
    assert str(r.tag_name_only(bare)) == "docker.io/library/busybox:latest"


def test_parse_does_not_normalise():
    ref = r.parse("busybox:1")
    assert (ref.domain, ref.path, ref.tag) == ("", "busybox", "1")
    ref = r.parse("localhost:5000/a/b")
    assert (ref.domain, ref.path) == ("localhost:5000", "a/b")
    with pytest.raises(r.ReferenceError, match="^repository name must be lowercase$"):
        r.parse("Busybox")
    with pytest.raises(r.ReferenceError, match="^repository name must have at least one component$"):
        r.parse("")


def test_parse_named_requires_the_canonical_form():
    assert str(r.parse_named("docker.io/library/busybox:latest")) == "docker.io/library/busybox:latest"
    with pytest.raises(r.ReferenceError, match="^repository name must be canonical$"):
        r.parse_named("busybox")


def test_parse_any_reference_accepts_ids_and_digests():
    assert r.parse_any_reference(H64).digest == f"sha256:{H64}"
    assert r.parse_any_reference(H64).name == ""
    assert r.parse_any_reference(f"sha256:{H64}").digest == f"sha256:{H64}"
    assert str(r.parse_any_reference("busybox")) == "docker.io/library/busybox"


def test_with_tag_and_with_digest():
    ref = r.parse_docker_ref("busybox")
    assert str(ref.with_tag("v2")) == "docker.io/library/busybox:v2"
    with pytest.raises(r.ReferenceError, match="^invalid tag format$"):
        ref.with_tag("bad tag")
    assert str(ref.trimmed().with_digest(f"sha256:{H64}")) == f"docker.io/library/busybox@sha256:{H64}"
    with pytest.raises(r.ReferenceError):
        ref.with_digest("sha256:xyz")


@pytest.mark.parametrize(("digest", "message"), [
    (f"sha256:{H64}", None),
    (f"sha384:{'a' * 96}", None),
    ("sha256", "invalid checksum digest format"),
    ("sha256:", "invalid checksum digest format"),
    (":" + H64, "invalid checksum digest format"),
    (f"sha256:{H64}0", "invalid checksum digest length"),
    (f"SHA256:{H64}", "invalid checksum digest format"),
    (f"foo:{H64}", "unsupported digest algorithm"),
])
def test_validate_digest_as_go_digest(digest, message):
    if message is None:
        assert r.validate_digest(digest) == digest
    else:
        with pytest.raises(r.ReferenceError) as info:
            r.validate_digest(digest)
        assert str(info.value) == message


def test_references_compare_and_hash_by_their_string():
    a = r.parse_docker_ref("busybox")
    b = r.parse_docker_ref("docker.io/library/busybox:latest")
    assert a == b and hash(a) == hash(b)
    assert a != r.parse_docker_ref("busybox:1")
    assert r.familiar_string("docker.io/library/busybox:latest") == "busybox:latest"
