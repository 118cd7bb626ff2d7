"""Pull an image from a registry into the content store and record it (containerd's pull).

``pull(ref, content, meta, namespace, platform, progress_cb, auth)``:

1. the reference is normalised as Docker does (``busybox`` -> ``docker.io/library/busybox:latest``);
2. the manifest is fetched by tag or digest with every manifest type accepted, its bytes checked
   against the digest asked for and the one the registry announces; from an index the best
   manifest for the platform is chosen (``linux/amd64`` here unless asked otherwise);
3. the config and the layers are downloaded, several at a time (``max_concurrent_downloads``,
   3 as in Docker), each streamed into a content-store ingest named as containerd names it
   (``layer-sha256:...``). The store hashes what is written; the commit checks digest and size.
   A connection lost mid-blob is retried (``retries`` times) from where the ingest stopped, with
   an HTTP ``Range`` request; an ingest left by an earlier, interrupted pull resumes the same
   way. A blob whose bytes do not match its digest is thrown away and the pull fails with
   Docker's ``filesystem layer verification failed for digest ...``;
4. the manifest (and index) blobs are committed last, with containerd's GC labels pointing at
   what they reference and the ``containerd.io/distribution.source.<registry>`` label (which
   repositories hold the blob: a later push to the same registry mounts from there);
5. ``unpack(manifest_descriptor, content)`` is called if given: the snapshot side's unpacker
   bound to a snapshotter, e.g. ``unpack=lambda d, c: skiff.images.unpack.unpack(d, c,
   snapshotter, snapshotter_name="overlayfs")``; ``content`` is the pull's leased store view;
6. only then is the image recorded in the metadata database (created, or its target updated).

Everything is written under a temporary lease (containerd's), so a garbage collection during the
pull removes nothing of it, and a failed pull leaves no image record: at worst unreferenced
blobs and resumable ingests, which the collector removes later.

Progress events are the JSON messages of Docker's ``POST /images/create`` stream, passed to
``progress_cb`` as dicts: ``{"status": "Pulling from library/busybox", "id": "latest"}``,
per layer (``id`` = the first 12 hex digits of its digest) ``Pulling fs layer``, ``Waiting``,
``Downloading`` (``progressDetail: {current, total}`` and Docker's ``progress`` bar),
``Verifying Checksum``, ``Download complete``, ``Pull complete`` (or ``Already exists``),
``Retrying in N seconds``, then ``Digest: sha256:...`` and ``Status: Downloaded newer image for
busybox:latest`` / ``Status: Image is up to date for busybox:latest``.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

from skiff.images.content import DEFAULT_NAMESPACE, Descriptor
from skiff.images.errors import DigestMismatch, ImageError, InvalidArgument, NotFound, Unavailable
from skiff.images.leases import LeaseManager
from skiff.images.manifest import (
    LABEL_DISTRIBUTION_SOURCE,
    MAX_CONFIG_SIZE,
    PlatformMatcher,
    gc_labels,
    is_index,
    is_manifest,
    no_match_error,
    parse_config,
    parse_index,
    parse_manifest,
    ref_key,
    select_manifests,
)
from skiff.images.metadata import ImageRecord
from skiff.images.reference import Reference, parse_docker_ref, tag_name_only
from skiff.images.registry.auth import AuthConfig, Authorizer, DockerConfig
from skiff.images.registry.client import (
    BLOCK,
    RegistryClient,
    RegistryDenied,
    RegistryError,
    RegistryNotFound,
    RegistryUnavailable,
    code_words,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from skiff.images.content import ContentStore
    from skiff.images.manifest import Platform
    from skiff.images.metadata import MetaDB

    ProgressCallback = Callable[[dict], None]

MAX_CONCURRENT_DOWNLOADS = 3  # Docker's default (--max-concurrent-downloads)
DEFAULT_RETRIES = 5  # Docker's default (--max-download-attempts)
_POOL_SIZE = 8  # threads shared by all pulls (each keeps a metadata connection)
LOCKED_INGEST_PATIENCE = 60.0  # seconds another writer of the same blob may stall before we give up


class LayerVerificationFailed(DigestMismatch):
    """A downloaded blob does not match its digest (Docker's wording)."""


class PlatformMismatch(NotFound):
    pass


class PullCancelled(ImageError):
    pass


# --- progress -------------------------------------------------------------------------------

def short_id(digest: str) -> str:
    return digest.partition(":")[2][:12]


def human_size(n: float) -> str:
    """go-units HumanSize: decimal units, 4 significant digits (``1.23MB``)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000.0
        i += 1
    return f"{n:.4g}{units[i]}"


def progress_bar(current: int, total: int) -> str:
    """Docker's JSONProgress bar (50 cells) and ``current/total``."""
    if total <= 0:
        return f"{human_size(current):>8}"
    pct = min(50, int(current / total * 100) // 2)
    bar = "=" * pct + (">" if pct < 50 else "") + " " * (49 - pct if pct < 50 else 0)
    return f"[{bar}] {human_size(current):>8}/{human_size(total)}"


class Progress:
    """Thread-safe emitter of Docker's progress messages."""

    def __init__(self, cb: ProgressCallback | None) -> None:
        self._cb = cb
        self._lock = threading.Lock()

    def emit(self, status: str, id: str | None = None, *, current: int | None = None,
             total: int | None = None, detail: bool = False, aux: dict | None = None) -> None:
        if self._cb is None:
            return
        msg: dict = {"status": status}
        if current is not None:
            msg["progressDetail"] = {"current": current, "total": total} if total else {"current": current}
            msg["progress"] = progress_bar(current, total or 0)
        elif detail:
            msg["progressDetail"] = {}
        if id is not None:
            msg["id"] = id
        if aux is not None:
            msg = {"progressDetail": {}, "aux": aux}
        with self._lock:
            self._cb(msg)


# --- helpers shared with push ---------------------------------------------------------------

def make_authorizer(auth: object) -> Authorizer:
    """``auth``: an Authorizer, an AuthConfig, a Docker AuthConfig dict, a DockerConfig, or
    None (the Docker CLI's config file)."""
    if isinstance(auth, Authorizer):
        return auth
    if auth is None:
        return Authorizer(DockerConfig())
    if isinstance(auth, dict):
        return Authorizer(AuthConfig.from_json(auth))
    if isinstance(auth, AuthConfig | DockerConfig):
        return Authorizer(auth)
    raise InvalidArgument(f"registry auth: unsupported type {type(auth).__name__}")


def registry_text(e: RegistryError) -> str:
    """The registry's own error text (``manifest unknown: manifest unknown``)."""
    if e.errors:  # Docker reports the first and logs the others
        code, message, _ = e.errors[0]
        return f"{code_words(code)}: {message}" if message else code_words(code)
    return str(e)


def source_label(named: Reference) -> tuple[str, str]:
    """containerd's distribution-source label key and value for a repository."""
    return LABEL_DISTRIBUTION_SOURCE + named.domain, named.path


def _merge_source(current: str, repo: str) -> str:
    repos = [r for r in current.split(",") if r]
    if repo not in repos:
        repos.append(repo)
    return ",".join(repos)


_shared_pool: concurrent.futures.ThreadPoolExecutor | None = None
_shared_pool_lock = threading.Lock()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _shared_pool
    with _shared_pool_lock:
        if _shared_pool is None:
            _shared_pool = concurrent.futures.ThreadPoolExecutor(_POOL_SIZE, thread_name_prefix="skiff-transfer")
        return _shared_pool


def run_limited(tasks: list[Callable[[], object]], limit: int, cancel: threading.Event,
                on_queued: Callable[[int], None] | None = None) -> None:
    """Run ``tasks`` on the shared pool, at most ``limit`` at a time; on the first failure set
    ``cancel``, wait for the running ones, and raise that failure."""
    pending = list(enumerate(tasks))
    running: dict[concurrent.futures.Future, int] = {}
    first_error: BaseException | None = None
    if on_queued is not None:
        for i, _ in pending[limit:]:
            on_queued(i)
    pool = _pool()
    try:
        while pending or running:
            while pending and len(running) < limit and first_error is None:
                i, fn = pending.pop(0)
                running[pool.submit(fn)] = i
            if not running:
                break
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                running.pop(fut)
                exc = fut.exception()
                if exc is not None and first_error is None:
                    first_error = exc
                    cancel.set()
                    pending.clear()
    except BaseException:  # interrupted while waiting: stop the transfers, let them wind down
        cancel.set()
        concurrent.futures.wait(running)
        raise
    if first_error is not None:
        raise first_error


# --- fetching -------------------------------------------------------------------------------

def fetch_blob(client: RegistryClient, repo: str, desc: Descriptor, store: ContentStore, *,
               labels: Mapping[str, str] | None = None, retries: int = DEFAULT_RETRIES,
               cancel: threading.Event | None = None,
               on_bytes: Callable[[int], None] | None = None,
               on_retry: Callable[[int, BaseException], None] | None = None,
               on_verify: Callable[[], None] | None = None,
               retry_delay: float = 0.5) -> None:
    """Download blob ``desc`` into ``store`` (see module doc: resumable, verified)."""
    ref = ref_key(desc)
    attempt = 0
    waited: list = [-1, time.monotonic()]  # (offset of a locked ingest, when it last moved)
    while True:
        if cancel is not None and cancel.is_set():
            raise PullCancelled(f"fetch {desc.digest}: cancelled after another download failed")
        if store.exists(desc.digest):
            return
        try:
            writer = store.writer(ref, desc.digest, desc.size)
        except Unavailable as e:
            # Another pull is writing this blob: wait while it makes progress, then use its blob
            # (or take the ingest over when it gives up).
            offset = _ingest_offset(store, ref)
            now = time.monotonic()
            if offset != waited[0]:
                waited[:] = [offset, now]
            elif now - waited[1] > LOCKED_INGEST_PATIENCE:
                raise Unavailable(f"fetch {desc.digest}: ingest {ref} is locked by another writer that made "
                                  f"no progress for {LOCKED_INGEST_PATIENCE} s") from e
            if cancel is not None and cancel.wait(0.1):
                continue
            if cancel is None:
                time.sleep(0.1)
            continue
        try:
            if writer.offset > desc.size:
                writer.truncate(0)
            if writer.offset < desc.size:
                resp, start = client.open_blob(repo, desc.digest, writer.offset)
                with resp:
                    if start != writer.offset:
                        writer.truncate(0)  # the registry ignored the range: start over
                    if on_bytes is not None:
                        on_bytes(writer.offset)
                    while True:
                        if cancel is not None and cancel.is_set():
                            raise PullCancelled(f"fetch {desc.digest}: cancelled after another download failed")
                        chunk = resp.read(BLOCK)
                        if not chunk:
                            break
                        if writer.offset + len(chunk) > desc.size:
                            raise LayerVerificationFailed(
                                f"filesystem layer verification failed for digest {desc.digest}: the registry "
                                f"sent more than the {desc.size} bytes its descriptor says")
                        writer.write(chunk)
                        if on_bytes is not None:
                            on_bytes(writer.offset)
                if writer.offset != desc.size:
                    raise RegistryUnavailable(f'Get "{resp.url}": body ended after {writer.offset} of '
                                              f"{desc.size} bytes", url=resp.url)
            if on_verify is not None:
                on_verify()
            try:
                writer.commit(desc.size, desc.digest, labels)
            except DigestMismatch as e:
                writer.close()
                store.abort(ref)  # bad bytes must not be resumed from
                raise LayerVerificationFailed(
                    f"filesystem layer verification failed for digest {desc.digest}: {e}") from e
            return
        except RegistryUnavailable as e:
            writer.close()  # keep what arrived: the next attempt resumes from it
            attempt += 1
            if attempt > retries:
                raise
            if on_retry is not None:
                on_retry(attempt, e)
            if cancel is not None and cancel.wait(retry_delay * attempt):
                raise PullCancelled(f"fetch {desc.digest}: cancelled after another download failed") from e
        finally:
            writer.close()


def _ingest_offset(store: ContentStore, ref: str) -> int:
    try:
        return store.status(ref).offset
    except NotFound:
        return -1


def store_bytes(store: ContentStore, ref: str, digest: str, data: bytes,
                labels: Mapping[str, str] | None = None) -> None:
    """Commit a small document we hold (already verified) with ``labels`` merged in; another
    writer committing the same blob at the same time is waited for, not an error."""
    deadline = time.monotonic() + LOCKED_INGEST_PATIENCE
    while True:
        if store.exists(digest):
            if labels:
                store.update_labels(digest, labels, tuple(f"labels.{k}" for k in labels))
            return
        try:
            w = store.writer(ref, digest, len(data))
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        with w:
            if w.offset:
                w.truncate(0)
            w.write(data)
            w.commit(len(data), digest, labels)
        return


def _store_bytes(store: ContentStore, desc: Descriptor, data: bytes, labels: Mapping[str, str]) -> None:
    store_bytes(store, ref_key(desc), desc.digest, data, labels)


def _get_manifest(client: RegistryClient, named: Reference, reference: str) -> tuple[bytes, str, str]:
    try:
        return client.get_manifest(named.path, reference)
    except (RegistryNotFound, RegistryDenied) as e:
        familiar = named.familiar()
        if e.codes[:1] in (["NAME_UNKNOWN"], ["DENIED"]) or isinstance(e, RegistryDenied):
            raise RegistryNotFound(
                f"pull access denied for {familiar.name}, repository does not exist or may require "
                f"'docker login': {registry_text(e)}", status=e.status, errors=e.errors,
                method=e.method, url=e.url) from e
        raise RegistryNotFound(f"manifest for {familiar} not found: {registry_text(e)}", status=e.status,
                               errors=e.errors, method=e.method, url=e.url) from e


# --- pull -----------------------------------------------------------------------------------

def pull(ref: str | Reference, content: ContentStore, meta: MetaDB, namespace: str = DEFAULT_NAMESPACE,
         platform: str | Platform | None = None, progress_cb: ProgressCallback | None = None,
         auth: object = None, *, unpack: Callable[[Descriptor, ContentStore], object] | None = None,
         insecure_registries: Iterable[str] = (), max_concurrent_downloads: int = MAX_CONCURRENT_DOWNLOADS,
         retries: int = DEFAULT_RETRIES, client: RegistryClient | None = None,
         labels: Mapping[str, str] | None = None, retry_delay: float = 0.5,
         layer_ready: Callable[[int, Descriptor, str], object] | None = None) -> ImageRecord:
    """Pull ``ref`` (see module doc) and return the image record. ``layer_ready(index, layer,
    diff_id)``, when given, is called (from the download threads, in any order) as soon as the
    blob of the manifest's layer ``index`` is in the store, downloaded or there already: a
    caller can unpack the layers in order while the later ones still download."""
    named = parse_docker_ref(ref) if isinstance(ref, str) else tag_name_only(ref)
    if not named.path or not named.domain:
        raise InvalidArgument(f"pull {ref}: not a repository reference")
    matcher = PlatformMatcher(platform)
    progress = Progress(progress_cb)
    own_client = client is None
    if client is None:
        client = RegistryClient(named.domain, make_authorizer(auth), insecure_registries=insecure_registries)
    try:
        return _pull(named, content, meta, namespace, matcher, platform is not None, progress, client,
                     unpack, max(1, max_concurrent_downloads), retries, labels or {}, retry_delay, layer_ready)
    finally:
        if own_client:
            client.close()


def _pull(named: Reference, content: ContentStore, meta: MetaDB, namespace: str, matcher: PlatformMatcher,
          explicit_platform: bool, progress: Progress, client: RegistryClient,
          unpack: Callable[[Descriptor, ContentStore], object] | None, limit: int, retries: int,
          labels: Mapping[str, str], retry_delay: float,
          layer_ready: Callable[[int, Descriptor, str], object] | None = None) -> ImageRecord:
    repo = named.path
    reference = named.digest or named.tag
    progress.emit(f"Pulling from {repo}", id=reference)
    src_key, _ = source_label(named)
    with LeaseManager(meta, namespace).temporary() as lease:
        store = content.using(namespace, lease.id)

        def with_source(digest: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
            current = ""
            if store.exists(digest):
                current = store.info(digest).labels.get(src_key, "")
            out = dict(extra or {})
            out[src_key] = _merge_source(current, repo)
            return out

        top_data, top_type, top_digest = _get_manifest(client, named, reference)
        top = Descriptor(top_type, top_digest, len(top_data))
        documents: list[tuple[Descriptor, bytes, set[str] | None]] = []  # parents first
        desc, data = top, top_data
        depth = 0
        while is_index(desc.media_type):
            depth += 1
            if depth > 4:
                raise InvalidArgument(f"pull {named}: indexes nested more than 4 deep")
            index = parse_index(data, desc.media_type, f"index {desc.digest}")
            candidates = select_manifests(index, matcher)
            if not candidates:
                raise no_match_error(matcher)
            chosen = candidates[0]
            documents.append((desc, data, {d.digest for d in index.manifests}))
            child_data, child_type, child_digest = _get_manifest(client, named, chosen.digest)
            if child_digest != chosen.digest or len(child_data) != chosen.size:
                raise LayerVerificationFailed(
                    f"manifest verification failed for digest {chosen.digest}: got {child_digest} "
                    f"({len(child_data)} bytes, descriptor says {chosen.size})")
            desc = Descriptor(chosen.media_type or child_type, chosen.digest, chosen.size,
                              platform=chosen.platform)
            data = child_data
        if not is_manifest(desc.media_type):
            raise InvalidArgument(f"pull {named}: {desc.digest} has media type {desc.media_type}, not an "
                                  "image manifest or index")
        manifest_desc = desc
        manifest = parse_manifest(data, desc.media_type, f"manifest {desc.digest}")
        documents.append((desc, data, None))

        # config first (small): the platform check and the diff IDs come from it
        cancel = threading.Event()
        fetch_blob(client, repo, manifest.config, store, labels=with_source(manifest.config.digest),
                   retries=retries, cancel=cancel, retry_delay=retry_delay)
        config = parse_config(store.read_all(manifest.config.digest, MAX_CONFIG_SIZE),
                              f"image config {manifest.config.digest}")
        if explicit_platform and not matcher.match(config.platform):
            raise PlatformMismatch(
                f"image with reference {named.familiar()} was found but does not match the specified "
                f"platform: wanted {matcher.platform}, actual: {config.platform.normalized()}")
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArgument(f"image {named}: manifest {manifest_desc.digest} lists {len(manifest.layers)} "
                                  f"layers, its config {len(config.diff_ids)} diff IDs")

        ready = None
        if layer_ready is not None:
            diff_ids = list(config.diff_ids)

            def ready(digest: str) -> None:
                for i, layer in enumerate(manifest.layers):
                    if layer.digest == digest:
                        layer_ready(i, layer, diff_ids[i])
        downloaded = _fetch_layers(client, repo, manifest.layers, store, progress, limit, retries, cancel,
                                   with_source, retry_delay, ready)
        for doc_desc, doc_data, children in reversed(documents):  # children before parents
            present = None if children is None else {d for d in children if store.exists(d)}
            _store_bytes(store, doc_desc, doc_data,
                         with_source(doc_desc.digest, gc_labels(doc_desc, doc_data, present)))
        if unpack is not None:
            unpack(manifest_desc, store)
        for layer in downloaded:
            progress.emit("Pull complete", short_id(layer.digest), detail=True)
        name = str(named)
        with meta.transaction() as tx:
            try:
                existing: ImageRecord | None = tx.get_image(namespace, name)
            except NotFound:
                existing = None
            if existing is None:
                record = tx.create_image(namespace, ImageRecord(name, top, dict(labels)))
                up_to_date = False
            else:
                up_to_date = existing.target.digest == top.digest and not downloaded
                new_labels = {**existing.labels, **labels}
                record = tx.update_image(namespace, ImageRecord(name, top, new_labels))
    progress.emit(f"Digest: {top.digest}")
    familiar = str(named.familiar())
    if up_to_date:
        progress.emit(f"Status: Image is up to date for {familiar}")
    else:
        progress.emit(f"Status: Downloaded newer image for {familiar}")
    return record


def _fetch_layers(client: RegistryClient, repo: str, layers: list[Descriptor], store: ContentStore,
                  progress: Progress, limit: int, retries: int, cancel: threading.Event,
                  with_source: Callable[[str], dict[str, str]], retry_delay: float,
                  ready: Callable[[str], None] | None = None) -> list[Descriptor]:
    """Download the layers that are missing; returns those downloaded (in manifest order).
    ``ready(digest)`` is called for each layer blob once it is in the store."""
    todo: list[Descriptor] = []
    seen: set[str] = set()
    for layer in layers:
        if layer.digest in seen:
            continue
        seen.add(layer.digest)
        if store.exists(layer.digest):
            store.update_labels(layer.digest, with_source(layer.digest),
                                tuple(f"labels.{k}" for k in with_source(layer.digest)))
            progress.emit("Already exists", short_id(layer.digest), detail=True)
            if ready is not None:
                ready(layer.digest)
        else:
            todo.append(layer)
            progress.emit("Pulling fs layer", short_id(layer.digest), detail=True)

    def task(layer: Descriptor) -> Callable[[], None]:
        sid = short_id(layer.digest)
        last = [-1]

        def on_bytes(offset: int) -> None:
            step = max(layer.size // 100, 512 * 1024)
            if offset == layer.size or offset - last[0] >= step or last[0] < 0:
                last[0] = offset
                progress.emit("Downloading", sid, current=offset, total=layer.size)

        def on_retry(attempt: int, e: BaseException) -> None:
            secs = max(1, round(retry_delay * attempt))
            progress.emit(f"Retrying in {secs} second{'s' if secs != 1 else ''}", sid, detail=True)

        def run() -> None:
            fetch_blob(client, repo, layer, store, labels=with_source(layer.digest), retries=retries,
                       cancel=cancel, on_bytes=on_bytes, on_retry=on_retry,
                       on_verify=lambda: progress.emit("Verifying Checksum", sid, detail=True),
                       retry_delay=retry_delay)
            progress.emit("Download complete", sid, detail=True)
            if ready is not None:
                ready(layer.digest)
        return run

    run_limited([task(layer) for layer in todo], limit, cancel,
                on_queued=lambda i: progress.emit("Waiting", short_id(todo[i].digest), detail=True))
    return todo
