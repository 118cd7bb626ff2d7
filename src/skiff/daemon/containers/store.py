"""The in-memory index of containers: names, ID and unique-prefix lookup, and the filters of
``GET /containers/json`` (moby's ``daemon/list.go`` semantics)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from typing import Any

from skiff.daemon.api.errors import Conflict, InvalidParameter, NotFound
from skiff.daemon.containers.model import STATUSES, Container

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

LIST_FILTERS = ("ancestor", "before", "exited", "health", "id", "is-task", "label", "name",
                "network", "since", "status")

_ADJECTIVES = ("brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid",
               "merry", "nimble", "plucky", "quiet", "rapid", "steady", "tidy", "vivid", "witty",
               "zesty", "bold", "crisp", "deft", "frank", "hardy")
_NOUNS = ("anchor", "beacon", "cutter", "dinghy", "estuary", "ferry", "galley", "harbor", "jetty",
          "keel", "lagoon", "mast", "oar", "pier", "quay", "rudder", "sail", "tiller", "wake",
          "skiff", "buoy", "cove", "hull", "reef")


def valid_name(name: str) -> str:
    """``x`` or ``/x`` -> ``/x``; InvalidParameter for a name Docker refuses."""
    if not NAME_RE.match(name):
        raise InvalidParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                               "are allowed")
    return name if name.startswith("/") else "/" + name


class Store:
    def __init__(self) -> None:
        self.by_id: dict[str, Container] = {}
        self.names: dict[str, str] = {}          # "/name" -> id

    def __len__(self) -> int:
        return len(self.by_id)

    def all(self) -> list[Container]:
        return list(self.by_id.values())

    def add(self, c: Container) -> None:
        self.reserve(c.name, c.id)
        self.by_id[c.id] = c

    def remove(self, c: Container) -> None:
        self.by_id.pop(c.id, None)
        if self.names.get(c.name) == c.id:
            del self.names[c.name]

    def reserve(self, name: str, cid: str) -> None:
        """Claim ``name`` for ``cid``; 409 with Docker's message when another container has it."""
        owner = self.names.get(name)
        if owner is not None and owner != cid:
            raise Conflict(f'Conflict. The container name "{name}" is already in use by container '
                           f'"{owner}". You have to remove (or rename) that container to be able '
                           "to reuse that name.")
        self.names[name] = cid

    def release(self, name: str, cid: str) -> None:
        if self.names.get(name) == cid:
            del self.names[name]

    def generate_name(self, rng: random.Random | None = None) -> str:
        r = rng or random.Random()
        for attempt in range(100):
            name = f"/{r.choice(_ADJECTIVES)}_{r.choice(_NOUNS)}"
            if attempt >= 10:
                name += str(r.randint(0, 99))
            if name not in self.names:
                return name
        raise Conflict("could not generate a unique container name; give one with --name")

    def get(self, ref: str) -> Container:
        """By full ID, then name (``x`` or ``/x``), then unique ID prefix (moby's order)."""
        c = self.find(ref)
        if c is None:
            raise NotFound(f"No such container: {ref}")
        return c

    def find(self, ref: str) -> Container | None:
        if not ref:
            return None
        c = self.by_id.get(ref)
        if c is not None:
            return c
        cid = self.names.get(ref if ref.startswith("/") else "/" + ref)
        if cid is not None:
            return self.by_id.get(cid)
        if re.fullmatch(r"[0-9a-f]+", ref):
            matches = [c for i, c in self.by_id.items() if i.startswith(ref)]
            if len(matches) > 1:
                raise InvalidParameter(f"multiple IDs found with provided prefix: {ref}")
            if matches:
                return matches[0]
        return None

    # -- listing -----------------------------------------------------------------------------
    def list(self, *, all: bool = False, limit: int = -1,
             filters: dict[str, list[str]] | None = None,
             image_matches: Callable[[Container, str], bool] | None = None) -> list[Container]:
        """Containers newest first, filtered as ``docker ps`` asks."""
        f = {k: v for k, v in (filters or {}).items() if v}
        for key in f:
            if key not in LIST_FILTERS:
                raise InvalidParameter(f"invalid filter '{key}'")
        for st in f.get("status", []):
            if st not in STATUSES:
                raise InvalidParameter(f"invalid filter 'status={st}': must be one of "
                                       f"{', '.join(STATUSES)}")
        exited: list[int] = []
        for e in f.get("exited", []):
            try:
                exited.append(int(e))
            except ValueError:
                raise InvalidParameter(f"invalid filter 'exited={e}': not an integer") from None
        for v in f.get("is-task", []):
            if v not in ("true", "false"):
                raise InvalidParameter(f"invalid filter 'is-task={v}'")
        before = [self.get(r) for r in f.get("before", [])]
        since = [self.get(r) for r in f.get("since", [])]
        if "status" in f or "exited" in f:
            all = True
        items = sorted(self.by_id.values(), key=lambda c: (c.created, c.id), reverse=True)
        out: list[Container] = []
        for c in items:
            if not all and c.state.status not in ("running", "paused", "restarting"):
                continue
            if not _matches(c, f, exited, before, since, image_matches):
                continue
            out.append(c)
        if limit is not None and limit > 0:
            out = out[:limit]
        return out


def _any_label(labels: dict[str, str], wanted: Iterable[str]) -> bool:
    for want in wanted:
        k, sep, v = want.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True


def _matches(c: Container, f: dict[str, list[str]], exited: list[int], before: list[Container],
             since: list[Container],
             image_matches: Callable[[Container, str], bool] | None) -> bool:
    if "id" in f and not any(c.id.startswith(v) for v in f["id"]):
        return False
    if "name" in f:
        # a regular expression searched in the name with its leading slash, as moby does
        ok = False
        for v in f["name"]:
            try:
                if re.search(v, c.name):
                    ok = True
            except re.error as e:
                raise InvalidParameter(f"invalid filter 'name={v}': {e}") from None
        if not ok:
            return False
    if "label" in f and not _any_label(c.labels, f["label"]):
        return False
    if "status" in f and c.state.status not in f["status"]:
        return False
    if exited and (c.state.status != "exited" or c.state.exit_code not in exited):
        return False
    if "ancestor" in f:
        if not any((image_matches(c, v) if image_matches else _default_image_match(c, v))
                   for v in f["ancestor"]):
            return False
    if before and not all(c.created < b.created for b in before):
        return False
    if since and not all(c.created > s.created for s in since):
        return False
    if "health" in f:
        h = (c.state.health or {}).get("Status", "none")
        if h not in f["health"]:
            return False
    if "network" in f:
        mode = str(c.host_config.get("NetworkMode") or "default")
        if not any(v in (mode, "bridge" if mode == "default" else mode) for v in f["network"]):
            return False
    if "is-task" in f and "true" in f["is-task"]:
        return False     # no swarm: no container is a task
    return True


def _default_image_match(c: Container, ref: str) -> bool:
    image = c.image_ref
    cands = {image, c.image_id}
    if ":" not in image.rsplit("/", 1)[-1]:
        cands.add(image + ":latest")
    if ref in cands or (ref + ":latest") in cands:
        return True
    bare = ref.removeprefix("sha256:")
    return len(bare) >= 4 and c.image_id.removeprefix("sha256:").startswith(bare)


def summaries(containers: list[Container], now_ns: int | None = None) -> list[dict[str, Any]]:
    return [c.summary(now_ns) for c in containers]
