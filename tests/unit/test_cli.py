"""Unit tests of the `skiff` CLI's pieces: flag parser, Go templates, human formats, the raw
HTTP client (against a scripted server on a Unix socket), stream demux, create bodies."""

from __future__ import annotations

import io
import os
import socket
import threading

import pytest

from skiff.cli import fmt
from skiff.cli.container import RUN_SPEC, _detach_keys, _start_exit_code, build_create, ram_bytes
from skiff.cli.flags import Spec, parse
from skiff.cli.http import APIError, Client, CLIError, ConnectError, Stream, demux, quote
from skiff.cli.main import main
from skiff.cli.template import Template, TemplateError

# ---------------------------------------------------------------- flags


def test_flags_short_long_combined_and_values():
    spec = Spec("i|interactive", "t|tty", "d|detach", "e|env=", "name:", "t2|time#")
    o, pos = parse(spec, ["-it", "--name=x", "-e", "A=1", "-eB=2", "--env", "C=3", "img", "-d"], False)
    assert o["interactive"] and o["tty"] and not o["detach"]
    assert o["name"] == "x"
    assert o["env"] == ["A=1", "B=2", "C=3"]
    assert pos == ["img", "-d"]          # not interspersed: flags after the image are the command's


def test_flags_interspersed_bool_value_int_and_double_dash():
    spec = Spec("f|force", "t|time#")
    o, pos = parse(spec, ["a", "-f", "b", "--time", "5", "--force=false", "--", "-x"], True)
    assert pos == ["a", "b", "-x"]
    assert o["time"] == 5 and o["force"] is False


def test_flags_errors_exit_125():
    spec = Spec("t|time#", "name:")
    with pytest.raises(CLIError, match="unknown flag: --nope") as e:
        parse(spec, ["--nope"], True, "run")
    assert e.value.code == 125
    with pytest.raises(CLIError, match="flag needs an argument: --name"):
        parse(spec, ["--name"], True)
    with pytest.raises(CLIError, match="invalid argument \"x\""):
        parse(spec, ["-t", "x"], True)
    with pytest.raises(CLIError, match="unknown shorthand flag: 'z'"):
        parse(spec, ["-z"], True)


# ---------------------------------------------------------------- templates
DATA = {"State": {"Status": "running", "Pid": 42, "OOMKilled": False}, "Name": "/x",
        "Config": {"Cmd": ["sh", "-c", "a<b"], "Labels": {"k": "v", "a b": "c"}, "Env": None},
        "HostConfig": {"Memory": 33554432}, "ApiVersion": "1.47", "L": ["a", "b"]}


@pytest.mark.parametrize("src,want", [
    ("{{.State.Status}}", "running"),
    ("{{.State.Pid}} {{.State.OOMKilled}}", "42 false"),
    ("{{.HostConfig.Memory}}", "33554432"),
    ("{{json .Config.Cmd}}", '["sh","-c","a\\u003cb"]'),
    ('{{index .Config.Labels "a b"}}', "c"),
    ('{{(index .Config.Labels "k")}}', "v"),
    ("{{.APIVersion}}", "1.47"),                       # Go field name vs JSON key
    ("{{.Config.Env}}", "<nil>"),
    ("{{range .L}}<{{.}}>{{end}}", "<a><b>"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}},{{end}}", "a b=c,k=v,"),
    ('{{join .Config.Cmd " "}}', "sh -c a<b"),
    ("{{lower .State.Status}}-{{upper .State.Status}}", "running-RUNNING"),
    ("{{.State.Status | upper}}", "RUNNING"),
    ("{{if .State.OOMKilled}}oom{{else}}ok{{end}}", "ok"),
    ("{{if .Config.Env}}env{{else if .L}}list{{end}}", "list"),
    ("{{with .State}}{{.Pid}}{{end}}", "42"),
    ("{{.Config.Labels}}", "map[a b:c k:v]"),
    ("a {{- .Name -}} b", "a/xb"),
    ('{{printf "%s:%d" .Name .State.Pid}}', "/x:42"),
    ("{{len .L}}", "2"),
])
def test_template(src, want):
    assert Template(src).execute(DATA) == want


def test_template_errors():
    with pytest.raises(TemplateError, match="not defined"):
        Template("{{nosuch .X}}").execute(DATA)
    with pytest.raises(TemplateError, match="unclosed action"):
        Template("{{.X")
    with pytest.raises(TemplateError, match="missing"):
        Template("{{if .X}}a")
    with pytest.raises(TemplateError, match="nil pointer"):
        Template("{{.Config.Env.X}}").execute(DATA)
    with pytest.raises(TemplateError, match='map has no entry for key "Nope"'):
        Template("{{.State.Nope}}").execute(DATA)
    assert Template('{{index .Config.Labels "nope"}}').execute(DATA) == "<no value>"


def test_table_render_headers_and_alignment():
    rows = [{"ID": "abc", "Names": "one"}, {"ID": "defghijklmnop", "Names": "two"}]
    out = fmt.render("table {{.ID}}\t{{.Names}}", rows)
    assert out.split("\n") == ["CONTAINER ID    NAMES", "abc             one", "defghijklmnop   two"]
    assert fmt.render("{{.Names}}", rows) == "one\ntwo"


# ---------------------------------------------------------------- human formats
def test_human_formats():
    assert fmt.human_size(2048000) == "2.05MB"
    assert fmt.human_size(12) == "12B"
    assert fmt.bytes_size(64 * 1024 * 1024) == "64MiB"
    assert fmt.bytes_size(1536) == "1.5KiB"
    assert fmt.human_duration(0.5) == "Less than a second"
    assert fmt.human_duration(1) == "1 second"
    assert fmt.human_duration(59) == "59 seconds"
    assert fmt.human_duration(90) == "About a minute"
    assert fmt.human_duration(3600) == "About an hour"
    assert fmt.human_duration(5 * 86400) == "5 days"
    assert fmt.parse_rfc3339("1970-01-01T00:01:00.5Z") == 60.5
    assert fmt.parse_rfc3339("1970-01-01T01:00:00+01:00") == 0
    assert fmt.ellipsis("abcdef", 4) == "abc…"
    assert quote("a b/c:d") == "a%20b%2Fc%3Ad"


# ---------------------------------------------------------------- create body
def test_build_create_maps_docker_flags():
    o, pos = parse(RUN_SPEC, ["--rm", "-i", "-e", "A=1", "-w", "/tmp", "-u", "1000:1000", "-m", "32m",
                              "--memory-swap", "-1", "--cap-add", "net_admin", "--cap-drop", "ALL",
                              "--read-only", "--tmpfs", "/tmp:size=1m", "--restart", "on-failure:2",
                              "--network", "none", "--privileged", "--init", "--security-opt",
                              "no-new-privileges", "--pids-limit", "8", "-v", "v:/d", "--mount",
                              "type=bind,src=/a,dst=/b,readonly", "-p", "127.0.0.1:8080:80",
                              "--entrypoint", "echo", "--name", "n", "busybox", "x"], False)
    b = build_create(o, pos[0], pos[1:])
    h = b["HostConfig"]
    assert b["Image"] == "busybox" and b["Cmd"] == ["x"] and b["Entrypoint"] == ["echo"]
    assert b["Env"] == ["A=1"] and b["WorkingDir"] == "/tmp" and b["User"] == "1000:1000"
    assert b["AttachStdin"] and b["OpenStdin"] and b["StdinOnce"] and not b["Tty"]
    assert h["Memory"] == 32 * 1024 * 1024 and h["MemorySwap"] == -1
    assert h["CapAdd"] == ["CAP_NET_ADMIN"] and h["CapDrop"] == ["ALL"]
    assert h["ReadonlyRootfs"] and h["Tmpfs"] == {"/tmp": "size=1m"}
    assert h["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert h["NetworkMode"] == "none" and list(b["NetworkingConfig"]["EndpointsConfig"]) == ["none"]
    assert h["Privileged"] and h["Init"] is True and h["AutoRemove"]
    assert h["SecurityOpt"] == ["no-new-privileges"] and h["PidsLimit"] == 8
    assert h["Binds"] == ["v:/d"]
    assert h["Mounts"] == [{"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": True}]
    assert h["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}
    assert b["ExposedPorts"] == {"80/tcp": {}}


def test_build_create_defaults_detach_and_refusals():
    o, pos = parse(RUN_SPEC, ["-d", "busybox"], False)
    b = build_create(o, pos[0], pos[1:])
    assert not (b["AttachStdin"] or b["AttachStdout"] or b["AttachStderr"])
    assert b["Cmd"] is None and b["HostConfig"]["NetworkMode"] == "default"
    assert b["NetworkingConfig"] == {"EndpointsConfig": {"default": {}}}
    o, pos = parse(RUN_SPEC, ["--restart", "sometimes", "busybox"], False)
    with pytest.raises(CLIError, match="invalid restart policy"):
        build_create(o, pos[0], [])
    o, pos = parse(RUN_SPEC, ["--mount", "type=bind,bogus=1,dst=/x", "busybox"], False)
    with pytest.raises(CLIError, match="unexpected key 'bogus'"):
        build_create(o, pos[0], [])


def test_sizes_exit_codes_detach_keys():
    assert ram_bytes("32m") == 33554432 and ram_bytes("1g") == 1 << 30 and ram_bytes("64mb") == 64 << 20
    with pytest.raises(CLIError):
        ram_bytes("lots")
    assert _start_exit_code('exec: "x": executable file not found in $PATH') == 127
    assert _start_exit_code("open /no/such: no such file or directory") == 127
    assert _start_exit_code("exec /etc: permission denied") == 126
    assert _start_exit_code("something else") == 125
    assert _detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert _detach_keys("ctrl-a,x") == b"\x01x"
    with pytest.raises(CLIError):
        _detach_keys("ctrl-%")


# ---------------------------------------------------------------- HTTP client
class FakeDaemon:
    """A scripted HTTP server on a Unix socket: ``handler(method, path, headers, body, conn)``
    writes the raw response; requests on one connection are served in order (keep-alive)."""

    def __init__(self, path: str, handler) -> None:
        self.path = path
        self.handler = handler
        self.requests: list[tuple[str, str]] = []
        self.conns = 0
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(path)
        self.srv.listen(8)
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c: socket.socket) -> None:
        buf = b""
        with c:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
                n = int(headers.get("content-length", 0))
                while len(buf) < n:
                    buf += c.recv(65536)
                body, buf = buf[:n], buf[n:]
                self.requests.append((method, path))
                if self.handler(method, path, headers, body, c) == "close":
                    return

    def close(self) -> None:
        self.srv.close()


def _json_resp(c, status, body: bytes, reason="OK"):
    c.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


@pytest.fixture
def sockdir(tmp_path):
    d = f"/tmp/skcli{os.getpid()}"
    os.makedirs(d, exist_ok=True)
    yield d
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    os.rmdir(d)


def test_client_keepalive_chunked_and_errors(sockdir):
    def handler(method, path, headers, body, c):
        if path.endswith("/containers/json"):
            payload = b'[{"Id":"' + b"a" * 64 + b'"}]'
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + b"%x\r\n" % 5 + payload[:5] + b"\r\n" + b"%x;ext=1\r\n" % (len(payload) - 5)
                      + payload[5:] + b"\r\n0\r\n\r\n")
        elif "/containers/nope/json" in path:
            _json_resp(c, 404, b'{"message":"No such container: nope"}', "Not Found")
        else:
            _json_resp(c, 200, b'{"ok":true}')
    d = FakeDaemon(f"{sockdir}/s.sock", handler)
    try:
        cli = Client(f"unix://{sockdir}/s.sock")
        assert cli.get_json("/containers/json")[0]["Id"] == "a" * 64
        assert cli.get_json("/x") == {"ok": True}
        with pytest.raises(APIError) as e:
            cli.get_json("/containers/nope/json")
        assert e.value.status == 404 and e.value.msg == "Error response from daemon: No such container: nope"
        assert d.conns == 1                    # one keep-alive connection for all three
        assert d.requests[0] == ("GET", "/v1.47/containers/json")
    finally:
        d.close()


def test_client_negotiates_down_when_too_new(sockdir):
    def handler(method, path, headers, body, c):
        if path == "/_ping":
            c.sendall(b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK")
        elif path.startswith("/v1.47/"):
            _json_resp(c, 400, b'{"message":"client version 1.47 is too new. Maximum supported API version is 1.41"}')
        else:
            _json_resp(c, 200, b'{"path":"' + path.encode() + b'"}')
    d = FakeDaemon(f"{sockdir}/s.sock", handler)
    try:
        cli = Client(f"unix://{sockdir}/s.sock")
        assert cli.get_json("/info") == {"path": "/v1.41/info"}
        assert cli.version() == "1.41"
    finally:
        d.close()


def test_client_env_api_version_and_connect_error(sockdir, monkeypatch):
    monkeypatch.setenv("DOCKER_API_VERSION", "1.43")
    cli = Client(f"unix://{sockdir}/none.sock")
    assert cli.url("/x", {"a": True, "b": None, "f": {"name": {"n": True}}}) == \
        "/v1.43/x?a=1&f=%7B%22name%22%3A%20%7B%22n%22%3A%20true%7D%7D"
    with pytest.raises(ConnectError, match=f"Cannot connect to the Docker daemon at unix://{sockdir}/none.sock"):
        cli.get_json("/info")


def test_client_hijack_and_demux(sockdir):
    def handler(method, path, headers, body, c):
        assert headers["upgrade"] == "tcp"
        c.sendall(b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n"
                  b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n" + b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n")
        got = c.recv(100)                      # the client's stdin, then its half-close
        c.sendall(b"\x02\x00\x00\x00\x00\x00\x00" + bytes([len(got)]) + got)
        assert c.recv(100) == b""
        return "close"
    d = FakeDaemon(f"{sockdir}/s.sock", handler)
    try:
        cli = Client(f"unix://{sockdir}/s.sock")
        r = cli.hijack("/containers/x/attach", {"stream": "1"})
        assert r.status == 101
        r.body.sock.sendall(b"input")
        r.body.sock.shutdown(socket.SHUT_WR)
        out, err = io.BytesIO(), io.BytesIO()
        demux(r.body, out, err)
        assert out.getvalue() == b"hi\n" and err.getvalue() == b"input"
    finally:
        d.close()


def test_stream_chunked_split_reads():
    a, b = socket.socketpair()
    b.sendall(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    s = Stream(a, b"", "chunked")
    assert s.read_exact(4) == b"abcd" and s.read_all() == b"e" and s.done
    a.close()
    b.close()


def test_main_errors_and_usage(capsys, sockdir):
    assert main(["-H", f"unix://{sockdir}/none.sock", "ps"]) == 1
    assert "Cannot connect to the Docker daemon" in capsys.readouterr().err
    assert main(["frobnicate"]) == 1
    assert "'frobnicate' is not a skiff command" in capsys.readouterr().err
    assert main(["run", "--bogus", "busybox"]) == 125
    assert main([]) == 0 and "Usage:" in capsys.readouterr().out


# ---------------------------------------------------------------- progress, cp, time arguments
class _Lines:
    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines

    def lines(self):
        return iter(self._lines)


class _Out(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


PROGRESS = [b'{"status":"Pulling from library/bb","id":"1"}',
            b'{"status":"Downloading","id":"aa","progress":"[=>   ] 1kB/2kB"}',
            b'{"status":"Downloading","id":"bb","progress":"[>    ] 0B/2kB"}',
            b'{"status":"Pull complete","id":"aa"}',
            b'{"status":"Digest: sha256:00"}']


def test_progress_plain_and_terminal():
    from skiff.cli.image import show_progress

    out = _Out(False)
    show_progress(_Lines(PROGRESS), out)
    assert out.getvalue() == "1: Pulling from library/bb\naa: Pull complete\nDigest: sha256:00\n"
    out = _Out(True)
    show_progress(_Lines(PROGRESS), out)
    v = out.getvalue()
    assert v.startswith("1: Pulling from library/bb\naa: Downloading [=>   ] 1kB/2kB\nbb: Downloading")
    assert "\033[2A\r\033[2Kaa: Pull complete\r\033[2B" in v      # rewritten in place, two lines up
    with pytest.raises(CLIError, match="manifest unknown"):
        show_progress(_Lines([b'{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}']),
                      _Out(False))


def test_cp_arguments_and_unsafe_archives():
    import tarfile

    from skiff.cli.container import _safe_members, _split_cp

    assert _split_cp("c1:/etc/passwd") == ("c1", "/etc/passwd")
    assert _split_cp("/tmp/a:b") == (None, "/tmp/a:b")
    assert _split_cp("./x:y") == (None, "./x:y")
    assert _split_cp("plain") == (None, "plain")

    class TF:
        def __init__(self, *ms):
            self.ms = ms

        def getmembers(self):
            return list(self.ms)
    ok = tarfile.TarInfo("etc/passwd")
    assert [m.name for m in _safe_members(TF(ok), ("etc", "out"))] == ["out/passwd"]
    with pytest.raises(CLIError, match="outside the destination"):
        _safe_members(TF(tarfile.TarInfo("../evil")), None)
    hl = tarfile.TarInfo("x")
    hl.type = tarfile.LNKTYPE
    hl.linkname = "/etc/shadow"
    with pytest.raises(CLIError, match="hard link"):
        _safe_members(TF(hl), None)


def test_time_arguments(monkeypatch):
    from skiff.cli import container

    monkeypatch.setattr(container.time, "time", lambda: 1000.0)
    assert container._time_arg("1700000000") == "1700000000"
    assert container._time_arg("10m") == f"{1000 - 600:.9f}"
    assert container._time_arg("1h30s") == f"{1000 - 3630:.9f}"
    assert container._time_arg("1970-01-01T00:01:00Z") == f"{60:.9f}"
    assert container._time_arg("1970-01-02") == f"{86400:.9f}"
    with pytest.raises(CLIError):
        container._time_arg("yesterday")


# ---------------------------------------------------------------- tcp:// and TLS
class TCPDaemon:
    """One-response-per-connection JSON server on 127.0.0.1, optionally TLS (ssl context)."""

    def __init__(self, ctx=None) -> None:
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.ctx = ctx
        self.paths: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            try:
                if self.ctx is not None:
                    c = self.ctx.wrap_socket(c, server_side=True)
                buf = b""
                while b"\r\n\r\n" not in buf:
                    d = c.recv(4096)
                    if not d:
                        break
                    buf += d
                if buf:
                    self.paths.append(buf.split(b" ")[1].decode())
                    _json_resp(c, 200, b'{"OSType":"linux"}')
            except OSError:
                pass
            finally:
                c.close()

    def close(self) -> None:
        self.srv.close()


def test_client_tcp_plain(monkeypatch):
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.delenv("DOCKER_TLS", raising=False)
    d = TCPDaemon()
    try:
        cli = Client(f"tcp://127.0.0.1:{d.port}")
        assert cli.get_json("/info") == {"OSType": "linux"}
        assert d.paths == ["/v1.47/info"]
    finally:
        d.close()


def test_client_tcp_tls_verify(tmp_path, monkeypatch):
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    for name in ("ca", "server", "client"):
        subj = "/CN=skiff-test-ca" if name == "ca" else f"/CN={name}"
        if name == "ca":
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", subj,
                            "-keyout", tmp_path / "ca-key.pem", "-out", tmp_path / "ca.pem"],
                           check=True, capture_output=True)
            continue
        subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", subj,
                        "-keyout", tmp_path / f"{name}-key.pem", "-out", tmp_path / f"{name}.csr"],
                       check=True, capture_output=True)
        ext = tmp_path / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n")
        subprocess.run(["openssl", "x509", "-req", "-in", tmp_path / f"{name}.csr", "-CA", tmp_path / "ca.pem",
                        "-CAkey", tmp_path / "ca-key.pem", "-CAcreateserial", "-days", "1", "-extfile", ext,
                        "-out", tmp_path / f"{name}.pem"], check=True, capture_output=True)
    os.rename(tmp_path / "client.pem", tmp_path / "cert.pem")
    os.rename(tmp_path / "client-key.pem", tmp_path / "key.pem")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server-key.pem")
    ctx.load_verify_locations(tmp_path / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED          # the client must show its certificate
    d = TCPDaemon(ctx)
    try:
        monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
        monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
        assert Client(f"tcp://127.0.0.1:{d.port}").get_json("/info") == {"OSType": "linux"}
        # a CA that did not sign the server's certificate: refused
        other = tmp_path / "other"
        other.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=other", "-keyout", other / "k.pem", "-out", other / "ca.pem"],
                       check=True, capture_output=True)
        monkeypatch.setenv("DOCKER_CERT_PATH", str(other))
        with pytest.raises(CLIError, match="TLS handshake"):
            Client(f"tcp://127.0.0.1:{d.port}").get_json("/info")
    finally:
        d.close()


def test_ps_ports_column_like_docker():
    from skiff.cli.container import _ports

    ports = [{"PrivatePort": 83, "PublicPort": 18194, "IP": "0.0.0.0", "Type": "tcp"},
             {"PrivatePort": 9001, "Type": "tcp"}, {"PrivatePort": 9000, "Type": "tcp"},
             {"PrivatePort": 7, "Type": "udp"},
             {"PrivatePort": 18196, "PublicPort": 18196, "IP": "0.0.0.0", "Type": "tcp"},
             {"PrivatePort": 18195, "PublicPort": 18195, "IP": "0.0.0.0", "Type": "tcp"},
             {"PrivatePort": 80, "PublicPort": 8080, "IP": "::", "Type": "tcp"},
             {"PrivatePort": 80, "PublicPort": 8080, "IP": "127.0.0.1", "Type": "tcp"}]
    assert _ports(ports) == ("7/udp, 9000-9001/tcp, 0.0.0.0:18195-18196->18195-18196/tcp, "
                             "127.0.0.1:8080->80/tcp, [::]:8080->80/tcp, 0.0.0.0:18194->83/tcp")
    assert _ports([]) == ""
