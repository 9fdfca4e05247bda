#!/usr/bin/env bash
# Check that compose's serve-host service puts ustack's TUN device on "the host", so that the
# host reaches ustack with plain curl and ping, as the README's daemon section promises -- without
# touching this machine's own network.
#
# How: "the host" is a network namespace this script creates. A private dockerd is started inside
# it (its own socket, exec root and pid file), so for its containers `network_mode: host` means
# that namespace. The service is started with Debian's docker-compose (or `docker compose`) from
# docker/compose.yml; then, from the namespace -- the host's point of view -- curl fetches
# http://10.7.0.2/ and, where IPv6 works, http://[fd00:7::2]/, and ping reaches 10.7.0.2. Everything
# is removed on exit: the service, the dockerd, the namespace.
#
# Needs root, docker.io, and the ustack-test image (docker/test.sh builds it; CI runs this right
# after). When no other Docker daemon runs, the private one uses the default data root, where
# that image is; otherwise the image is copied into a private data root with save/load.
#
# Usage: docker/host-check.sh        Environment: DOCKERD_TIMEOUT (seconds, default 60)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=ustack-test
ns=ustack-hostcheck-$$
project=ustackhostcheck$$
dockerd_timeout=${DOCKERD_TIMEOUT:-60}
state=""
dockerd_pid=""

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'docker/host-check.sh: error: %s\n' "$*" >&2; exit 1; }

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -p "$project" -f "$repo/docker/compose.yml" "$@"
    else
        docker-compose -p "$project" -f "$repo/docker/compose.yml" "$@"
    fi
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    if [ -n "$dockerd_pid" ]; then
        compose down --timeout 5 >/dev/null 2>&1 || true
        kill -TERM "$dockerd_pid" 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do
            kill -0 "$dockerd_pid" 2>/dev/null || break
            sleep 1
        done
        kill -KILL "$dockerd_pid" 2>/dev/null || true
    fi
    ip netns delete "$ns" 2>/dev/null || true
    if [ -n "$state" ]; then
        # the private exec root may hold mounts of the stopped daemon's
        findmnt -rn -o TARGET | grep "^$state/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
        rm -rf --one-file-system "$state"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" = 0 ] || die "needs root (a network namespace and a dockerd)"
command -v dockerd >/dev/null || die "dockerd not found (apt-get install docker.io)"
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null ||
    die "neither 'docker compose' nor docker-compose found (apt-get install docker-compose)"
command -v curl >/dev/null || die "curl not found"

state=$(mktemp -d /tmp/ustack-hostcheck.XXXXXX)
data_root=/var/lib/docker
if docker info >/dev/null 2>&1; then
    # Another daemon owns the default data root: copy the image into a private one.
    docker image inspect "$image" >/dev/null 2>&1 || die "no $image image (run docker/test.sh first)"
    log "a Docker daemon is running: copying $image into a private data root"
    docker save "$image" >"$state/image.tar"
    data_root=$state/data
fi

log "network namespace $ns stands in for the host"
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up

echo '{}' >"$state/daemon.json"
# nsenter, not `ip netns exec`: the latter mounts a fresh /sys for the namespace, which hides the
# cgroup hierarchy dockerd needs.
nsenter --net="/run/netns/$ns" dockerd --config-file "$state/daemon.json" --data-root "$data_root" \
    --exec-root "$state/exec" --pidfile "$state/dockerd.pid" -H "unix://$state/docker.sock" \
    --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    >"$state/dockerd.log" 2>&1 &
dockerd_pid=$!
export DOCKER_HOST=unix://$state/docker.sock
for ((i = 0; ; i++)); do
    docker info >/dev/null 2>&1 && break
    if ! kill -0 "$dockerd_pid" 2>/dev/null || ((i >= dockerd_timeout)); then
        tail -n 20 "$state/dockerd.log" >&2 || true
        die "the private dockerd did not come up (log above)"
    fi
    sleep 1
done
log "private dockerd up (pid $dockerd_pid) in $ns"
if [ -f "$state/image.tar" ]; then docker load -q -i "$state/image.tar" >/dev/null; fi
docker image inspect "$image" >/dev/null 2>&1 || die "no $image image (run docker/test.sh first)"

log "compose up -d serve-host"
compose up -d --no-build serve-host >/dev/null
container=$(compose ps -q serve-host)
for ((i = 0; i < 30; i++)); do
    ip netns exec "$ns" ip -brief address show dev ustack0 2>/dev/null | grep -q 10.7.0.1 && break
    sleep 1
done
ip netns exec "$ns" ip -brief address show dev ustack0 ||
    { docker logs "$container" >&2 || true; die "no ustack0 device on the host side"; }
docker logs "$container" 2>&1 | head -n 3 >&2

fail=0
check() {
    local what=$1
    shift
    if ip netns exec "$ns" "$@"; then
        log "ok: $what"
    else
        log "FAILED: $what"
        fail=1
    fi
}
check "curl http://10.7.0.2/ from the host" \
    bash -c 'curl -sS --max-time 10 -o /dev/null -w "%{http_code}\n" http://10.7.0.2/ | grep -qx 200'
check "ping 10.7.0.2 from the host" ping -c 2 -W 2 10.7.0.2 >/dev/null
if ip netns exec "$ns" ip -brief -6 address show dev ustack0 | grep -q fd00:7::1; then
    check "curl http://[fd00:7::2]/ from the host" \
        bash -c 'curl -gsS --max-time 10 -o /dev/null -w "%{http_code}\n" "http://[fd00:7::2]/" | grep -qx 200'
else
    log "skipped: IPv6 (ustack fell back to IPv4 alone here; see the log lines above)"
fi
((fail == 0)) || { docker logs "$container" 2>&1 | tail -n 20 >&2; die "serve-host check failed"; }
log "serve-host: the host reaches ustack through its TUN device"
