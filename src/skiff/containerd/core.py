"""The daemon's state: the image library's stores opened under the configured root, the
event exchange, the garbage collector, the server's identity.

Layout under ``root`` (named after containerd's plugin directories)::

    io.containerd.metadata.v1.sqlite/meta.db     MetaDB: namespaces, images, containers, leases, content records
    io.containerd.content.v1.content/            ContentStore: blobs/, ingest/
    io.containerd.snapshotter.v1.<name>/         one per snapshotter (overlayfs, native)
    io.containerd.grpc.v1.introspection/uuid     the server's UUID (Introspection.Server)

The services (``skiff.containerd.services``) translate protobuf to calls on these objects.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid as _uuid
from typing import TYPE_CHECKING, Any

from skiff.containerd.config import Config
from skiff.containerd.events import Exchange
from skiff.containerd.nssnap import NamespacedSnapshotter, gc_key_map
from skiff.images.content import ContentStore
from skiff.images.errors import FailedPrecondition, InvalidArgument
from skiff.images.leases import LeaseManager
from skiff.images.metadata import MetaDB
from skiff.images.snapshots import SNAPSHOTTERS, new_snapshotter

if TYPE_CHECKING:
    from collections.abc import Callable

    from skiff.images.gc import GCResult
    from skiff.images.snapshots import Snapshotter

log = logging.getLogger("skiff.containerd")

METADATA_DIR = "io.containerd.metadata.v1.sqlite"
CONTENT_DIR = "io.containerd.content.v1.content"
SNAPSHOTTER_DIR = "io.containerd.snapshotter.v1."
INTROSPECTION_DIR = "io.containerd.grpc.v1.introspection"


class GCScheduler:
    """Runs the image library's collector: at once (``collect``), or soon after a deletion
    (``schedule``), in a background thread, one collection at a time."""

    def __init__(self, core: Core, delay: float = 0.5) -> None:
        self.core = core
        self.delay = delay
        self._run_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gc", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def schedule(self) -> None:
        with self._cond:
            self._pending = True
            self._cond.notify_all()

    def collect(self) -> GCResult:
        from skiff.images.gc import collect
        with self._run_lock:
            result = collect(self.core.content, self.core.snapshotters, snapshot_key=gc_key_map)
            self.runs += 1
        removed = (len(result.removed_content) + len(result.removed_blobs) + len(result.removed_snapshots)
                   + len(result.removed_leases) + len(result.removed_ingests))
        if removed:
            log.info("gc: removed %d content records, %d blobs, %d snapshots, %d leases, %d ingests",
                     len(result.removed_content), len(result.removed_blobs), len(result.removed_snapshots),
                     len(result.removed_leases), len(result.removed_ingests))
        return result

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                # let a burst of deletions (an image's removal, a lease's) finish first
                self._cond.wait(self.delay)
                if self._stopping:
                    return
                self._pending = False
            try:
                self.collect()
                self.last_error = None
            except Exception as e:  # the daemon goes on; the error is logged and kept for reporting
                self.last_error = str(e)
                log.error("gc: %s", e)


class Core:
    def __init__(self, config: Config) -> None:
        self.config = config
        root = config.root
        os.makedirs(root, mode=0o711, exist_ok=True)
        os.makedirs(config.state, mode=0o711, exist_ok=True)
        self.meta = MetaDB(os.path.join(root, METADATA_DIR, "meta.db"))
        self.content = ContentStore(os.path.join(root, CONTENT_DIR), self.meta)
        self.snapshotters: dict[str, Snapshotter] = {}
        self.snapshotter_roots: dict[str, str] = {}
        self.snapshotter_errors: dict[str, str] = {}
        for name in SNAPSHOTTERS:
            sroot = os.path.join(root, SNAPSHOTTER_DIR + name)
            try:
                self.snapshotters[name] = new_snapshotter(name, sroot)
                self.snapshotter_roots[name] = sroot
            except Exception as e:  # a snapshotter that cannot work here is reported by introspection
                self.snapshotter_errors[name] = f"snapshotter {name}: {e}"
                log.warning("snapshotter %s not loaded: %s", name, e)
        if config.snapshotter not in self.snapshotters:
            raise FailedPrecondition(f"the configured snapshotter {config.snapshotter} could not be loaded: "
                                     f"{self.snapshotter_errors.get(config.snapshotter, 'unknown')}")
        self.exchange = Exchange()
        self.gc = GCScheduler(self)
        self.uuid = self._load_uuid(os.path.join(root, INTROSPECTION_DIR, "uuid"))
        # serialises namespace deletion with the creation of snapshots (the only objects the
        # metadata database cannot check in the same transaction)
        self.namespace_lock = threading.Lock()
        # the task manager (skiff.containerd.tasks_core), set by the Tasks service
        self.tasks: Any = None

    @staticmethod
    def _load_uuid(path: str) -> str:
        try:
            with open(path) as f:
                text = f.read().strip()
            return str(_uuid.UUID(text))
        except FileNotFoundError:
            pass
        except ValueError as e:
            raise FailedPrecondition(f"server uuid file {path}: not a UUID: {e}") from e
        os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
        value = str(_uuid.uuid4())
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(value)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        return value

    def set_event_decoder(self, decoder: Callable[[object], object]) -> None:
        self.exchange._decoder = decoder

    # -- per-request views

    def content_store(self, namespace: str, lease: str | None = None) -> ContentStore:
        return self.content.using(namespace, lease)

    def snapshotter_name(self, name: str) -> str:
        """The snapshotter a request names (empty: the configured default)."""
        name = name or self.config.snapshotter
        if name not in self.snapshotters:
            why = self.snapshotter_errors.get(name)
            raise InvalidArgument(f"snapshotter not loaded: {name}" + (f" ({why})" if why else ""))
        return name

    def snapshotter(self, namespace: str, name: str, lease: str | None = None) -> NamespacedSnapshotter:
        name = self.snapshotter_name(name)
        return NamespacedSnapshotter(self.snapshotters[name], name, namespace, self.meta, lease)

    def leases(self, namespace: str) -> LeaseManager:
        return LeaseManager(self.meta, namespace)

    # -- namespaces

    def delete_namespace(self, name: str) -> None:
        """containerd's rule: only an empty namespace goes (images, blobs, containers, leases,
        snapshots)."""
        with self.namespace_lock:
            left = [f'snapshots on "{sn}" snapshotter' for sn in sorted(self.snapshotters)
                    if self.snapshotter(name, sn).has_any()]
            with self.meta.transaction() as tx:
                if not left:
                    tx.delete_namespace(name)
                    return
                # the exceptions below roll the transaction back
                try:
                    tx.delete_namespace(name)
                except FailedPrecondition as e:  # it names the other objects left
                    raise FailedPrecondition(f"{e}, {', '.join(left)}") from None
                raise FailedPrecondition(f"namespace {name} must be empty, but it still has {', '.join(left)}")

    def close(self) -> None:
        if self.tasks is not None:
            self.tasks.close()  # the event pumps stop; the shims and their containers stay
        self.gc.stop()
        self.exchange.close()
        for s in self.snapshotters.values():
            s.close()
        self.meta.close()
