"""Image formats and the built-in busybox image.

- ``ocilayout``: reproducible writing of OCI image layouts and ``docker save`` archives
  (ustar layers with fixed metadata, compact JSON in the image-spec's field order).
- ``builtin``: the ``busybox:latest`` image built offline from Debian's busybox-static
  (``python -m skiff.images.builtin build --out DIR``), and ``make_bundle``, which unpacks an
  OCI layout into a runtime bundle (``python -m skiff.images.builtin bundle ...``).
"""
