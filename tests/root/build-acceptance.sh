#!/usr/bin/env bash
# Drive `docker build` (the classic builder, POST /build) against a running daemon and check what a
# Docker user expects (issue 10's proof), in the style of ../../../shared/acceptance/docker-cli.sh.
#
#   DOCKER_HOST=unix:///run/skiff/skiff.sock ./build-acceptance.sh
#
# DOCKER chooses the client (default: docker on PATH; the real docker CLI falls back to the classic
# builder without buildx, or use DOCKER_BUILDKIT=0; the skiff CLI works as is). Every check prints
# PASS/FAIL with what it saw; the last line is "N passed, M failed"; exit status 0 only when nothing
# failed. Needs busybox:latest (loaded from BUSYBOX_TAR, default ../../build/images/busybox.tar, when
# missing), python3 and tar. Everything it creates is tagged bacc<pid>-* and removed at the end.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
DOCKER=${DOCKER:-docker}
BUSYBOX_TAR=${BUSYBOX_TAR:-$HERE/../../build/images/busybox.tar}
P=bacc$$
T=${ACC_TIMEOUT:-120}
pass=0 fail=0
tmp=$(mktemp -d)

d() { timeout "$T" "$DOCKER" "$@"; }
# run IMAGE...: docker run --rm without pulling (nothing may reach a registry)
run() { timeout "$T" "$DOCKER" run --rm --pull never "$@"; }
ok()  { pass=$((pass + 1)); echo "PASS $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
# expect NAME WANT CMD... : CMD's stdout (trimmed) must equal WANT
expect() {
    local name=$1 want=$2; shift 2
    local got; got=$("$@" 2>"$tmp/err"); got=${got%$'\n'}
    if [ "$got" = "$want" ]; then ok "$name"; else bad "$name" "want [$want] got [$got] $(head -c 400 "$tmp/err")"; fi
}
# expect_rc NAME RC CMD... : CMD must exit with RC
# (its stdout and stderr stay in $tmp/rc.out and $tmp/rc.err for the checks that follow)
expect_rc() {
    local name=$1 want=$2; shift 2
    "$@" >"$tmp/rc.out" 2>"$tmp/rc.err"; local rc=$?
    if [ "$rc" = "$want" ]; then ok "$name"; else bad "$name" "want exit $want got $rc: $(tail -c 400 "$tmp/rc.out") $(tail -c 400 "$tmp/rc.err")"; fi
}
# expect_match NAME REGEX CMD... : CMD's stdout must match the extended REGEX
expect_match() {
    local name=$1 re=$2; shift 2
    local got; got=$("$@" 2>"$tmp/err")
    if printf '%s' "$got" | grep -Eq -- "$re"; then ok "$name"; else bad "$name" "want /$re/ got [$(printf '%s' "$got" | tail -c 400)] $(tail -c 400 "$tmp/err")"; fi
}
# build NAME ARGS... : docker build, its stdout in $tmp/NAME.out, stderr in $tmp/NAME.err; returns its status
build() {
    local name=$1; shift
    timeout "$T" "$DOCKER" build "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
}
# build_ok NAME ARGS... : a check that the build succeeds
build_ok() {
    local name=$1; shift
    if build "$name" "$@"; then ok "$name"; else bad "$name" "exit $?: $(tail -c 600 "$tmp/$name.out") $(tail -c 400 "$tmp/$name.err")"; fi
}

cleanup() {
    local ids tags
    ids=$(d ps -aq --filter "name=$P" 2>/dev/null); [ -n "$ids" ] && d rm -f $ids >/dev/null 2>&1
    tags=$(d images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep "^$P-")
    [ -n "$tags" ] && d rmi -f $tags >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT

ensure_busybox() {
    d image inspect busybox:latest >/dev/null 2>&1 || d load -i "$BUSYBOX_TAR" >/dev/null
}

# a context with every instruction (FROM ARG ENV LABEL RUN COPY ADD WORKDIR USER EXPOSE VOLUME CMD
# ENTRYPOINT SHELL STOPSIGNAL HEALTHCHECK ONBUILD MAINTAINER); ADD gets a local tar to extract
make_all_context() {
    local c=$tmp/all
    mkdir -p "$c/src/dir"
    echo "hello-file" > "$c/hello.txt"
    echo "inner" > "$c/src/dir/inner.txt"
    tar -C "$c/src" -cf "$c/archive.tar" dir
    rm -rf "$c/src"
    cat > "$c/Dockerfile" <<EOF
# every instruction of the classic builder
FROM busybox
LABEL acc.run="$P"
MAINTAINER acc <acc@example.com>
ARG GREETING=hello
ENV APP_HOME=/app GREETING_ENV=\$GREETING
LABEL org.example.k="v" other=x
RUN mkdir -p \$APP_HOME && echo "\$GREETING from run" > \$APP_HOME/run.txt && echo 'appuser:x:1234:1234:app:/app:/bin/sh' >> /etc/passwd
COPY hello.txt \$APP_HOME/
ADD archive.tar /opt/
WORKDIR \$APP_HOME
SHELL ["/bin/sh", "-c"]
RUN echo shell-form > shell.txt && \\
    chown appuser shell.txt
USER appuser
EXPOSE 8080/tcp 9090/udp
VOLUME ["/data"]
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=30s --timeout=5s --retries=2 CMD true
ONBUILD RUN echo child-trigger-ran
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo \$GREETING_ENV; id -u; pwd; cat run.txt hello.txt /opt/dir/inner.txt shell.txt"]
EOF
}

g_build() {
    ensure_busybox
    local img=$P-all
    make_all_context

    # -- single stage, every instruction
    build_ok build-all-instructions -t "$img" "$tmp/all"
    expect run-cmd-env-user-workdir-files $'hello\n1234\n/app\nhello from run\nhello-file\ninner\nshell-form' run "$img"
    expect inspect-user 'appuser' d inspect -f '{{.Config.User}}' "$img"
    expect inspect-workdir '/app' d inspect -f '{{.Config.WorkingDir}}' "$img"
    expect inspect-cmd '["echo $GREETING_ENV; id -u; pwd; cat run.txt hello.txt /opt/dir/inner.txt shell.txt"]' d inspect -f '{{json .Config.Cmd}}' "$img"
    expect inspect-entrypoint '["/bin/sh","-c"]' d inspect -f '{{json .Config.Entrypoint}}' "$img"
    expect inspect-env 'APP_HOME=/app GREETING_ENV=hello' sh -c "timeout $T $DOCKER inspect -f '{{range .Config.Env}}{{println .}}{{end}}' $img | grep -E '^(APP_HOME|GREETING_ENV)=' | tr '\n' ' ' | sed 's/ \$//'"
    expect inspect-labels 'v x' d inspect -f '{{index .Config.Labels "org.example.k"}} {{index .Config.Labels "other"}}' "$img"
    expect inspect-exposed '{"8080/tcp":{},"9090/udp":{}}' d inspect -f '{{json .Config.ExposedPorts}}' "$img"
    expect inspect-volumes '{"/data":{}}' d inspect -f '{{json .Config.Volumes}}' "$img"
    expect inspect-stopsignal 'SIGUSR1' d inspect -f '{{.Config.StopSignal}}' "$img"
    expect inspect-healthcheck '{"Test":["CMD-SHELL","true"],"Interval":30000000000,"Timeout":5000000000,"Retries":2}' d inspect -f '{{json .Config.Healthcheck}}' "$img"
    expect inspect-onbuild '["RUN echo child-trigger-ran"]' d inspect -f '{{json .Config.OnBuild}}' "$img"
    expect inspect-shell '["/bin/sh","-c"]' d inspect -f '{{json .Config.Shell}}' "$img"
    expect inspect-maintainer 'acc <acc@example.com>' d inspect -f '{{.Author}}' "$img"
    expect add-extracted-tar 'inner' run --entrypoint cat "$img" /opt/dir/inner.txt
    expect_match build-output-steps '^Step 1/20 : FROM busybox$' grep -E '^Step 1/' "$tmp/build-all-instructions.out"
    expect_match build-output-tagged "^Successfully tagged $img:latest\$" tail -1 "$tmp/build-all-instructions.out"

    # -- ONBUILD triggers run in the child build
    mkdir -p "$tmp/child" && printf 'FROM %s\nRUN echo child-build\n' "$img" > "$tmp/child/Dockerfile"
    build_ok build-onbuild-child -t "$P-child" "$tmp/child"
    expect_match onbuild-trigger-ran 'Executing 1 build trigger' cat "$tmp/build-onbuild-child.out"
    expect_match onbuild-trigger-output '^child-trigger-ran$' cat "$tmp/build-onbuild-child.out"

    # -- a rebuild is entirely cached: every step after FROM says so, the same image comes out
    build_ok rebuild "$tmp/all" --iidfile "$tmp/rebuild.iid"
    expect rebuild-all-cached '19 19 0' sh -c "echo \$(grep -c '^Step ' $tmp/rebuild.out) \$(grep -c '^ ---> Using cache' $tmp/rebuild.out) \$(grep -c 'Running in' $tmp/rebuild.out) | awk '{print \$1-1, \$2, \$3}'"
    expect rebuild-same-id "$(d inspect -f '{{.Id}}' "$img")" cat "$tmp/rebuild.iid"

    # -- docker history shows the steps
    expect_match history-steps 'WORKDIR /app' sh -c "timeout $T $DOCKER history --no-trunc --format '{{.CreatedBy}}' $img | tr '\n' '|'"
    expect_match history-run 'echo shell-form > shell.txt' d history --no-trunc --format '{{.CreatedBy}}' "$img"
    expect history-count 'ok' sh -c "n=\$(timeout $T $DOCKER history -q $img | wc -l); b=\$(timeout $T $DOCKER history -q busybox | wc -l); [ \$((n - b)) -eq 19 ] && echo ok || echo \"\$n lines, busybox \$b\""

    # -- multi-stage: a file copied between stages
    mkdir -p "$tmp/multi"
    cat > "$tmp/multi/Dockerfile" <<EOF
FROM busybox AS builder
LABEL acc.run="$P"
RUN echo built-in-stage-one > /artifact
FROM busybox
COPY --from=builder /artifact /copied
CMD ["cat", "/copied"]
EOF
    build_ok build-multistage -t "$P-multi" "$tmp/multi"
    expect multistage-copied 'built-in-stage-one' run "$P-multi"

    # -- build args and --target
    mkdir -p "$tmp/args"
    cat > "$tmp/args/Dockerfile" <<EOF
ARG BASE=busybox
FROM \$BASE AS first
LABEL acc.run="$P"
ARG MSG=default
RUN echo "first:\$MSG" > /msg
CMD ["cat", "/msg"]
FROM first AS second
RUN echo second >> /msg
EOF
    build_ok build-args-target --build-arg MSG=custom --target first -t "$P-first" "$tmp/args"
    expect build-arg-used 'first:custom' run "$P-first"
    build_ok build-args-default -t "$P-second" "$tmp/args"
    expect build-target-default-last $'first:default\nsecond' run "$P-second"

    # -- a failing RUN: the error and the exit code as the CLI shows them
    mkdir -p "$tmp/fail"
    printf 'FROM busybox\nLABEL acc.run="%s"\nRUN echo before-failure && exit 7\n' "$P" > "$tmp/fail/Dockerfile"
    expect_rc build-fail-exit-code 7 d build -t "$P-fail" "$tmp/fail"
    expect_match build-fail-message "^The command '/bin/sh -c echo before-failure && exit 7' returned a non-zero code: 7\$" cat "$tmp/rc.err"
    expect_match build-fail-output-shown '^before-failure$' cat "$tmp/rc.out"
    expect_rc build-fail-not-tagged 1 d image inspect "$P-fail"

    # -- .dockerignore
    mkdir -p "$tmp/ign/keep" "$tmp/ign/skipdir"
    echo k > "$tmp/ign/keep/a"; echo i > "$tmp/ign/ignored.txt"; echo s > "$tmp/ign/skipdir/x"
    echo t > "$tmp/ign/scratch.tmp"; echo imp > "$tmp/ign/important.tmp"
    printf 'ignored.txt\n*.tmp\n!important.tmp\nskipdir\n' > "$tmp/ign/.dockerignore"
    printf 'FROM busybox\nLABEL acc.run="%s"\nCOPY . /ctx/\n' "$P" > "$tmp/ign/Dockerfile"
    build_ok build-dockerignore -t "$P-ign" "$tmp/ign"
    expect dockerignore-applied '.dockerignore Dockerfile important.tmp keep' sh -c "timeout $T $DOCKER run --rm --pull never $P-ign ls -A /ctx | tr '\n' ' ' | sed 's/ \$//'"

    # -- the Dockerfile from outside the context, and from stdin
    printf 'FROM busybox\nLABEL acc.run="%s"\nCOPY . /c/\nCMD ["ls", "-A", "/c"]\n' "$P" > "$tmp/outside.Dockerfile"
    build_ok build-file-outside -f "$tmp/outside.Dockerfile" -t "$P-out" "$tmp/ign"
    expect file-outside-not-in-context '.dockerignore Dockerfile important.tmp keep' sh -c "timeout $T $DOCKER run --rm --pull never $P-out | tr '\n' ' ' | sed 's/ \$//'"
    expect stdin-dockerfile 'from-stdin' sh -c "printf 'FROM busybox\nCMD [\"echo\", \"from-stdin\"]\n' | timeout $T $DOCKER build -q -t $P-stdin - >/dev/null && timeout $T $DOCKER run --rm --pull never $P-stdin"
    expect stdin-tar-context 'hello-file' sh -c "tar -C $tmp/all -cf - Dockerfile hello.txt archive.tar | timeout $T $DOCKER build -q -t $P-tar - >/dev/null && timeout $T $DOCKER run --rm --pull never --entrypoint cat $P-tar /app/hello.txt"

    # -- -q and --iidfile
    expect_match quiet-prints-id '^sha256:[0-9a-f]{64}$' d build -q "$tmp/multi"
    build_ok build-iidfile --iidfile "$tmp/iid" -t "$P-iid" "$tmp/multi"
    expect iidfile-is-image-id "$(d inspect -f '{{.Id}}' "$P-multi" 2>/dev/null)" cat "$tmp/iid"

    # -- hostile contexts: nothing outside the context can be read
    mkdir -p "$tmp/host/ctx"
    echo HOST-SECRET > "$tmp/host/secret.txt"
    ln -s .. "$tmp/host/ctx/up"
    printf 'FROM busybox\nCOPY ../secret.txt /s\n' > "$tmp/host/ctx/Dockerfile"
    expect_rc hostile-dotdot-refused 1 d build -t "$P-h1" "$tmp/host/ctx"
    expect_match hostile-dotdot-message 'outside the build context|not found in build context' cat "$tmp/rc.err"
    printf 'FROM busybox\nCOPY up/secret.txt /s\n' > "$tmp/host/ctx/Dockerfile"
    expect_rc hostile-symlink-dir-refused 1 d build -t "$P-h2" "$tmp/host/ctx"
    ln -s "$tmp/host/secret.txt" "$tmp/host/ctx/abs-link"
    printf 'FROM busybox\nCOPY abs-link /s\nRUN cat /s\n' > "$tmp/host/ctx/Dockerfile"
    expect_rc hostile-abs-symlink-refused 1 d build -t "$P-h3" "$tmp/host/ctx"
    expect hostile-secret-not-leaked 'clean' sh -c "grep -q HOST-SECRET $tmp/rc.out $tmp/rc.err && echo leaked || echo clean"
}

groups=${*:-build}
for g in $groups; do
    echo "== $g"
    "g_$g"
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
