"""Push an image from the content store to a registry (Docker's ``docker push``).

``push(ref, content, meta, namespace, progress_cb, auth)`` pushes the image recorded under
``ref`` (normalised as Docker does; ``source`` names another local image to push under this
name, as ``docker tag`` + ``docker push`` would):

- for an index, each of its manifests that the store holds completely is pushed by digest, then
  the index (a missing child is an error, unless ``platform`` selects one manifest, which is
  then pushed alone under the tag);
- each blob (config and layers) is checked with ``HEAD`` first; a blob the registry lacks is
  mounted from another repository of the same registry when the store's
  ``containerd.io/distribution.source.<registry>`` label names one (cross-repository mount),
  else uploaded: in one ``PUT`` up to ``chunk_size`` bytes, in ``PATCH`` chunks of
  ``chunk_size`` above (``chunk_size=None``: always monolithic). Uploads run
  ``max_concurrent_uploads`` at a time (5, as Docker);
- the manifest goes last, under the tag (or its digest for a digest reference); the registry's
  ``Docker-Content-Digest`` must match ours;
- the pushed blobs get the distribution-source label for this repository, so later pushes to
  other repositories of the registry can mount them.

Progress events are Docker's push stream: ``The push refers to repository [HOST/REPO]``, per
layer ``Preparing``, ``Waiting``, ``Pushing`` (with progressDetail), ``Pushed``, ``Layer already
exists`` or ``Mounted from REPO``, then ``TAG: digest: sha256:... size: N`` and an ``aux``
message ``{"Tag", "Digest", "Size"}``.
"""

from __future__ import annotations

import threading

from skiff.images.content import DEFAULT_NAMESPACE, Descriptor
from skiff.images.errors import FailedPrecondition, InvalidArgument, NotFound
from skiff.images.manifest import (
    LABEL_DISTRIBUTION_SOURCE,
    PlatformMatcher,
    is_index,
    is_manifest,
    no_match_error,
    parse_index,
    parse_manifest,
    select_manifests,
)
from skiff.images.pull import (
    Progress,
    _merge_source,
    make_authorizer,
    run_limited,
    short_id,
    source_label,
)
from skiff.images.reference import Reference, parse_docker_ref, tag_name_only
from skiff.images.registry.client import RegistryClient, RegistryError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from skiff.images.content import ContentStore
    from skiff.images.manifest import Platform
    from skiff.images.metadata import MetaDB

    ProgressCallback = Callable[[dict], None]

MAX_CONCURRENT_UPLOADS = 5  # Docker's default (--max-concurrent-uploads)
DEFAULT_CHUNK_SIZE = 32 << 20  # blobs above this go up in PATCH chunks of this size
MAX_DOCUMENT_SIZE = 4 << 20


class PushError(FailedPrecondition):
    pass


def push(ref: str | Reference, content: ContentStore, meta: MetaDB, namespace: str = DEFAULT_NAMESPACE,
         progress_cb: ProgressCallback | None = None, auth: object = None, *,
         source: str | None = None, platform: str | Platform | None = None,
         insecure_registries: Iterable[str] = (), max_concurrent_uploads: int = MAX_CONCURRENT_UPLOADS,
         chunk_size: int | None = DEFAULT_CHUNK_SIZE, client: RegistryClient | None = None) -> Descriptor:
    """Push (see module doc); returns the descriptor of what the tag now points at."""
    named = parse_docker_ref(ref) if isinstance(ref, str) else tag_name_only(ref)
    if not named.domain or not named.path:
        raise InvalidArgument(f"push {ref}: not a repository reference")
    local_name = str(parse_docker_ref(source)) if source else str(named)
    with meta.view() as tx:
        try:
            record = tx.get_image(namespace, local_name)
        except NotFound:
            shown = parse_docker_ref(local_name).familiar()
            raise NotFound(f"An image does not exist locally with the tag: {shown.familiar_name()}") from None
    store = content.using(namespace)
    progress = Progress(progress_cb)
    own_client = client is None
    if client is None:
        client = RegistryClient(named.domain, make_authorizer(auth), insecure_registries=insecure_registries)
    try:
        progress.emit(f"The push refers to repository [{named.familiar_name()}]")
        target = record.target
        if platform is not None and is_index(target.media_type):
            target = _select(store, target, PlatformMatcher(platform))
        manifests, documents = _walk(store, target)
        _push_blobs(client, store, named, manifests, progress, max(1, max_concurrent_uploads), chunk_size)
        reference = named.digest or named.tag
        for desc, data in documents:
            is_top = desc.digest == target.digest
            where = reference if is_top else desc.digest
            digest = client.put_manifest(named.path, where, desc.media_type, data)
            if digest != desc.digest:
                raise PushError(f"push {named}: manifest {desc.digest} was stored as {digest}")
        key, repo = source_label(named)
        for desc, _ in documents:
            _label_source(store, desc.digest, key, repo)
        tag = named.tag or named.digest
        progress.emit(f"{tag}: digest: {target.digest} size: {target.size}")
        progress.emit("", aux={"Tag": tag, "Digest": target.digest, "Size": target.size})
        return Descriptor(target.media_type, target.digest, target.size, platform=target.platform)
    finally:
        if own_client:
            client.close()


def _select(store: ContentStore, index_desc: Descriptor, matcher: PlatformMatcher) -> Descriptor:
    data = store.read_all(index_desc.digest, MAX_DOCUMENT_SIZE)
    index = parse_index(data, index_desc.media_type, f"index {index_desc.digest}")
    for candidate in select_manifests(index, matcher):
        if store.exists(candidate.digest):
            return candidate
    raise no_match_error(matcher, f"index {index_desc.digest}")


def _walk(store: ContentStore, target: Descriptor) -> tuple[list[tuple[Descriptor, list[Descriptor]]],
                                                            list[tuple[Descriptor, bytes]]]:
    """The image manifests with their blobs, and every manifest/index document in the order
    to upload them (children first)."""
    manifests: list[tuple[Descriptor, list[Descriptor]]] = []
    documents: list[tuple[Descriptor, bytes]] = []

    def visit(desc: Descriptor, where: str, depth: int) -> None:
        if depth > 4:
            raise PushError(f"{where}: indexes nested more than 4 deep")
        if not store.exists(desc.digest):
            raise PushError(f"{where}: content {desc.digest} ({desc.media_type}) is missing from the "
                            "content store: the image is incomplete (pull it again, or push one platform "
                            "with a platform argument)")
        data = store.read_all(desc.digest, MAX_DOCUMENT_SIZE)
        if is_index(desc.media_type):
            index = parse_index(data, desc.media_type, f"index {desc.digest}")
            for i, child in enumerate(index.manifests):
                visit(child, f"index {desc.digest}: manifests[{i}]", depth + 1)
        elif is_manifest(desc.media_type):
            m = parse_manifest(data, desc.media_type, f"manifest {desc.digest}")
            for blob in [m.config, *m.layers]:
                if not store.exists(blob.digest):
                    raise PushError(f"manifest {desc.digest}: blob {blob.digest} ({blob.media_type}) is "
                                    "missing from the content store")
            manifests.append((desc, [m.config, *m.layers]))
        else:
            raise PushError(f"{where}: {desc.digest} has media type {desc.media_type}: not a manifest or index")
        documents.append((desc, data))

    visit(target, "image", 0)
    return manifests, documents


def _label_source(store: ContentStore, digest: str, key: str, repo: str) -> None:
    current = store.info(digest).labels.get(key, "")
    merged = _merge_source(current, repo)
    if merged != current:
        store.update_labels(digest, {key: merged}, (f"labels.{key}",))


def _push_blobs(client: RegistryClient, store: ContentStore, named: Reference,
                manifests: list[tuple[Descriptor, list[Descriptor]]], progress: Progress, limit: int,
                chunk_size: int | None) -> None:
    repo = named.path
    key, _ = source_label(named)
    blobs: list[tuple[Descriptor, bool]] = []  # (descriptor, is the config)
    seen: set[str] = set()
    for _desc, refs in manifests:
        for i, blob in enumerate(refs):
            if blob.digest in seen:
                continue
            seen.add(blob.digest)
            blobs.append((blob, i == 0))
    layers = [b for b, is_config in blobs if not is_config]
    for layer in layers:
        progress.emit("Preparing", short_id(layer.digest), detail=True)
    cancel = threading.Event()

    def task(blob: Descriptor, is_config: bool) -> Callable[[], None]:
        sid = short_id(blob.digest)

        def emit(status: str, **kw: object) -> None:
            if not is_config:
                progress.emit(status, sid, **kw)  # type: ignore[arg-type]

        def run() -> None:
            if cancel.is_set():
                return
            if client.blob_size(repo, blob.digest, push=True) is not None:
                emit("Layer already exists", detail=True)
                _label_source(store, blob.digest, key, repo)
                return
            location = ""
            sources = [r for r in store.info(blob.digest).labels.get(key, "").split(",") if r and r != repo]
            for other in sources:
                try:
                    mounted, location = client.mount_blob(repo, blob.digest, other)
                except RegistryError:
                    continue  # no access to that repository any more: try the next, then upload
                if mounted:
                    emit(f"Mounted from {other}", detail=True)
                    _label_source(store, blob.digest, key, repo)
                    return
                break  # the registry opened an upload session instead: use it
            if not location:
                location = client.start_upload(repo)
            sent = [0]
            step = max(blob.size // 100, 512 * 1024)
            last = [-step]

            def on_progress(n: int) -> None:
                sent[0] += n
                if sent[0] - last[0] >= step or sent[0] == blob.size:
                    last[0] = sent[0]
                    emit("Pushing", current=sent[0], total=blob.size)

            with store.open(blob.digest) as f:
                client.upload_blob(repo, location, blob.digest, f, blob.size, chunk_size=chunk_size,
                                   progress=on_progress)
            emit("Pushed", detail=True)
            _label_source(store, blob.digest, key, repo)
        return run

    config_first = sorted(blobs, key=lambda t: not t[1])

    def on_queued(i: int) -> None:
        blob, is_config = config_first[i]
        if not is_config:
            progress.emit("Waiting", short_id(blob.digest), detail=True)

    run_limited([task(b, c) for b, c in config_first], limit, cancel, on_queued=on_queued)


__all__ = ["DEFAULT_CHUNK_SIZE", "LABEL_DISTRIBUTION_SOURCE", "MAX_CONCURRENT_UPLOADS", "PushError", "push"]
