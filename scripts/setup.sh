#!/bin/bash
# Install everything Skiff needs on a Debian 12 machine, as root: the apt packages, a venv in
# .venv with the package (editable) and its test tools, and the built-in busybox image in
# build/images. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (it installs apt packages and Skiff runs containers)" >&2
    exit 1
fi

APT_PACKAGES=(
    python3 python3-venv python3-dev gcc          # the venv; some wheels may build
    busybox-static                                # the built-in busybox image is made from it
    runc crun containerd docker.io                # the real layers Skiff is compared with and swapped with
    docker-registry skopeo umoci                  # local registry and image tools for tests
    golang-go                                     # builds the OCI runtime-tools validation suite
    golang-github-containerd-containerd-dev       # containerd 1.6's .proto files: skiff-containerd's
    golang-github-gogo-protobuf-dev golang-github-gogo-googleapis-dev   # gRPC stubs are made from them
    golang-github-containerd-cgroups-dev          # ... and the task metrics types from its .proto files
    tini                                          # --init: tini-static is the container's PID 1
    libseccomp2 nftables iptables iproute2 procps util-linux hyperfine ca-certificates
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    # Debian starts services on install; keep dockerd, containerd and the registry from starting
    # on their own (tests start private instances with their own sockets and data roots).
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    [ "$made_policy" = 1 ] && rm -f "$policy"
fi

if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
stamp=".venv/.skiff-installed"
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
.venv/bin/python -m skiff.launchers   # pip rewrites console scripts on every install
.venv/bin/python -m skiff.containerd.protos build   # containerd API stubs (skipped when current)
# Byte-compile the package: an editable install doesn't, and the per-container processes (runtime,
# shims) would otherwise compile their sources at every start when PYTHONDONTWRITEBYTECODE is set.
.venv/bin/python -m compileall -q src/skiff

.venv/bin/python -m skiff.images.builtin build --out build/images
