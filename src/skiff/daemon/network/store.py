"""User-defined network records (``docker network create``), persisted one JSON file each
under ``<data-root>/network/networks/<id>.json``; plus the predefined ``bridge``, ``host`` and
``none`` networks (ids kept in ``<data-root>/network/predefined.json`` so they stay stable)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from skiff.daemon.api.errors import Conflict, InvalidParameter, NotFound

PREDEFINED = ("bridge", "host", "none")
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@dataclass
class NetRecord:
    id: str
    name: str
    driver: str
    created_ns: int
    subnet: str = ""
    gateway: str = ""
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def bridge_name(self) -> str:
        return "br-" + self.id[:12]

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED


def rfc3339(ns: int) -> str:
    t = time.gmtime(ns // 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{ns % 1_000_000_000:09d}Z"


class NetStore:
    def __init__(self, state_dir: str) -> None:
        self.dir = os.path.join(state_dir, "networks")
        self.state_dir = state_dir
        self.nets: dict[str, NetRecord] = {}

    def load(self) -> list[str]:
        errors: list[str] = []
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        pre_path = os.path.join(self.state_dir, "predefined.json")
        try:
            with open(pre_path, encoding="utf-8") as f:
                ids = json.load(f)
        except (FileNotFoundError, ValueError):
            ids = {}
        changed = False
        for name in PREDEFINED:
            if name not in ids:
                ids[name] = secrets.token_hex(32)
                changed = True
            self.nets[ids[name]] = NetRecord(ids[name], name, "bridge" if name == "bridge" else name,
                                             time.time_ns())
        if changed:
            _write_json(pre_path, ids)
        for fn in sorted(os.listdir(self.dir)):
            if not fn.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.dir, fn), encoding="utf-8") as f:
                    r = NetRecord(**json.load(f))
            except (OSError, ValueError, TypeError) as e:
                errors.append(f"network record {fn}: unreadable: {e}")
                continue
            self.nets[r.id] = r
        return errors

    def get(self, ref: str) -> NetRecord:
        """By full id, name, or unique id prefix (404 otherwise), as dockerd."""
        if ref in self.nets:
            return self.nets[ref]
        for r in self.nets.values():
            if r.name == ref:
                return r
        matches = [r for r in self.nets.values() if ref and r.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidParameter(f"network {ref} is ambiguous ({len(matches)} matches found)")
        raise NotFound(f"network {ref} not found")

    def find(self, ref: str) -> NetRecord | None:
        try:
            return self.get(ref)
        except (NotFound, InvalidParameter):
            return None

    def create(self, name: str, *, driver: str, subnet: str, gateway: str, internal: bool,
               labels: dict[str, str], options: dict[str, str]) -> NetRecord:
        if not NAME_RE.match(name or ""):
            raise InvalidParameter(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                                   "are allowed")
        if any(r.name == name for r in self.nets.values()):
            raise Conflict(f"network with name {name} already exists")
        r = NetRecord(secrets.token_hex(32), name, driver, time.time_ns(), subnet, gateway,
                      internal, dict(labels), dict(options))
        self.save(r)
        self.nets[r.id] = r
        return r

    def save(self, r: NetRecord) -> None:
        _write_json(os.path.join(self.dir, r.id + ".json"), asdict(r))

    def delete(self, r: NetRecord) -> None:
        self.nets.pop(r.id, None)
        try:
            os.unlink(os.path.join(self.dir, r.id + ".json"))
        except FileNotFoundError:
            pass

    def user_subnets(self) -> list[ipaddress.IPv4Network]:
        return [ipaddress.IPv4Network(r.subnet) for r in self.nets.values() if r.subnet]


def _write_json(path: str, data: Any) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
