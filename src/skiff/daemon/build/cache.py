"""The classic builder's cache (moby's ``image/cache``), over the build records of
``ImageService`` (each image a build made records its parent and this key).

A step is reused when an image made from the same parent has the same key: the sha256 of
the step's ``container_config`` (the run config with the step's command, ``#(nop)`` comments
included: ``COPY file:<content hash> in /dst``, ``|1 A=1 /bin/sh -c ...`` for a RUN with build
args), which is what moby's ``compare`` looks at.

With ``cachefrom`` images, moby's ``ImageCache`` rules: a local hit counts only when a source
image descends from it; otherwise a source whose history and layers start with the parent's,
and whose next history entry was made by the same command, gives the step (the source itself
when that entry is its last, else an image restored from the source's history up to it).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def cache_key(container_config: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(container_config, sort_keys=True,
                                                  separators=(",", ":")).encode()).hexdigest()


def created_by(container_config: dict[str, Any]) -> str:
    """A history entry's ``created_by``: the step's command joined by spaces (moby)."""
    return " ".join(container_config.get("Cmd") or [])


def _history(raw: dict[str, Any]) -> list[dict[str, Any]]:
    return [h for h in raw.get("history") or [] if isinstance(h, dict)]


def _diff_ids(raw: dict[str, Any]) -> list[str]:
    return list((raw.get("rootfs") or {}).get("diff_ids") or [])


def valid_parent(target: dict[str, Any], parent: dict[str, Any] | None) -> bool:
    """moby ``isValidParent``: ``target``'s history and layers start with ``parent``'s."""
    th = _history(target)
    if not th:
        return False
    if parent is None:
        return True
    ph = _history(parent)
    pd = _diff_ids(parent)
    if not ph and not pd:
        return True
    td = _diff_ids(target)
    if len(ph) >= len(th) or len(pd) > len(td):
        return False
    return all(ph[i] == th[i] for i in range(len(ph))) and td[:len(pd)] == pd


def layer_for_history(raw: dict[str, Any], index: int) -> int | None:
    """The index in ``rootfs.diff_ids`` of the layer history entry ``index`` made (None for
    an empty-layer entry)."""
    hist = _history(raw)
    if index >= len(hist) or hist[index].get("empty_layer"):
        return None
    n = sum(1 for h in hist[:index] if not h.get("empty_layer"))
    return n if n < len(_diff_ids(raw)) else None


def source_match(sources: list[dict[str, Any]], parent: dict[str, Any] | None,
                 container_config: dict[str, Any]) -> tuple[int, bool] | None:
    """The cache-from source (index) giving this step, and whether it is that source itself
    (its last history entry) rather than a restore of its history up to the step."""
    n = len(_history(parent)) if parent is not None else 0
    want = created_by(container_config)
    for i, raw in enumerate(sources):
        if not valid_parent(raw, parent):
            continue
        hist = _history(raw)
        if n >= len(hist) or str(hist[n].get("created_by") or "") != want:
            continue
        return i, len(hist) - 1 == n
    return None
