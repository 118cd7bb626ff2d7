#!/bin/bash
# The main job: run a first container with the deepest layer that works today.
# skiff-runc, our OCI runtime, runs the built-in busybox image (made by setup.sh) as a bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/skiff-main.XXXXXX)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m skiff.images.builtin bundle --image build/images/busybox-oci \
    --out "$work/bundle" -- echo hello from isolation
exec .venv/bin/skiff-runc --root "$work/state" run --bundle "$work/bundle" "main-job-$$"
