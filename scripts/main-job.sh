#!/bin/bash
# The main job: start the stack (skiffd, which starts skiff-containerd and loads the built-in
# busybox image), then run a container with the docker CLI against skiffd.
#
# The stack keeps running afterwards (as a service would): use it with
#   DOCKER_HOST=unix:///run/skiff/skiff.sock docker ...
# and stop it with `kill $(cat /run/skiff/skiffd.pid)` (containers and skiff-containerd keep
# running, as with dockerd's live restore; see ARCHITECTURE.md).
set -euo pipefail
cd "$(dirname "$0")/.."
SOCK=/run/skiff/skiff.sock
export DOCKER_HOST=unix://$SOCK
if [ -x /usr/local/bin/docker ]; then DOCKER=/usr/local/bin/docker   # a current CLI, if installed
else DOCKER=$(command -v docker) || { echo "main-job: no docker CLI (setup.sh installs docker.io)" >&2; exit 1; }; fi

ping() { .venv/bin/python - "$SOCK" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
try:
    s.connect(sys.argv[1])
    s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
    sys.exit(0 if s.recv(64).split(b" ")[1:2] == [b"200"] else 1)
except OSError:
    sys.exit(1)
EOF
}

if ! ping; then
    mkdir -p /var/log/skiff
    echo "main-job: starting skiffd (log: /var/log/skiff/skiffd.log)"
    setsid .venv/bin/skiffd >>/var/log/skiff/skiffd.log 2>&1 </dev/null &
    for _ in $(seq 1 300); do
        ping && break
        kill -0 $! 2>/dev/null || { echo "main-job: skiffd exited; see /var/log/skiff/skiffd.log" >&2; tail -5 /var/log/skiff/skiffd.log >&2; exit 1; }
        sleep 0.1
    done
    ping || { echo "main-job: skiffd did not answer on $SOCK within 30 s" >&2; exit 1; }
fi
"$DOCKER" image inspect busybox:latest >/dev/null   # loaded by skiffd at start
exec "$DOCKER" run --rm busybox echo hello from isolation
