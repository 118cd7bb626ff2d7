"""skiffd's volumes (issue 8): the ``local`` driver's named and anonymous volumes
(``store.VolumeStore``) and the mount points of containers (``service.VolumeService``):
which volume or bind each container destination gets, copy-up of image content, reference
counting for removal (409 when in use) and mounting volumes created with driver options."""
