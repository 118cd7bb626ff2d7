"""skiffd's container record, store (names, lookup, list filters), restart policies, /etc files
and the pure helpers of the containers backend."""

from __future__ import annotations

import json
import signal

import pytest

from skiff.daemon.api.errors import Conflict, InvalidParameter, NotFound
from skiff.daemon.config import DaemonConfig
from skiff.daemon.containers import etcfiles
from skiff.daemon.containers.backend import (
    fill_host_config,
    parse_signal,
    start_failure,
)
from skiff.daemon.containers.model import Container, State, human_duration, rfc3339
from skiff.daemon.containers.monitor import RestartManager, restart_on_daemon_start, validate_restart_policy
from skiff.daemon.containers.store import Store, valid_name

S = 1_000_000_000


def _c(cid: str, name: str, created: int, status: str = "running", **kw) -> Container:
    c = Container(id=cid, name=name, created=created, image_id="sha256:" + "ab" * 32,
                  config={"Image": kw.pop("image", "busybox"), "Labels": kw.pop("labels", {})},
                  host_config={"NetworkMode": "default"}, path="sleep", args=["300"])
    c.state = State(status=status, **kw)
    return c


def test_rfc3339_and_zero_time():
    assert rfc3339(0) == "0001-01-01T00:00:00Z"
    assert rfc3339(1_795_000_000 * S + 9_341_393) == "2026-11-18T11:06:40.009341393Z"


@pytest.mark.parametrize("secs,text", [(0.5, "Less than a second"), (1, "1 second"), (59, "59 seconds"),
                                       (60, "About a minute"), (3599, "59 minutes"), (3600, "About an hour"),
                                       (7200, "2 hours"), (3 * 86400, "3 days"), (20 * 86400, "2 weeks"),
                                       (90 * 86400, "3 months"), (800 * 86400, "2 years")])
def test_human_duration(secs, text):
    assert human_duration(secs) == text


def test_state_describe_and_json():
    now = 1000 * S
    assert State(status="running", started_at=now - 3 * S).describe(now) == "Up 3 seconds"
    assert State(status="paused", started_at=now - 3 * S).describe(now) == "Up 3 seconds (Paused)"
    assert State(status="exited", exit_code=3, finished_at=now - 5 * S).describe(now) == "Exited (3) 5 seconds ago"
    assert State(status="created").describe(now) == "Created"
    assert State(status="restarting", exit_code=1, finished_at=now - 2 * S).describe(now) == \
        "Restarting (1) 2 seconds ago"
    j = State(status="paused", pid=42).to_json()
    assert (j["Running"], j["Paused"], j["Restarting"], j["Dead"], j["Pid"]) == (True, True, False, False, 42)
    assert j["StartedAt"] == "0001-01-01T00:00:00Z" and "Health" not in j


def test_record_round_trip_is_atomic_json(tmp_path):
    c = _c("a" * 64, "/web", 5 * S, status="exited", exit_code=2, finished_at=6 * S)
    c.restart_count = 2
    c.save(str(tmp_path / "x"))
    data = json.loads((tmp_path / "x" / "config.v2.json").read_text())
    assert data["id"] == "a" * 64 and data["state"]["exit_code"] == 2
    assert not (tmp_path / "x" / "config.v2.json.tmp").exists()
    back = Container.load(str(tmp_path / "x"))
    assert back == c
    data["bogus"] = 1
    (tmp_path / "x" / "config.v2.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown fields bogus"):
        Container.load(str(tmp_path / "x"))


def test_inspect_and_summary_shapes():
    c = _c("b" * 64, "/web", 7 * S, started_at=8 * S, pid=99)
    c.args = ["-c", "echo a; sleep 3"]
    c.path = "sh"
    i = c.inspect()
    assert i["Name"] == "/web" and i["Id"] == "b" * 64 and i["State"]["Pid"] == 99
    assert i["Path"] == "sh" and i["Args"] == ["-c", "echo a; sleep 3"]
    assert i["NetworkSettings"]["Networks"] == {} and i["Mounts"] == []
    s = c.summary(10 * S)
    assert s["Command"] == "sh -c 'echo a; sleep 3'"
    assert s["Names"] == ["/web"] and s["Status"] == "Up 2 seconds" and s["Created"] == 7
    assert s["Image"] == "busybox"


def test_valid_name():
    assert valid_name("web") == "/web" and valid_name("/a.b-c_d") == "/a.b-c_d"
    for bad in ("a", "-x", "a b", "x/y", ""):
        with pytest.raises(InvalidParameter, match="Invalid container name"):
            valid_name(bad)


def test_store_lookup_order_and_conflicts():
    st = Store()
    a = _c("abc" + "0" * 61, "/one", 1)
    b = _c("abd" + "0" * 61, "/abc", 2)
    st.add(a)
    st.add(b)
    assert st.get("abc" + "0" * 61) is a           # full ID first
    assert st.get("abc") is b                      # then a name
    assert st.get("/one") is a and st.get("one") is a
    assert st.get("abd") is b                      # then a unique prefix
    with pytest.raises(InvalidParameter, match="multiple IDs found with provided prefix: ab"):
        st.get("ab")
    with pytest.raises(NotFound, match="No such container: nope"):
        st.get("nope")
    with pytest.raises(Conflict) as e:
        st.reserve("/one", "f" * 64)
    assert str(e.value) == ('Conflict. The container name "/one" is already in use by container "'
                            + "abc" + "0" * 61 + '". You have to remove (or rename) that container to '
                            "be able to reuse that name.")
    st.remove(a)
    st.reserve("/one", "f" * 64)
    assert st.names["/one"] == "f" * 64
    name = st.generate_name()
    assert valid_name(name) == name


def test_store_list_filters():
    st = Store()
    r = _c("1" * 64, "/run1", 1, labels={"a": "b"})
    e = _c("2" * 64, "/ex0", 2, status="exited", exit_code=0, finished_at=3)
    e3 = _c("3" * 64, "/ex3", 3, status="exited", exit_code=3, finished_at=4, image="other:1")
    p = _c("4" * 64, "/paused", 4, status="paused")
    cr = _c("5" * 64, "/made", 5, status="created")
    for c in (r, e, e3, p, cr):
        st.add(c)
    ids = lambda **kw: [c.id[0] for c in st.list(**kw)]  # noqa: E731
    assert ids() == ["4", "1"]                                   # running + paused, newest first
    assert ids(all=True) == ["5", "4", "3", "2", "1"]
    assert ids(all=True, limit=2) == ["5", "4"]
    assert ids(filters={"status": ["exited"]}) == ["3", "2"]      # status implies all
    assert ids(filters={"exited": ["3"]}) == ["3"]
    assert ids(all=True, filters={"label": ["a=b"]}) == ["1"]
    assert ids(all=True, filters={"label": ["a"]}) == ["1"]
    assert ids(all=True, filters={"label": ["a=c"]}) == []
    assert ids(all=True, filters={"name": ["ex"]}) == ["3", "2"]
    assert ids(all=True, filters={"name": ["^/ex3$"]}) == ["3"]
    assert ids(all=True, filters={"id": ["33"]}) == ["3"]
    assert ids(all=True, filters={"before": ["/ex3"]}) == ["2", "1"]
    assert ids(all=True, filters={"since": ["/ex3"]}) == ["5", "4"]
    assert ids(all=True, filters={"ancestor": ["other:1"]}) == ["3"]
    assert ids(all=True, filters={"ancestor": ["busybox:latest"]}) == ["5", "4", "2", "1"]
    with pytest.raises(InvalidParameter, match="invalid filter 'status=bogus'"):
        st.list(filters={"status": ["bogus"]})
    with pytest.raises(InvalidParameter, match="invalid filter 'volume'"):
        st.list(filters={"volume": ["x"]})
    with pytest.raises(InvalidParameter, match="exited=x"):
        st.list(filters={"exited": ["x"]})


def test_restart_manager_on_failure_counts_and_backoff():
    rm = RestartManager("on-failure", 2)
    assert rm.should_restart(1, False, 0.1) == (True, 0.1)
    assert rm.should_restart(1, False, 0.1) == (True, 0.2)
    assert rm.should_restart(1, False, 0.1) == (False, 0.0)
    assert rm.count == 2
    assert RestartManager("on-failure", 0).should_restart(0, False, 1)[0] is False


def test_restart_manager_always_backoff_doubles_caps_and_resets():
    rm = RestartManager("always", 0)
    delays = [rm.should_restart(0, False, 0.5)[1] for _ in range(12)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == 60.0
    assert rm.should_restart(0, False, 10.0) == (True, 0.1)      # ran >= 10 s: reset
    assert rm.should_restart(0, True, 1.0) == (False, 0.0)       # stopped by the user
    rm.cancel()
    assert rm.should_restart(1, False, 1.0) == (False, 0.0)
    assert RestartManager("no", 0).should_restart(1, False, 1.0) == (False, 0.0)


def test_restart_on_daemon_start():
    assert restart_on_daemon_start("always", 0, False)
    assert restart_on_daemon_start("always", 0, True)
    assert restart_on_daemon_start("unless-stopped", 0, False)
    assert not restart_on_daemon_start("unless-stopped", 0, True)
    assert restart_on_daemon_start("on-failure", 2, False)
    assert not restart_on_daemon_start("on-failure", 0, False)
    assert not restart_on_daemon_start("no", 1, False)


def test_validate_restart_policy():
    assert validate_restart_policy(None, False) == {"Name": "no", "MaximumRetryCount": 0}
    assert validate_restart_policy({"Name": ""}, True) == {"Name": "no", "MaximumRetryCount": 0}
    assert validate_restart_policy({"Name": "on-failure", "MaximumRetryCount": 3}, False)["MaximumRetryCount"] == 3
    for bad, msg in (({"Name": "sometimes"}, "unknown policy 'sometimes'"),
                     ({"Name": "always", "MaximumRetryCount": 2}, "can only be used with 'on-failure'"),
                     ({"Name": "on-failure", "MaximumRetryCount": -1}, "cannot be negative")):
        with pytest.raises(InvalidParameter, match=msg):
            validate_restart_policy(bad, False)
    with pytest.raises(InvalidParameter, match="cannot specify both --restart and --rm"):
        validate_restart_policy({"Name": "always"}, True)


def test_resolv_conf_drops_local_nameservers_and_never_invents_one():
    host = "# generated\nnameserver 127.0.0.53\nnameserver ::1\nsearch example.org\noptions edns0 trust-ad\n"
    out = etcfiles.resolv_conf(host)
    assert "nameserver" not in out.replace("no nameserver", "")
    assert out.startswith("# skiffd: the host's resolv.conf names no nameserver")
    assert "127.0.0.53, ::1" in out
    assert "search example.org\n" in out and "options edns0 trust-ad\n" in out
    out = etcfiles.resolv_conf("nameserver 10.1.2.3\nnameserver 127.0.0.1\n")
    assert out == "nameserver 10.1.2.3\n"
    out = etcfiles.resolv_conf("nameserver 127.0.0.1\n", dns=["192.0.2.1"], search=["a.b"], options=["ndots:2"])
    assert out == "search a.b\nnameserver 192.0.2.1\noptions ndots:2\n"     # dockerd's order
    with pytest.raises(ValueError, match="not an IP address"):
        etcfiles.resolv_conf("", dns=["dns.example"])


def test_hosts_file():
    out = etcfiles.hosts_file(["db:10.0.0.5", "v6:fe80::1", "new=192.0.2.9"])
    assert out.startswith("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    assert out.endswith("10.0.0.5\tdb\nfe80::1\tv6\n192.0.2.9\tnew\n")
    with pytest.raises(ValueError, match="invalid IP address"):
        etcfiles.hosts_file(["x:notanip"])
    with pytest.raises(ValueError, match="host-gateway"):
        etcfiles.hosts_file(["x:host-gateway"])
    assert etcfiles.hosts_file(["host.docker.internal:host-gateway", "y=host-gateway"],
                               host_gateway="172.18.0.1").endswith(
        "172.18.0.1\thost.docker.internal\n172.18.0.1\ty\n")
    assert etcfiles.uses_host_gateway(["a:1.2.3.4", "b=host-gateway"])
    assert not etcfiles.uses_host_gateway(["a:1.2.3.4", "host-gateway:1.2.3.4"])


def test_fill_host_config_defaults():
    cfg = DaemonConfig(log_opts={"max-size": "1m"})
    h = fill_host_config({}, cfg)
    assert h["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert h["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m"}}
    assert h["NetworkMode"] == "default" and h["Runtime"] == "skiff-runc" and h["ShmSize"] == 64 << 20
    h = fill_host_config({"LogConfig": {"Type": "none", "Config": None}, "Runtime": "runc"}, cfg)
    assert h["LogConfig"] == {"Type": "none", "Config": {}} and h["Runtime"] == "runc"


def test_parse_signal():
    assert parse_signal("TERM") == signal.SIGTERM == parse_signal("SIGTERM") == parse_signal("15")
    assert parse_signal("sigkill") == 9 and parse_signal("SIGRTMIN+3") == signal.SIGRTMIN + 3
    for bad in ("NOPE", "0", "999", ""):
        with pytest.raises(InvalidParameter, match="Invalid signal"):
            parse_signal(bad)


def test_start_failure_exit_codes():
    assert start_failure('exec: "nosuch": executable file not found in $PATH') == (127, True)
    assert start_failure('exec: "/no/such": stat /no/such: no such file or directory') == (127, True)
    assert start_failure('exec: "/etc": permission denied') == (126, True)
    assert start_failure("cgroup: something broke") == (128, False)


def test_health_probe_args_and_record():
    from skiff.daemon.containers.health import Settings, probe_args, record

    assert probe_args(["CMD-SHELL", "curl -f x || exit 1"]) == ["/bin/sh", "-c", "curl -f x || exit 1"]
    assert probe_args(["CMD", "true", "x"]) == ["true", "x"]
    assert probe_args(["NONE"]) is None and probe_args([]) is None
    s = Settings({"Test": ["CMD", "true"], "Interval": 2_000_000_000, "Retries": 0})
    assert (s.interval, s.timeout, s.retries, s.start_period) == (2.0, 30.0, 3, 0.0)
    h = {"Status": "starting", "FailingStreak": 0, "Log": []}
    fail = {"ExitCode": 1, "Output": "", "Start": "", "End": ""}
    assert record(h, fail, 2, in_start_period=True) == "starting" and h["FailingStreak"] == 0
    assert record(h, fail, 2, in_start_period=False) == "starting" and h["FailingStreak"] == 1
    assert record(h, fail, 2, in_start_period=False) == "unhealthy"
    for _ in range(5):
        assert record(h, {**fail, "ExitCode": 0}, 2, False) == "healthy"
    assert len(h["Log"]) == 5 and h["FailingStreak"] == 0
    assert State(status="running", started_at=S, health=h).describe(3 * S) == "Up 2 seconds (healthy)"
    h["Status"] = "starting"
    assert State(status="running", started_at=S, health=h).describe(3 * S) == "Up 2 seconds (health: starting)"


def test_event_monitor_dispatches_and_resubscribes_after_a_broken_stream():
    import asyncio

    from skiff.daemon.api.errors import Unavailable
    from skiff.daemon.containerd.client import Envelope
    from skiff.daemon.containers import monitor as mon

    seen: list[tuple] = []
    calls: list[str] = []
    streams = [
        [Envelope(0, "skiff", "/tasks/oom", {"container_id": "c1"}), "break"],
        [Envelope(0, "skiff", "/tasks/exit", {"container_id": "c1", "id": "c1", "exit_status": 137,
                                                 "exited_at": 5})],
    ]

    def subscribe(filters):
        calls.append(f"subscribe {filters}")
        items = streams.pop(0) if streams else []

        async def gen():
            for it in items:
                if it == "break":
                    raise Unavailable("containerd at /x: Socket closed")
                yield it
            await asyncio.Event().wait()      # then the stream stays open
        return gen()

    async def on_exit(cid, eid, status, at):
        seen.append(("exit", cid, eid, status, at))

    async def on_oom(cid):
        seen.append(("oom", cid))

    async def reconnect():
        calls.append("reconcile")

    async def ensure():
        calls.append("ensure")

    async def main():
        m = mon.EventMonitor(subscribe, "skiff", on_exit, on_oom, reconnect, ensure)
        m.retry_delay = 0
        m.start()
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
        await m.stop()

    asyncio.run(main())
    assert seen == [("oom", "c1"), ("exit", "c1", "c1", 137, 5)]
    assert calls == ['subscribe [\'namespace=="skiff"\']', "ensure", 'subscribe [\'namespace=="skiff"\']',
                     "reconcile"]


def test_user_names_resolved_from_the_topmost_layer_with_etc_passwd(tmp_path):
    from skiff.daemon.containerd.client import Mount
    from skiff.daemon.containers.backend import _layer_dirs, resolve_user_in_mounts

    upper, low1, low2 = tmp_path / "upper", tmp_path / "l1", tmp_path / "l2"
    for d in (upper, low1, low2):
        d.mkdir()
    (low2 / "etc").mkdir()
    (low2 / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nweb:x:33:44::/w:/bin/sh\n")
    (low2 / "etc" / "group").write_text("root:x:0:\nwww:x:44:\nstaff:x:50:web\n")
    m = Mount("overlay", "overlay", [f"lowerdir={low1}:{low2}", f"upperdir={upper}", "workdir=/w"])
    assert _layer_dirs([m]) == [str(upper), str(low1), str(low2)]
    assert resolve_user_in_mounts([m], "1000:1000", None) is None          # numeric: specgen's job
    u = resolve_user_in_mounts([m], "web", None)
    assert (u["uid"], u["gid"]) == (33, 44) and 50 in u["additionalGids"]
    with pytest.raises(InvalidParameter):
        resolve_user_in_mounts([m], "nobody", None)
