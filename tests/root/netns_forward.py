"""A TCP port of this network namespace made reachable from another one: a forwarder process
listens on ``127.0.0.1:PORT`` inside a network namespace (e.g. the private dockerd's, see
``dockerd_util``) and connects each client to ``127.0.0.1:PORT`` of the namespace it was started
in. With the same port number on both sides, a registry on the host's loopback has the same
name (``127.0.0.1:PORT/repo``) for a daemon inside the namespace and one outside, so image
references and RepoDigests compare as they are.

The forwarder is this file run as a program. It enters the namespace with setns(2) while it
is still single-threaded, binds its listening socket there, goes back to its own namespace
(the socket stays where it was made) and from then on only accepts and copies bytes, one pair
of threads per connection. ``PortForward.stop`` ends it by its PID.

    fwd = PortForward("/run/netns/skiff-dk-1234", 5000)   # loopback of that namespace brought up
    ...
    fwd.stop()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

CLONE_NEWNET = 0x40000000


class PortForward:
    def __init__(self, netns_path: str, port: int, timeout: float = 30) -> None:
        subprocess.run(["nsenter", f"--net={netns_path}", "--", "ip", "link", "set", "lo", "up"],
                       check=True, capture_output=True, text=True)
        self.netns_path = netns_path
        self.port = port
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), netns_path, str(port)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"port forwarder into {netns_path} (port {port}) did not start: "
                               f"{line}{self.proc.stderr.read() if self.proc.stderr else ''}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def _setns(fd: int, what: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into {what}: {os.strerror(err)}")


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(1 << 16)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass          # the other direction closed both; nothing left to copy
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _serve(client: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=30)
    except OSError as e:
        print(f"forward: connect to 127.0.0.1:{port}: {e}", file=sys.stderr, flush=True)
        client.close()
        return
    upstream.settimeout(None)
    t = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    t.start()
    _pump(client, upstream)
    t.join()
    client.close()
    upstream.close()


def main(netns_path: str, port: int) -> int:
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    _setns(target, netns_path)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    _setns(home, "the forwarder's own network namespace")
    os.close(home)
    os.close(target)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("ready", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve, args=(client, port), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
