"""A fake containerd holding images (content blobs and image records) for unit tests of
skiffd's ImageService: no server, no gRPC."""

from __future__ import annotations

import hashlib
import json

from skiff.daemon.api.errors import NotFound
from skiff.daemon.containerd.client import Descriptor, ImageRecord

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeContainerd:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.records: dict[str, ImageRecord] = {}
        self.reads = 0

    def put(self, data: bytes) -> str:
        d = sha(data)
        self.blobs[d] = data
        return d

    def image(self, created: str, layers: int, labels: dict | None = None, index: bool = False) -> Descriptor:
        diff_ids = [sha(f"{created}-{i}".encode()) for i in range(layers)]
        config = json.dumps({"architecture": "amd64", "os": "linux", "created": created,
                             "config": {"Cmd": ["sh"], "Labels": labels or {}},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        cd = self.put(config)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": len(config)},
                               "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": 1000}
                                          for d in diff_ids]}).encode()
        md = self.put(manifest)
        target = Descriptor(OCI_MANIFEST, md, len(manifest))
        if index:
            idx = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": md, "size": len(manifest),
                 "platform": {"architecture": "s390x", "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": md, "size": len(manifest),
                 "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
            target = Descriptor(OCI_INDEX, self.put(idx), len(idx))
        return target

    def name(self, name: str, target: Descriptor) -> None:
        self.records[name] = ImageRecord(name, target, {}, len(self.records), len(self.records))

    async def list_images(self, filters=()):
        return list(self.records.values())

    async def get_image(self, name):
        return self.records.get(name)

    async def read_blob(self, digest, max_size=None):
        self.reads += 1
        if digest not in self.blobs:
            raise NotFound(f"content digest {digest}: not found")
        return self.blobs[digest]

    async def snapshot_usage(self, key, snapshotter="overlayfs"):
        raise NotFound(f"snapshot {key}: not found")
