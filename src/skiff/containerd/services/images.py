"""containerd.services.images.v1.Images."""

from __future__ import annotations

from typing import Any

from google.protobuf.empty_pb2 import Empty

from skiff.containerd import convert
from skiff.containerd.rpc import handler, namespace_of, require
from skiff.containerd.services import Service


class ImagesService(Service):
    @handler
    def Get(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        with self.core.meta.view() as tx:
            image = tx.get_image(ns, request.name)
        return self.api.images.GetImageResponse(image=convert.image_to_pb(self.api, image))

    @handler
    def List(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        with self.core.meta.view() as tx:
            images = tx.list_images(ns, list(request.filters))
        return self.api.images.ListImagesResponse(images=[convert.image_to_pb(self.api, i) for i in images])

    @handler
    def Create(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        require(request.image.name, "Image.Name")
        record = convert.image_from_pb(request.image)
        with self.core.meta.transaction() as tx:
            created = tx.create_image(ns, record)
        self.publish(ns, "/images/create", self.api.ev_image.ImageCreate(name=created.name, labels=created.labels))
        return self.api.images.CreateImageResponse(image=convert.image_to_pb(self.api, created))

    @handler
    def Update(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        require(request.image.name, "Image.Name")
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        record = convert.image_from_pb(request.image, paths)
        with self.core.meta.transaction() as tx:
            updated = tx.update_image(ns, record, paths)
        self.publish(ns, "/images/update", self.api.ev_image.ImageUpdate(name=updated.name, labels=updated.labels))
        return self.api.images.UpdateImageResponse(image=convert.image_to_pb(self.api, updated))

    @handler
    def Delete(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        with self.core.meta.transaction() as tx:
            tx.delete_image(ns, request.name)
        self.publish(ns, "/images/delete", self.api.ev_image.ImageDelete(name=request.name))
        if request.sync:
            self.core.gc.collect()
        else:
            self.core.gc.schedule()
        return Empty()
