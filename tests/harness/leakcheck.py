"""Snapshots of host state before and after a root test, and their difference.

A root test creates real kernel objects; it must remove every one of them. This module takes a
snapshot of the objects a test could leave behind, and diffs two snapshots into a list of
:class:`Leak`. It only reports: it never removes anything it finds (a leak is a bug in the code
under test, and the evidence must stay for whoever fixes it).

What a snapshot holds (all read from /proc and /sys, plus one call per firewall tool):

- mounts of the caller's mount namespace (``/proc/self/mountinfo``): mount point, fs type, source
  (and the mount's root inside its filesystem when it is not ``/``, which shows bind mounts);
- every cgroup directory under every hierarchy in ``/sys/fs/cgroup``;
- named network namespaces (``/run/netns`` and ``ip netns list``) and the distinct network
  namespaces of all processes (``/proc/PID/ns/net``) with the processes holding each;
- network links (``/sys/class/net``);
- firewall rules: ``nft list ruleset``, ``iptables-save`` and ``ip6tables-save`` (and the legacy
  variants when they are a different backend), each normalised so that counters, comments and
  timestamps do not count as changes;
- processes (``/proc/PID/stat``).

A process counts as leaked when it is alive (not a zombie) after the test, did not exist before
it, started after the test began, and either descends from the test process or carries the
session's token in its environment (:data:`TOKEN_ENV`, which the harness sets in the test
process, so children inherit it; this catches daemons that double-forked and were re-parented
to PID 1 or to a subreaper). A re-parented process whose environment was replaced (a container's
init) is not attributed this way; it is caught by the cgroup, namespace and mount checks instead.
PID 1 on a shared machine starts unrelated processes at any time, so "any new child of PID 1" would
report other people's processes.

Host-wide objects (mounts, cgroups, links, namespaces, rules) cannot be traced to their creator.
Two exceptions keep other people's work on a shared machine out of the report: a new cgroup, and
a new network namespace, is ignored when it holds a process that is provably someone else's: the
process, or for a container's init (in a PID namespace of its own) its nearest ancestor in the
test process's PID namespace, is alive and neither descends from the test process nor carries the
token. An orphan re-parented to PID 1 proves nothing either way and counts as the test's.
Anything else that another process creates during the test and keeps for longer than the grace
period is reported.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
TOKEN_ENV = "SKIFF_LEAKCHECK_TOKEN"
KIND_ORDER = ("process", "mount", "cgroup", "netns", "link", "firewall")


# ---------------------------------------------------------------- parsing (pure functions)

@dataclass(frozen=True)
class Proc:
    """One line of ``/proc/PID/stat``, the fields the checker needs."""

    pid: int
    ppid: int
    comm: str
    state: str
    start: int  # clock ticks after boot (field 22, starttime)


def parse_stat(text: str) -> Proc:
    """Parse ``/proc/PID/stat``; ``comm`` may contain spaces and parentheses."""
    head, sep, rest = text.rpartition(")")
    pid_s, sep2, comm = head.partition(" (")
    fields = rest.split()
    if not sep or not sep2 or len(fields) < 20:
        raise ValueError(f"malformed /proc/PID/stat: {text[:120]!r}")
    # fields[0] is field 3 (state); field 4 is ppid; field 22 is starttime.
    return Proc(int(pid_s), int(fields[1]), comm, fields[0], int(fields[19]))


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(s: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), s)


def parse_mountinfo(text: str) -> Counter[str]:
    """``/proc/PID/mountinfo`` -> multiset of ``"<mount point> type <fs> source <src>[ root <r>]"``.

    A multiset, because mounts stack: a second mount on the same point is a leak too.
    """
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.strip():
            continue
        left, sep, right = line.partition(" - ")
        lf, rf = left.split(), right.split()
        if not sep or len(lf) < 5 or not rf:
            raise ValueError(f"malformed mountinfo line: {line!r}")
        key = f"{_unescape(lf[4])} type {rf[0]} source {_unescape(rf[1]) if len(rf) > 1 else ''}"
        root = _unescape(lf[3])
        if root != "/":
            key += f" root {root}"
        out[key] += 1
    return out


def mount_points(text: str) -> list[str]:
    """The mount points listed in a mountinfo text, in order."""
    return [_unescape(line.split()[4]) for line in text.splitlines() if len(line.split()) > 4]


_NFT_COUNTS = re.compile(r"\bpackets \d+ bytes \d+")
_NFT_EXPIRES = re.compile(r"\s*\bexpires [0-9dhms.]+")
_NFT_QUOTA_USED = re.compile(r"\bused \d+ [a-z]+")
_SPACES = re.compile(r"\s+")


def _nft_normalise(line: str) -> str:
    line = _NFT_COUNTS.sub("", line)
    line = _NFT_EXPIRES.sub("", line)
    line = _NFT_QUOTA_USED.sub("", line)
    return _SPACES.sub(" ", line).strip()


def parse_nft_ruleset(text: str) -> Counter[str]:
    """``nft list ruleset`` -> multiset of ``"table ip nat / chain POSTROUTING :: <rule>"``.

    Every block (table, chain, set, map, ...) is an entry of its own, so an empty chain or table
    left behind is seen. Counter values, set-element expiry times and ``#`` comments are dropped.
    """
    out: Counter[str] = Counter()
    path: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "}":
            if path:
                path.pop()
            continue
        if line.endswith("{") and "=" not in line:
            path.append(_nft_normalise(line[:-1]))
            out[" / ".join(path)] += 1
            continue
        line = _nft_normalise(line)
        if line:
            out[" / ".join(path) + " :: " + line] += 1
    return out


_IPT_COUNTS = re.compile(r"^\[\d+:\d+\]\s*")


def parse_iptables_save(text: str) -> Counter[str]:
    """``iptables-save`` -> multiset of ``"<table> <rule or chain policy>"``.

    ``#`` comment lines (which hold timestamps), ``COMMIT`` and packet/byte counters are dropped.
    """
    out: Counter[str] = Counter()
    table = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:]
            out[f"table {table}"] += 1
        elif line.startswith(":"):
            parts = line[1:].split()
            policy = parts[1] if len(parts) > 1 else "-"
            out[f"{table} chain {parts[0]} policy {policy}"] += 1
        else:
            out[f"{table} {_IPT_COUNTS.sub('', line)}"] += 1
    return out


# ---------------------------------------------------------------- reading the host

@dataclass(frozen=True)
class Host:
    """Where to read from; unit tests point these at fake trees and switch the tools off."""

    proc: str = "/proc"
    mountinfo: str = "/proc/self/mountinfo"
    cgroup: str = "/sys/fs/cgroup"
    netns_dir: str = "/run/netns"
    net_class: str = "/sys/class/net"
    tools: bool = True  # run `ip netns list`, nft, iptables-save


def now_ticks(proc: str = "/proc") -> int:
    """Clock ticks since boot, the unit of ``starttime`` in ``/proc/PID/stat``."""
    with open(f"{proc}/uptime") as f:
        return int(float(f.read().split()[0]) * CLK_TCK)


def read_processes(proc: str = "/proc") -> dict[int, Proc]:
    out = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat") as f:
                p = parse_stat(f.read())
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked
        out[p.pid] = p
    return out


def read_cgroups(root: str = "/sys/fs/cgroup") -> set[str]:
    """Every cgroup directory as ``"<hierarchy>:<path>"`` (``memory:/skiff/abc``)."""
    if os.path.exists(os.path.join(root, "cgroup.procs")):  # cgroup2 mounted at the root itself
        hierarchies = [("", root)]
    else:
        try:
            names = sorted(os.listdir(root))
        except FileNotFoundError:
            return set()
        hierarchies = [(n, os.path.join(root, n)) for n in names]
    out = set()
    for name, top in hierarchies:
        if os.path.islink(top) or not os.path.isdir(top):
            continue
        stack = [top]
        while stack:
            d = stack.pop()
            out.add(f"{name}:{d[len(top):] or '/'}")
            try:
                with os.scandir(d) as it:
                    stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                continue  # removed while we walked
    return out


def read_netns_inodes(procs: Iterable[int], proc: str = "/proc") -> dict[str, list[int]]:
    """Distinct network namespaces of the given processes -> pids holding each."""
    out: dict[str, list[int]] = {}
    for pid in procs:
        try:
            ns = os.readlink(f"{proc}/{pid}/ns/net")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        out.setdefault(ns, []).append(pid)
    return out


def _listdir(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except FileNotFoundError:
        return set()


def _run(argv: list[str]) -> tuple[bool, str]:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{' '.join(argv)}: {e}"
    if r.returncode != 0:
        return False, f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[:300]}"
    return True, r.stdout


def firewall_tools() -> list[tuple[str, list[str], Callable[[str], Counter[str]]]]:
    """The installed firewall dumpers: (label, argv, parser)."""
    tools: list[tuple[str, list[str], Callable[[str], Counter[str]]]] = []
    nft = shutil.which("nft")
    if nft:
        tools.append(("nft", [nft, "list", "ruleset"], parse_nft_ruleset))
    seen = set()
    for name in ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save"):
        path = shutil.which(name)
        if not path:
            continue
        # iptables-legacy-save is the same program as iptables-save on a legacy host.
        family = "6" if name.startswith("ip6") else "4"
        if (os.path.realpath(path), family) in seen:
            continue
        seen.add((os.path.realpath(path), family))
        tools.append((name, [path], parse_iptables_save))
    return tools


_FIREWALL_TOOLS: list[tuple[str, list[str], Callable[[str], Counter[str]]]] | None = None


@dataclass
class Snapshot:
    ticks: int  # clock ticks after boot when the snapshot began
    procs: dict[int, Proc]
    mounts: Counter[str]
    cgroups: set[str]
    netns_names: set[str]
    netns_inodes: dict[str, list[int]]
    links: set[str]
    firewall: dict[str, Counter[str] | str] = field(default_factory=dict)  # rules, or why not


def take_snapshot(host: Host = Host()) -> Snapshot:
    global _FIREWALL_TOOLS
    ticks = now_ticks(host.proc)
    procs = read_processes(host.proc)
    with open(host.mountinfo) as f:
        mounts = parse_mountinfo(f.read())
    netns_names = _listdir(host.netns_dir)
    firewall: dict[str, Counter[str] | str] = {}
    if host.tools:
        ip = shutil.which("ip")
        if ip:
            ok, out = _run([ip, "netns", "list"])
            if ok:
                netns_names |= {line.split()[0] for line in out.splitlines() if line.strip()}
        if _FIREWALL_TOOLS is None:
            _FIREWALL_TOOLS = firewall_tools()
        for label, argv, parser in _FIREWALL_TOOLS:
            ok, out = _run(argv)
            firewall[label] = parser(out) if ok else out
    return Snapshot(
        ticks=ticks,
        procs=procs,
        mounts=mounts,
        cgroups=read_cgroups(host.cgroup),
        netns_names=netns_names,
        netns_inodes=read_netns_inodes(procs, host.proc),
        links=_listdir(host.net_class),
        firewall=firewall,
    )


class Reader:
    """Per-process and per-cgroup facts read on demand while diffing (faked in unit tests)."""

    def __init__(self, host: Host = Host()) -> None:
        self.host = host

    def token_of(self, pid: int) -> str | None:
        """The value of :data:`TOKEN_ENV` in a process's environment, if readable and present."""
        try:
            with open(f"{self.host.proc}/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            return None
        prefix = TOKEN_ENV.encode() + b"="
        for item in env.split(b"\0"):
            if item.startswith(prefix):
                return item[len(prefix):].decode(errors="replace")
        return None

    def cmdline_of(self, pid: int) -> str:
        try:
            with open(f"{self.host.proc}/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return "?"
        text = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        return text if len(text) <= 200 else text[:197] + "..."

    def pidns_of(self, pid: int) -> str | None:
        try:
            return os.readlink(f"{self.host.proc}/{pid}/ns/pid")
        except OSError:
            return None

    def cgroup_pids(self, cgroup: str) -> list[int]:
        """Processes directly in a cgroup given as ``"<hierarchy>:<path>"``."""
        name, _, path = cgroup.partition(":")
        top = os.path.join(self.host.cgroup, name) if name else self.host.cgroup
        try:
            with open(f"{top}{path.rstrip('/')}/cgroup.procs") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []


# ---------------------------------------------------------------- diff

@dataclass(frozen=True)
class Leak:
    kind: str  # one of KIND_ORDER
    what: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.what}"


def _ancestors(pid: int, procs: dict[int, Proc]) -> list[int]:
    chain = []
    seen = set()
    while pid in procs and pid not in seen:
        seen.add(pid)
        pid = procs[pid].ppid
        chain.append(pid)
    return chain


class _Attribution:
    """Who started what, for one diff."""

    def __init__(self, after: Snapshot, self_pid: int, token: str, reader: Reader) -> None:
        self.after = after
        self.self_pid = self_pid
        self.token = token
        self.reader = reader
        self.self_pidns = reader.pidns_of(self_pid)

    def why_ours(self, pid: int) -> str:
        """Why a process belongs to the test, or ``""``."""
        if self.self_pid in _ancestors(pid, self.after.procs):
            return "descends from the test process"
        if self.token and self.reader.token_of(pid) == self.token:
            ppid = self.after.procs[pid].ppid if pid in self.after.procs else "?"
            return f"re-parented to pid {ppid}, carries this session's {TOKEN_ENV}"
        return ""

    def someone_elses(self, pid: int) -> bool:
        """Provably not the test's: the process, or its nearest ancestor in the test's PID
        namespace, is neither the test process, nor descends from it, nor carries the token.

        A container's init lives in a PID namespace of its own; its parent decides (a runtime
        started by another session's tests is someone else's). Reaching PID 1 (an orphan) proves
        nothing: the test's own leaked containers are re-parented there too.
        """
        p = self.after.procs.get(pid)
        if p is None or p.state in ("Z", "X", "x") or self.why_ours(pid):
            return False
        for q in [pid, *_ancestors(pid, self.after.procs)]:
            if q in (0, 1, 2) or q == self.self_pid:
                return False
            if self.token and self.reader.token_of(q) == self.token:
                return False
            ns = self.reader.pidns_of(q)
            if ns is not None and ns == self.self_pidns:
                return True
        return False


def leaked_processes(before: Snapshot, after: Snapshot, attr: _Attribution) -> list[Leak]:
    """Processes alive in ``after`` that the test started and did not end (see the module doc)."""
    mine = {attr.self_pid, *_ancestors(attr.self_pid, after.procs)}
    leaks = []
    for pid, p in sorted(after.procs.items()):
        if pid in mine or p.state in ("Z", "X", "x"):
            continue
        old = before.procs.get(pid)
        if (old is not None and old.start == p.start) or p.start < before.ticks:
            continue  # existed before the test
        why = attr.why_ours(pid)
        if not why:
            continue
        age = (p.start - before.ticks) / CLK_TCK
        leaks.append(Leak("process", f"pid {pid} ({p.comm}) ppid {p.ppid} state {p.state}, started "
                                     f"{age:.2f}s after the check began, {why}: {attr.reader.cmdline_of(pid)}"))
    return leaks


def _leaked_cgroups(before: Snapshot, after: Snapshot, attr: _Attribution, foreign: set[str]) -> list[Leak]:
    new = sorted(after.cgroups - before.cgroups)
    elses = {c for c in new if f"cgroup {c}" in foreign
             or any(attr.someone_elses(pid) for pid in attr.reader.cgroup_pids(c))}
    foreign.update(f"cgroup {c}" for c in elses)
    # a new parent of someone else's new cgroup is theirs too, but only while that cgroup is
    # there: a shared parent (``/skiff``) is not remembered as theirs, so when it outlives every
    # child it is reported (the runtime that made it, or the test that ran it, left it behind)
    elses |= {c for c in new if any(e.startswith(c.rstrip("/") + "/") for e in elses)}
    return [Leak("cgroup", c) for c in new if c not in elses]


def _ours_netns(before: Snapshot, after: Snapshot, attr: _Attribution, foreign: set[str]) -> list[str]:
    ours = []
    for ns in sorted(set(after.netns_inodes) - set(before.netns_inodes)):
        if f"netns {ns}" in foreign or any(attr.someone_elses(pid) for pid in after.netns_inodes[ns]):
            foreign.add(f"netns {ns}")
        else:
            ours.append(ns)
    return ours


def learn_foreign(since: Snapshot, now: Snapshot, *, self_pid: int, token: str, foreign: set[str],
                  reader: Reader | None = None) -> None:
    """Add to ``foreign`` the cgroups and network namespaces new since ``since`` that hold someone
    else's process in ``now``; the harness samples this at the start of every root test, so the
    whole-tier check knows what other sessions created between and during tests."""
    attr = _Attribution(now, self_pid, token, reader or Reader())
    _leaked_cgroups(since, now, attr, foreign)
    _ours_netns(since, now, attr, foreign)


def _counter_added(before: Counter[str], after: Counter[str]) -> list[str]:
    added = after - before
    return [k if n == 1 else f"{k} (x{n})" for k, n in sorted(added.items())]


def diff(before: Snapshot, after: Snapshot, *, self_pid: int, token: str = "",
         reader: Reader | None = None, foreign: set[str] | None = None) -> list[Leak]:
    """What is in ``after`` and was not in ``before``; firewall rules both ways.

    ``foreign`` remembers, across diffs, the cgroups and network namespaces once seen holding
    someone else's process: they stay someone else's after that process has gone (the whole-tier
    check would otherwise report another session's leftovers that each test's check ignored).
    """
    foreign = set() if foreign is None else foreign
    attr = _Attribution(after, self_pid, token, reader or Reader())
    leaks = leaked_processes(before, after, attr)
    leaks += [Leak("mount", m) for m in _counter_added(before.mounts, after.mounts)]
    leaks += _leaked_cgroups(before, after, attr, foreign)
    leaks += [Leak("netns", f"named netns {n}") for n in sorted(after.netns_names - before.netns_names)]
    for ns in _ours_netns(before, after, attr, foreign):
        holders = after.netns_inodes[ns]
        shown = ", ".join(f"{pid} ({after.procs[pid].comm})" if pid in after.procs else str(pid)
                          for pid in holders[:5])
        more = f" and {len(holders) - 5} more" if len(holders) > 5 else ""
        leaks.append(Leak("netns", f"{ns} held by pid {shown}{more}"))
    leaks += [Leak("link", f"{n}") for n in sorted(after.links - before.links)]
    for tool, now in sorted(after.firewall.items()):
        was = before.firewall.get(tool)
        if not isinstance(was, Counter):
            continue  # tool missing or failing before the test: nothing to compare with
        if not isinstance(now, Counter):
            leaks.append(Leak("firewall", f"{tool} worked before the test and fails after it: {now}"))
            continue
        leaks += [Leak("firewall", f"{tool} added: {r}") for r in _counter_added(was, now)]
        leaks += [Leak("firewall", f"{tool} removed: {r}") for r in _counter_added(now, was)]
    return leaks


def wait_until_clean(before: Snapshot, *, self_pid: int, token: str, host: Host = Host(),
                     grace: float = 2.0, interval: float = 0.05,
                     foreign: set[str] | None = None) -> list[Leak]:
    """Diff against a fresh snapshot until nothing leaks or ``grace`` seconds have passed.

    The grace period lets exiting processes go and lets the kernel finish asynchronous
    teardown (a network namespace and its veth ends go away shortly after the last process).
    """
    deadline = time.monotonic() + grace
    reader = Reader(host)
    while True:
        after = take_snapshot(host)
        leaks = diff(before, after, self_pid=self_pid, token=token, reader=reader, foreign=foreign)
        if not leaks or time.monotonic() >= deadline:
            return leaks
        time.sleep(interval)


def format_leaks(leaks: list[Leak], heading: str) -> str:
    """A report grouped by kind, one object per line."""
    lines = [f"{heading}: {len(leaks)} leaked object(s)"]
    for kind in KIND_ORDER:
        items = [lk for lk in leaks if lk.kind == kind]
        if items:
            lines.append(f"  {kind} ({len(items)}):")
            lines.extend(f"    {lk.what}" for lk in items)
    return "\n".join(lines)
