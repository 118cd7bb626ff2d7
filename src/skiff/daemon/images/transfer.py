"""Image transfers of skiffd over the image library: pull, push, load, save (``docker save``),
import (``docker import``), commit, and registry login.

The library (``skiff.images.pull``, ``push``, ``archive``) works on a content store and a
metadata database; skiffd's images live in containerd. Pull, push, load and save give the
library containerd's content store itself (``cdcontent.ContainerdContent``: blobs stream
between the registry or the archive and containerd, written once, under a containerd lease)
and a private scratch metadata database in a temporary directory for the library's own
records (its lease, the image names it reads or writes). After a pull or a load the image is
unpacked and named in containerd. ``docker import`` still lands in a scratch content store
and is copied into containerd (``ImageService._copy_tree``). Scratch directories are removed
when the operation ends, whatever happened.

Progress messages of the library (Docker's JSON progress: status / id / progressDetail) are
passed on as they come, from the library's threads to the caller's coroutine through a queue.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from skiff.daemon.api.errors import ApiError, Conflict, InvalidParameter, NotFound, Unavailable
from skiff.daemon.containerd.client import Descriptor
from skiff.daemon.images.cdcontent import ContainerdContent
from skiff.daemon.images.service import SNAPSHOTTER, Image, ImageService, familiar, tag_reference
from skiff.images.errors import ImageError
from skiff.images.manifest import (
    MAX_MANIFEST_SIZE,
    children,
    gc_labels,
    is_index,
)
from skiff.images.reference import ReferenceError, parse_docker_ref

log = logging.getLogger("skiff.daemon.images")


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403

NS = "skiffd"
DOCKER_HUB_DOMAIN = "docker.io"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# the fields of a container's Config that an image config keeps (commit)
IMAGE_CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
                     "OnBuild", "StopSignal", "Shell", "Healthcheck", "ArgsEscaped")


class Scratch:
    """A private library content store + metadata database in a temporary directory."""

    def __init__(self, tmp_dir: str | None) -> None:
        from skiff.images.content import ContentStore
        from skiff.images.metadata import MetaDB
        if tmp_dir:
            os.makedirs(tmp_dir, mode=0o700, exist_ok=True)
        self.root = tempfile.mkdtemp(prefix="xfer-", dir=tmp_dir)
        self.meta = MetaDB(os.path.join(self.root, "meta.db"))
        self.store = ContentStore(os.path.join(self.root, "content"), self.meta, NS)

    def close(self) -> None:
        self.meta.close()
        shutil.rmtree(self.root)

    def set_image(self, name: str, target: Any) -> None:
        from skiff.images.metadata import ImageRecord
        with self.meta.transaction() as tx:
            try:
                tx.get_image(NS, name)
                tx.update_image(NS, ImageRecord(name, target))
            except ImageError:
                tx.create_image(NS, ImageRecord(name, target))


def clean_scratch(tmp_dir: str) -> None:
    """At daemon start: remove the scratch stores a killed skiffd left (``xfer-*``, ``load-*``)."""
    try:
        entries = os.listdir(tmp_dir)
    except FileNotFoundError:
        return
    for e in entries:
        if e.startswith(("xfer-", "load-")):
            log.info("removing the scratch store %s left by an earlier run", os.path.join(tmp_dir, e))
            shutil.rmtree(os.path.join(tmp_dir, e))


def authorizer(auth: dict | None) -> Any:
    """The library's Authorizer for the request's credentials; none: anonymous (a daemon never
    reads a CLI's config file)."""
    from skiff.images.registry.auth import AuthConfig, Authorizer
    if auth is None:
        return Authorizer()
    try:
        return Authorizer(AuthConfig.from_json(auth, "X-Registry-Auth"))
    except ImageError as e:
        raise InvalidParameter(str(e)) from None


def lib_desc(d: Descriptor) -> Any:
    from skiff.images.content import Descriptor as LibDescriptor
    return LibDescriptor(d.media_type, d.digest, d.size, d.annotations)


async def name_target(svc: ImageService, desc: Descriptor) -> Descriptor:
    """What a push or save names for the image whose target is ``desc``: the target, or for an
    index of which containerd lacks some manifests, the manifest of this platform (what the
    image is here)."""
    if is_index(desc.media_type):
        data = await svc.cd.read_blob(desc.digest, MAX_MANIFEST_SIZE)
        for kid in children(lib_desc(desc), data):
            if await svc.cd.content_info(kid.digest) is None:
                return await svc._manifest_for(desc)
    return desc


async def import_target(svc: ImageService, scratch: Scratch, target: Any, names: list[str], lease: str) -> Image:
    """Copy the scratch image ``target`` into containerd, unpack it, name it; the image."""
    await svc._copy_tree(scratch.store, target, lease)
    tdesc = Descriptor(target.media_type, target.digest, target.size, dict(target.annotations))
    mdesc = await svc._manifest_for(tdesc)
    await svc.unpack(mdesc, lease)
    await svc.add_image(names, tdesc, lease)
    img = await svc._image_from_target(tdesc)
    img.names = [familiar(n) for n in names]
    return img


class ProgressQueue:
    """Messages from the library's threads to a coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[dict | None] = asyncio.Queue()

    def put(self, msg: dict) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, msg)

    async def run(self, work: Callable[[], Any]) -> AsyncIterator[dict]:
        """Run ``work`` (a coroutine function) while yielding the progress it puts."""
        async def wrapped() -> Any:
            try:
                return await work()
            finally:
                self.queue.put_nowait(None)
        task = asyncio.ensure_future(wrapped())
        try:
            while True:
                msg = await self.queue.get()
                if msg is None:
                    break
                yield msg
            await task     # raises the work's error
        finally:
            if not task.done():
                task.cancel()


def decode_registry_auth(header: str) -> dict | None:
    """``X-Registry-Auth``: base64url (padding optional) JSON AuthConfig; None when absent."""
    if not header:
        return None
    text = header.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError) as e:
        raise InvalidParameter(f"X-Registry-Auth: not base64url-encoded JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidParameter("X-Registry-Auth: expected a JSON object")
    if not any(doc.get(k) for k in ("username", "password", "auth", "identitytoken", "registrytoken")):
        return None
    return doc


def api_error(e: ImageError, what: str) -> ApiError:
    """A library error as skiffd's API error (status from its kind), ``what`` first."""
    from skiff.images.registry.client import RegistryDenied, RegistryNotFound, RegistryUnauthorized
    text = f"{what}: {e}" if what else str(e)
    if isinstance(e, RegistryNotFound):
        return NotFound(text)
    if isinstance(e, RegistryUnauthorized | RegistryDenied):
        return Unauthorized(text) if isinstance(e, RegistryUnauthorized) else Forbidden(text)
    from skiff.images import errors as ie
    if isinstance(e, ie.NotFound):
        return NotFound(text)
    if isinstance(e, ie.InvalidArgument):
        return InvalidParameter(text)
    if isinstance(e, ie.Unavailable):
        return Unavailable(text)
    if isinstance(e, ie.AlreadyExists | ie.FailedPrecondition):
        return Conflict(text)
    return ApiError(text)


# --- pull -----------------------------------------------------------------------------------

def _mirror_netloc(mirror: str) -> tuple[str, bool]:
    """A registry-mirrors entry (``http://127.0.0.1:5000``) -> (host:port, plain HTTP)."""
    import urllib.parse
    u = urllib.parse.urlsplit(mirror if "://" in mirror else "https://" + mirror)
    if not u.netloc:
        raise InvalidParameter(f"registry mirror {mirror!r}: no host")
    return u.netloc, u.scheme == "http"


class LayerUnpacker:
    """Unpacks a pull's layers in manifest order while the later ones still download (as
    Docker extracts a layer as soon as it and those below it are there). The library reports
    each layer blob that is in containerd (``ready``, from its download threads); ``run``
    applies layer 0, 1, ... as each becomes available, one at a time under the image
    service's lock, and returns when ``finish`` was called and nothing ready is left. A layer
    whose snapshot exists already is skipped. The image's own unpack afterwards finds the
    snapshots and only sets the labels."""

    def __init__(self, svc: ImageService, lease: str, where: str) -> None:
        self.svc = svc
        self.lease = lease
        self.where = where
        self.loop = asyncio.get_running_loop()
        self.ready_layers: dict[int, tuple[Any, str]] = {}
        self.changed = asyncio.Event()
        self.finished = False

    def ready(self, index: int, layer: Any, diff_id: str) -> None:
        def mark() -> None:
            self.ready_layers[index] = (layer, diff_id)
            self.changed.set()
        self.loop.call_soon_threadsafe(mark)

    def finish(self) -> None:
        self.finished = True
        self.changed.set()

    async def run(self) -> None:
        parent = ""
        i = 0
        while True:
            while i not in self.ready_layers:
                if self.finished:
                    return
                self.changed.clear()
                await self.changed.wait()
            layer, diff_id = self.ready_layers[i]
            chain = diff_id if not parent else "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()
            async with self.svc._lock:
                if await self.svc.cd.stat_snapshot(chain, SNAPSHOTTER) is None:
                    desc = Descriptor(layer.media_type, layer.digest, layer.size)
                    await self.svc._apply_one(desc, diff_id, chain, parent, self.lease,
                                              f"{self.where}: layer {i} ({layer.digest})")
            parent = chain
            i += 1


def pull_messages(svc: ImageService, ref_text: str, auth: dict | None, platform: str | None,
                  tmp_dir: str | None) -> AsyncIterator[dict]:
    """``POST /images/create?fromImage=``: pull into containerd; yields progress messages."""
    try:
        named = parse_docker_ref(ref_text)
    except ReferenceError as e:
        raise InvalidParameter(f"invalid reference format: {e}") from None
    if not named.tag and not named.digest:
        named = parse_docker_ref(ref_text + ":latest")
    pq = ProgressQueue()

    async def work() -> None:
        from skiff.images.pull import pull
        from skiff.images.registry.client import RegistryClient, RegistryError
        before = await svc.cd.get_image(str(named))
        shown = named.familiar_string()

        def put(msg: dict) -> None:
            # the scratch store is always empty: say "up to date" when the name already pointed
            # at what was pulled
            st = msg.get("status", "")
            if st.startswith("Digest: ") and before is not None and before.target.digest == st[8:].strip():
                state["same"] = True
            if st.startswith("Status: Downloaded newer image for ") and state.get("same"):
                msg = {"status": f"Status: Image is up to date for {shown}"}
            pq.put(msg)
        state: dict[str, bool] = {}
        # the blobs go straight into containerd under this lease; the library's own records
        # (its lease, the image record) go to a scratch metadata database
        lease = await svc._lease()
        scratch = None
        try:
            scratch = await asyncio.to_thread(Scratch, tmp_dir)
            store = ContainerdContent(svc.cd, asyncio.get_running_loop(), lease)

            def do_pull() -> Any:
                sources: list[tuple[str, list[str]]] = []
                if named.domain == DOCKER_HUB_DOMAIN:
                    for m in svc.registry_mirrors:
                        netloc, plain = _mirror_netloc(m)
                        sources.append((netloc, [netloc] if plain else []))
                sources.append((named.domain, []))
                last: Exception | None = None
                for i, (domain, extra_insecure) in enumerate(sources):
                    is_mirror = i < len(sources) - 1
                    client = RegistryClient(domain, authorizer(None if is_mirror else auth),
                                            insecure_registries=[*svc.insecure_registries, *extra_insecure])
                    try:
                        return pull(named, store, scratch.meta, NS, platform=platform,  # type: ignore[arg-type]
                                    progress_cb=put, auth=client.authorizer, client=client,
                                    insecure_registries=svc.insecure_registries, layer_ready=unpacker.ready)
                    except RegistryError as e:
                        if not is_mirror:
                            raise
                        log.info("pull %s from mirror %s: %s; trying the next source", named, domain, e)
                        last = e
                    finally:
                        client.close()
                raise AssertionError(f"unreachable: {last}")
            t0 = time.monotonic()
            unpacker = LayerUnpacker(svc, lease, f"pull {shown}")
            unpacking = asyncio.ensure_future(unpacker.run())
            try:
                record = await asyncio.to_thread(do_pull)
            except BaseException as e:
                # the pull's error is the one raised; the layers' unpacking stops
                unpacker.finish()
                unpacking.cancel()
                try:
                    await unpacking
                except asyncio.CancelledError:
                    pass
                except (ApiError, ImageError) as ue:
                    log.info("pull %s: unpacking the layers failed too: %s", shown, ue)
                if isinstance(e, ImageError):
                    raise pull_error(e, named) from None
                raise
            unpacker.finish()
            t1 = time.monotonic()
            await unpacking          # the layers not applied yet; its error if it failed
            target = record.target
            tdesc = Descriptor(target.media_type, target.digest, target.size, dict(target.annotations))
            async with svc._lock:
                mdesc = await svc._manifest_for(tdesc)
                await svc.unpack(mdesc, lease)
                await svc.add_image([str(named)], tdesc, lease)
            img = await svc._image_from_target(tdesc)
            svc.events.publish("image", "pull", shown, {"name": shown})
            log.info("pulled %s (%s): downloaded in %.2f s, unpacked and named in %.2f s", shown, img.id,
                     t1 - t0, time.monotonic() - t1)
        finally:
            try:
                if scratch is not None:
                    await asyncio.to_thread(scratch.close)
            finally:
                await svc._drop_lease(lease)

    return pq.run(work)


def pull_error(e: ImageError, named: Any) -> ApiError:
    """Docker's words for a failed pull."""
    from skiff.images.pull import registry_text
    from skiff.images.registry.client import RegistryError, RegistryNotFound, RegistryUnauthorized
    shown = named.familiar_string()
    if isinstance(e, RegistryNotFound) or (isinstance(e, RegistryError) and "MANIFEST_UNKNOWN" in e.codes) or \
            (isinstance(e, RegistryError) and "NAME_UNKNOWN" in e.codes):
        text = registry_text(e)
        if "NAME_UNKNOWN" in e.codes or isinstance(e, RegistryUnauthorized):
            return NotFound(f"pull access denied for {named.familiar_name()}, repository does not exist or may "
                            f"require 'docker login': {text}")
        return NotFound(f"manifest for {shown} not found: {text}")
    if isinstance(e, RegistryUnauthorized):
        return NotFound(f"pull access denied for {named.familiar_name()}, repository does not exist or may "
                        f"require 'docker login': {registry_text(e)}")
    return api_error(e, "")


# --- push -----------------------------------------------------------------------------------

def push_messages(svc: ImageService, name: str, tag: str, auth: dict | None,
                  tmp_dir: str | None) -> AsyncIterator[dict]:
    """``POST /images/{name}/push``: the tag given, or every tag of the repository."""
    try:
        repo = parse_docker_ref(name)
    except ReferenceError as e:
        raise InvalidParameter(f"invalid reference format: {e}") from None
    pq = ProgressQueue()

    async def work() -> None:
        from skiff.images.push import push
        refs: list[Any] = []
        explicit = "@" in name or ":" in name.rpartition("/")[2]
        if tag or explicit:
            ref = parse_docker_ref((f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}")
                                   if tag else name)
            refs.append(ref)
        else:
            for img in await svc.images():
                for full in img.full_names:
                    if "@" in full:
                        continue
                    r = parse_docker_ref(full)
                    if r.name == repo.name:
                        refs.append(r)
            if not refs:
                raise NotFound(f"An image does not exist locally with the tag: {repo.familiar_name()}")
        for ref in refs:
            try:
                img = await svc.resolve(str(ref))
            except NotFound:
                raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name()}") from None
            assert img.target is not None
            scratch = await asyncio.to_thread(Scratch, tmp_dir)
            try:
                # the blobs are read from containerd as they are uploaded; the scratch database
                # only names the image for the library
                target = await name_target(svc, img.target)
                await asyncio.to_thread(scratch.set_image, str(ref), lib_desc(target))
                store = ContainerdContent(svc.cd, asyncio.get_running_loop())
                try:
                    await asyncio.to_thread(push, ref, store, scratch.meta, NS, pq.put,  # type: ignore[arg-type]
                                            authorizer(auth), insecure_registries=svc.insecure_registries)
                except ImageError as e:
                    raise api_error(e, "") from None
            finally:
                await asyncio.to_thread(scratch.close)
            svc.events.publish("image", "push", familiar(str(ref)), {"name": familiar(str(ref))})

    return pq.run(work)


def login(server: str, username: str, password: str, identity_token: str = "",
          insecure_registries: list[str] | tuple[str, ...] = ()) -> str:
    """``POST /auth``: check the credentials against the registry (``GET /v2/`` with them, basic
    or bearer-token flow); returns the identity token (none from a plain registry)."""
    import urllib.parse

    from skiff.images.registry.auth import AuthConfig, Authorizer
    from skiff.images.registry.client import RegistryClient, RegistryError
    host = server.strip()
    if "://" in host:
        host = urllib.parse.urlsplit(host).netloc
    host = host.rstrip("/")
    if host.endswith("/v1") or host.endswith("/v2"):
        host = host.rsplit("/", 1)[0]
    if not host or host in ("index.docker.io", "registry-1.docker.io"):
        host = "docker.io"
    creds = AuthConfig(username, password, identity_token=identity_token, server_address=host)
    client = RegistryClient(host, Authorizer(creds), insecure_registries=insecure_registries)
    try:
        try:
            client.ensure_ready()
            resp = client.request("GET", "/v2/", scopes=())
            resp.close()
        except RegistryError as e:
            status = getattr(e, "status", 0)
            if status in (401, 403):
                raise Unauthorized(f"login attempt to {client._scheme or 'https'}://{client.netloc}/v2/ failed with status: "
                                   f"{status} {'Unauthorized' if status == 401 else 'Forbidden'}") from None
            raise api_error(e, f"login to {host}") from None
    finally:
        client.close()
    return ""


# --- save -----------------------------------------------------------------------------------

class _ChunkWriter:
    """A file-like ``write`` that hands chunks to the event loop (the HTTP response)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable[[bytes], Any]) -> None:
        self.loop = loop
        self.send = send
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        if len(self.buf) >= 1 << 20:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buf:
            chunk = bytes(self.buf)
            self.buf.clear()
            asyncio.run_coroutine_threadsafe(self.send(chunk), self.loop).result()


async def save(svc: ImageService, names: list[str], send: Callable[[bytes], Any], tmp_dir: str | None,
               platform: str | None = None) -> None:
    """``GET /images/get``: a docker-archive of the images ``names`` (names or IDs; an ID
    saves the image under every name it has) written through ``send(chunk)``."""
    from skiff.images.archive import save as save_archive
    if not names:
        raise InvalidParameter("save: no image names given")
    scratch = await asyncio.to_thread(Scratch, tmp_dir)
    try:
        save_names: list[str] = []
        for n in names:
            img = await svc.resolve(n)
            assert img.target is not None
            target = await name_target(svc, img.target)
            refs: list[str] = []
            try:
                r = parse_docker_ref(n)
                if not n.startswith("sha256:") and str(r) in img.full_names:
                    refs = [str(r)]
                elif not n.startswith("sha256:") and r.digest:
                    refs = [str(r)]
            except ReferenceError:
                pass
            if not refs:   # by ID: every tag it has
                refs = [fn for fn in img.full_names if "@" not in fn]
            if not refs:
                raise InvalidParameter(f"save: image {n} has no name; saving an untagged image by ID is not "
                                       "supported")
            for ref in refs:
                await asyncio.to_thread(scratch.set_image, ref, lib_desc(target))
                if ref not in save_names:
                    save_names.append(ref)
        loop = asyncio.get_running_loop()
        out = _ChunkWriter(loop, send)
        store = ContainerdContent(svc.cd, loop)

        def do_save() -> None:
            save_archive(save_names, store, scratch.meta, out, NS,  # type: ignore[arg-type]
                         platform=platform, format="docker")
            out.flush()
        try:
            await asyncio.to_thread(do_save)
        except ImageError as e:
            raise api_error(e, "save") from None
    finally:
        await asyncio.to_thread(scratch.close)
    for n in names:
        svc.events.publish("image", "save", n, {"name": n})


# --- load -----------------------------------------------------------------------------------

async def load(svc: ImageService, read: Callable[[int], Any], tmp_dir: str | None) -> list[dict[str, str]]:
    """``POST /images/load``: a docker-archive or OCI archive read through ``read(n)`` (b"" at
    the end), its blobs written straight into containerd as the archive is read; returns the
    result messages (``{"stream": "Loaded image: busybox:latest\\n"}``)."""
    from skiff.images.archive import load as load_archive
    loop = asyncio.get_running_loop()

    class Reader:
        def read(self, n: int = -1) -> bytes:
            return asyncio.run_coroutine_threadsafe(read(n if n > 0 else 1 << 20), loop).result()

    messages: list[dict[str, str]] = []
    lease = await svc._lease()
    scratch = None
    try:
        scratch = await asyncio.to_thread(Scratch, tmp_dir)
        store = ContainerdContent(svc.cd, loop, lease)
        meta = scratch.meta

        def do_load() -> list[Any]:
            return load_archive(Reader(), store, meta, NS,  # type: ignore[arg-type]
                                progress_cb=messages.append, where="archive")
        t0 = time.monotonic()
        try:
            loaded = await asyncio.to_thread(do_load)
        except ImageError as e:
            raise InvalidParameter(str(e)) from None
        t1 = time.monotonic()
        async with svc._lock:
            for img in loaded:
                mdesc = Descriptor(img.manifest.media_type, img.manifest.digest, img.manifest.size)
                await svc.unpack(mdesc, lease)
                target = Descriptor(img.target.media_type, img.target.digest, img.target.size,
                                    dict(img.target.annotations))
                await svc.add_image(list(img.names), target, lease)
        log.info("load: %d image(s) read and stored in %.2f s, unpacked and named in %.2f s", len(loaded),
                 t1 - t0, time.monotonic() - t1)
    finally:
        try:
            if scratch is not None:
                await asyncio.to_thread(scratch.close)
        finally:
            await svc._drop_lease(lease)
    for img in loaded:
        for name in img.names:
            svc.events.publish("image", "load", img.config_digest, {"name": familiar(name)})
        if not img.names:
            svc.events.publish("image", "load", img.config_digest, {"name": img.config_digest})
    return messages


# --- import ---------------------------------------------------------------------------------

async def import_image(svc: ImageService, read: Callable[[int], Any], repo: str, tag: str,
                       changes: list[str], message: str, platform: str | None,
                       tmp_dir: str | None) -> Image:
    """``POST /images/create?fromSrc=-``: the request body (a rootfs tarball, maybe compressed)
    as a one-layer image named ``repo:tag`` (unnamed when no repo)."""
    from skiff.images.archive import import_rootfs
    name = str(tag_reference(f"{repo}:{tag}" if tag else repo, "import: cannot import to a digest reference")) if repo else None
    loop = asyncio.get_running_loop()

    class Reader:
        def read(self, n: int = -1) -> bytes:
            return asyncio.run_coroutine_threadsafe(read(n if n > 0 else 1 << 20), loop).result()

    scratch = await asyncio.to_thread(Scratch, tmp_dir)
    try:
        try:
            loaded = await asyncio.to_thread(import_rootfs, Reader(), scratch.store, scratch.meta, NS,  # type: ignore[arg-type]
                                             ref=name, changes=changes, message=message, platform=platform)
        except ImageError as e:
            raise api_error(e, "import") from None
        async with svc._lock:
            lease = await svc._lease()
            try:
                img = await import_target(svc, scratch, loaded.target, [name] if name else [], lease)
            finally:
                await svc._drop_lease(lease)
    finally:
        await asyncio.to_thread(scratch.close)
    svc.events.publish("image", "import", img.id, {"name": img.id})
    return img


# --- commit ---------------------------------------------------------------------------------

def _now_rfc3339() -> str:
    t = _dt.datetime.now(_dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


async def commit(svc: ImageService, *, container_id: str, container_name: str, image_id: str,
                 container_config: dict,
                 repo: str, tag: str, comment: str, author: str, changes: list[str],
                 pause: Callable[[], Any] | None, resume: Callable[[], Any] | None) -> str:
    """``POST /commit``: the container's changes (its snapshot against the image's top
    snapshot, by containerd's Diff service) as a new layer on top of its image; a new config
    from the image's with ``container_config`` (the container's Config) and ``changes``
    applied. Returns the new image ID. ``pause``/``resume`` bracket the diff when given."""
    from skiff.images.archive import apply_changes
    name = str(tag_reference(f"{repo}:{tag}" if tag else repo, "commit: cannot commit to a digest reference")) if repo else None
    base = await svc.resolve(image_id)
    try:
        new_cfg = apply_changes(dict(container_config), changes)
    except ImageError as e:
        raise InvalidParameter(f"commit: changes: {e}") from None
    async with svc._lock:
        lease = await svc._lease()
        view = f"commit-view-{container_id[:12]}-{os.urandom(4).hex()}"
        try:
            lower: list[Any] = []
            if base.chain_id:
                resp = await svc.cd._call(svc.cd.snapshots.View, svc.cd.api.snapshots.ViewSnapshotRequest(
                    snapshotter=SNAPSHOTTER, key=view, parent=base.chain_id), lease)
                lower = svc.cd._mounts(resp.mounts)
            upper = await svc.cd.snapshot_mounts(container_id, SNAPSHOTTER)
            if pause is not None:
                await pause()
            try:
                resp = await svc.cd._call(svc.cd.diff.Diff, svc.cd.api.diff.DiffRequest(
                    left=svc.cd._mounts_pb(lower), right=svc.cd._mounts_pb(upper),
                    media_type="application/vnd.oci.image.layer.v1.tar+gzip",
                    ref=f"commit-{container_id[:12]}-{os.urandom(4).hex()}"), lease)
            finally:
                if resume is not None:
                    await resume()
            layer = svc.cd._desc(resp.diff)
            info = await svc.cd.content_info(layer.digest)
            diff_id = ((info or {}).get("labels") or {}).get("containerd.io/uncompressed", "")
            if not diff_id:
                raise ApiError(f"commit {container_id[:12]}: the diff {layer.digest} has no uncompressed digest")
            raw = json.loads(json.dumps(base.config))
            raw["config"] = new_cfg
            raw["created"] = _now_rfc3339()
            if author:
                raw["author"] = author
            else:
                raw.pop("author", None)
            raw.pop("comment", None)        # as dockerd: the message is in the history entry
            raw.setdefault("rootfs", {"type": "layers", "diff_ids": []})
            raw["rootfs"]["diff_ids"] = [*base.diff_ids, diff_id]
            hist = {"created": raw["created"], "created_by": " ".join(
                (container_config.get("Entrypoint") or []) + (container_config.get("Cmd") or []))}
            if author:
                hist["author"] = author
            if comment:
                hist["comment"] = comment
            raw["history"] = [*(raw.get("history") or []), hist]
            raw.pop("container", None)
            raw.pop("container_config", None)
            cdata = _canonical(raw)
            cdigest = "sha256:" + hashlib.sha256(cdata).hexdigest()
            await svc.cd.write_blob(f"commit-{cdigest}", cdata, cdigest, lease=lease)
            layers = [{"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d in base.layers]
            layers.append({"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size})
            config_media = "application/vnd.oci.image.config.v1+json"
            manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": config_media, "digest": cdigest, "size": len(cdata)},
                        "layers": layers}
            mdata = _canonical(manifest)
            mdesc = Descriptor("application/vnd.oci.image.manifest.v1+json",
                               "sha256:" + hashlib.sha256(mdata).hexdigest(), len(mdata))
            labels = gc_labels(lib_desc(mdesc), mdata)
            await svc.cd.write_blob(f"commit-{mdesc.digest}", mdata, mdesc.digest, labels=labels, lease=lease)
            await svc.unpack(mdesc, lease)
            await svc.add_image([name] if name else [], mdesc, lease)
            svc.events.publish("container", "commit", container_id, {
                "name": container_name.lstrip("/"), "comment": comment, "imageID": cdigest,
                "imageRef": familiar(name) if name else cdigest})
        finally:
            try:
                await svc.cd.remove_snapshot(view, SNAPSHOTTER)
            except NotFound:
                pass
            except ApiError as e:
                log.error("commit %s: remove view snapshot %s: %s", container_id[:12], view, e)
            await svc._drop_lease(lease)
    return cdigest


