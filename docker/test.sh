#!/usr/bin/env bash
# Run the ustack test suite inside Docker, also on an engine that cannot reach any registry.
#
# Steps: make sure a Docker daemon answers (install docker.io with apt if there is none; start
# dockerd with no bridge, no iptables and no ip_forward change, so the host's network is left as
# it was, and stop it again on exit); use the base image ($USTACK_BASE, default python:3.11-slim)
# if it is present or can be pulled, otherwise build ustack-base:bookworm with debootstrap from the
# host's own apt mirror and cache it; build wheels for the Python dependencies on the host (the
# build has no network either); build the test image with `--network none`; run the suite with
# `--network none --cap-add NET_ADMIN --cap-add SYS_ADMIN --device /dev/net/tun`.
#
# Usage: docker/test.sh [--clean] [--rebuild-base] [-- pytest arguments]
#   --clean         afterwards remove the images this script made and docker/.wheels
#   --rebuild-base  rebuild ustack-base:bookworm even if it is cached
# Environment: USTACK_BASE (base image), DEBIAN_MIRROR (overrides the apt-sources mirror),
#   PYTHON (host interpreter for the wheels), DOCKERD_TIMEOUT (seconds, default 60),
#   SUITE_TIMEOUT (seconds for the whole suite in the container, default 1800).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base=${USTACK_BASE:-python:3.11-slim}
local_base=ustack-base:bookworm
suite=bookworm
test_image=ustack-test
wheels=$repo/docker/.wheels
# Everything the Dockerfile would otherwise fetch with apt; the image records the list, and a cached
# base with a different list is rebuilt (its offline build could not install what is missing).
base_packages=python3,python3-venv,python3-dev,gcc,libc6-dev,iproute2,curl,wget,ca-certificates,iputils-ping,tshark
dockerd_timeout=${DOCKERD_TIMEOUT:-60}
suite_timeout=${SUITE_TIMEOUT:-1800}
container=ustack-test-$$

# Why each flag: the TUN tests create their own network namespaces (`ip netns add`, pyroute2),
# which needs unshare(CLONE_NEWNET) and bind mounts under /run/netns -- both CAP_SYS_ADMIN, and
# Docker's default seccomp profile only allows unshare/setns/mount to a SYS_ADMIN container.
# NET_ADMIN configures the TUN device and addresses; the device node is not in a container
# otherwise. The container itself has no network at all.
run_flags=(--network none --cap-add NET_ADMIN --cap-add SYS_ADMIN --device /dev/net/tun)

clean=0
rebuild_base=0
while (($#)); do
    case $1 in
        --clean) clean=1 ;;
        --rebuild-base) rebuild_base=1 ;;
        --) shift; break ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "docker/test.sh: unknown argument: $1 (pytest arguments go after --)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'docker/test.sh: error: %s\n' "$*" >&2; exit 1; }

timings=()
phase_name=""
phase_start=0
phase() {
    phase_end
    phase_name=$1
    phase_start=$SECONDS
    log "$1"
}
phase_end() {
    if [ -n "$phase_name" ]; then
        timings+=("$(printf '%-28s %4ds' "$phase_name" $((SECONDS - phase_start)))")
        phase_name=""
    fi
}

started_dockerd_pid=""
dockerd_dir=""
rootfs_dir=""
added_policy_rc=0

stop_dockerd() {
    local pid=$started_dockerd_pid i
    [ -n "$pid" ] || return 0
    started_dockerd_pid=""
    log "stopping the dockerd this script started (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 30; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 1
    done
    log "dockerd $pid did not stop within 30 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

remove_rootfs() {
    local dir=$rootfs_dir
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    rootfs_dir=""
    # debootstrap mounts /proc and /sys inside the target; a failed run can leave them mounted,
    # and rm must never walk into them.
    if findmnt -rn -o TARGET | grep -q "^$dir/"; then
        findmnt -rn -o TARGET | grep "^$dir/" | sort -r | xargs -r -n1 umount -l || true
    fi
    rm -rf --one-file-system "$dir"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "${container:-}" ] && docker inspect "$container" >/dev/null 2>&1; then
        docker rm -f "$container" >/dev/null 2>&1 || true
    fi
    remove_rootfs
    if ((added_policy_rc)); then rm -f /usr/sbin/policy-rc.d; fi
    if ((clean)) && docker info >/dev/null 2>&1; then
        log "--clean: removing $test_image, $local_base and docker/.wheels"
        docker image rm -f "$test_image" "$local_base" >/dev/null 2>&1 || true
        rm -rf "$wheels"
    fi
    stop_dockerd
    if [ -n "$dockerd_dir" ]; then rm -rf "$dockerd_dir"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

as_root() {
    [ "$(id -u)" = 0 ] || die "$* needs root (run this script as root, or start the Docker daemon yourself)"
}

apt_install() {
    as_root "installing $*"
    # Keep package scripts from starting services (docker.io would start a daemon with its
    # default bridge and iptables rules); Debian's policy-rc.d hook is the supported switch.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy_rc=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    if ((added_policy_rc)); then rm -f /usr/sbin/policy-rc.d; added_policy_rc=0; fi
}

ensure_daemon() {
    if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null; then
        # A docker client alone (e.g. a static one in /usr/local/bin) is enough when some daemon
        # already answers; otherwise we need the engine package.
        if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
            return 0
        fi
        phase "install docker.io (apt)"
        apt_install docker.io
        command -v dockerd >/dev/null || die "docker.io installed but dockerd is not on PATH"
    fi
    if docker info >/dev/null 2>&1; then
        log "using the running Docker daemon"
        return 0
    fi
    as_root "starting dockerd"
    [ ! -S /var/run/docker.sock ] || die "/var/run/docker.sock exists but no daemon answers on it"
    phase "start dockerd"
    dockerd_dir=$(mktemp -d /tmp/ustack-dockerd.XXXXXX)
    # An empty config file of our own: flags below must not clash with a host daemon.json.
    echo '{}' >"$dockerd_dir/daemon.json"
    dockerd --config-file "$dockerd_dir/daemon.json" \
        --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        >"$dockerd_dir/dockerd.log" 2>&1 &
    started_dockerd_pid=$!
    local i
    for ((i = 0; i < dockerd_timeout; i++)); do
        if docker info >/dev/null 2>&1; then
            log "dockerd is up (pid $started_dockerd_pid, log $dockerd_dir/dockerd.log)"
            return 0
        fi
        if ! kill -0 "$started_dockerd_pid" 2>/dev/null; then
            started_dockerd_pid=""
            tail -n 20 "$dockerd_dir/dockerd.log" >&2 || true
            die "dockerd exited during start-up (log above)"
        fi
        sleep 1
    done
    tail -n 20 "$dockerd_dir/dockerd.log" >&2 || true
    die "dockerd did not answer within ${dockerd_timeout} s"
}

# The first http(s) mirror in the host's apt sources that serves the plain release suite
# (bookworm, or the host's own codename) -- not -security/-updates, not third-party repositories.
debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        echo "$DEBIAN_MIRROR"
        return 0
    fi
    local codename="" f
    if [ -r /etc/os-release ]; then codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}"); fi
    local files=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] && files+=("$f")
    done
    ((${#files[@]})) || return 1
    awk -v want1="$suite" -v want2="$codename" '
        function consider(uri, suites,   n, s, i) {
            if (uri !~ /^https?:\/\//) return
            n = split(suites, s, /[ \t]+/)
            for (i = 1; i <= n; i++)
                if (s[i] != "" && (s[i] == want1 || s[i] == want2)) { print uri; found = 1; exit }
        }
        function flush() {
            if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no") {
                n = split(uris, u, /[ \t]+/)
                for (j = 1; j <= n; j++) if (u[j] != "") consider(u[j], suites)
            }
            types = uris = suites = enabled = ""
        }
        FILENAME ~ /\.sources$/ {
            if (FILENAME != last) { flush(); last = FILENAME }
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            if ($0 ~ /^#/) next
            key = tolower($1); sub(/:$/, "", key)
            val = $0; sub(/^[^:]*:[ \t]*/, "", val)
            if (key == "types") types = val
            else if (key == "uris") uris = val
            else if (key == "suites") suites = val
            else if (key == "enabled") enabled = tolower(val)
            next
        }
        $1 == "deb" {
            flush()
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            consider($i, $(i + 1))
        }
        END { if (!found) flush() }
    ' "${files[@]}" | head -n1
}

build_local_base() {
    as_root "debootstrap"
    command -v debootstrap >/dev/null || apt_install debootstrap
    local mirror
    mirror=$(debian_mirror) || true
    [ -n "$mirror" ] || die "no Debian mirror for $suite in the apt sources; set DEBIAN_MIRROR=http://..."
    phase "debootstrap $suite"
    log "mirror: $mirror"
    rootfs_dir=$(mktemp -d /var/tmp/ustack-rootfs.XXXXXX)
    if ! timeout 1200 debootstrap --variant=minbase --components=main --include="$base_packages" \
        "$suite" "$rootfs_dir" "$mirror" >"$rootfs_dir.log" 2>&1; then
        tail -n 30 "$rootfs_dir.log" >&2 || true
        rm -f "$rootfs_dir.log"
        die "debootstrap failed (last lines above)"
    fi
    rm -f "$rootfs_dir.log"
    # So that apt works inside the image when it does have a network.
    printf 'deb %s %s main\n' "$mirror" "$suite" >"$rootfs_dir/etc/apt/sources.list"
    chroot "$rootfs_dir" apt-get clean
    rm -rf "$rootfs_dir"/var/lib/apt/lists/* "$rootfs_dir"/var/cache/apt/*.bin
    phase "import $local_base"
    tar -C "$rootfs_dir" --numeric-owner -c . |
        docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
            --change "LABEL ustack.packages=$base_packages" - "$local_base" >/dev/null
    remove_rootfs
}

chosen=""
choose_base() {
    if docker image inspect "$base" >/dev/null 2>&1; then
        chosen=$base
        return 0
    fi
    log "pulling $base"
    if timeout 180 docker pull -q "$base" >/dev/null 2>&1; then
        chosen=$base
        return 0
    fi
    log "cannot pull $base (no registry reachable?); using $local_base built from Debian packages"
    local cached
    cached=$(docker image inspect -f '{{index .Config.Labels "ustack.packages"}}' "$local_base" 2>/dev/null) || cached=""
    if ((rebuild_base)) || [ "$cached" != "$base_packages" ]; then
        [ -z "$cached" ] || log "cached $local_base has other packages ($cached); rebuilding it"
        build_local_base
    else
        log "reusing cached $local_base"
    fi
    chosen=$local_base
}

# Wheels must match the container's interpreter (cp3X ABI) -- built by a host python of the same
# minor version. Rebuilt only when the project's metadata or that version changes.
build_wheels() {
    local image=$1 ver py="" cand stamp
    ver=$(docker run --rm --network none "$image" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') ||
        die "cannot run python3 in $image"
    for cand in ${PYTHON:-} "python$ver" python3; do
        if command -v "$cand" >/dev/null &&
            [ "$("$cand" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$ver" ] &&
            "$cand" -m pip --version >/dev/null 2>&1; then
            py=$cand
            break
        fi
    done
    [ -n "$py" ] || die "the image has Python $ver; need a host python$ver with pip to build wheels (set PYTHON=)"
    local meta=("$repo/pyproject.toml")
    [ ! -f "$repo/setup.py" ] || meta+=("$repo/setup.py")
    stamp=$(cat "${meta[@]}" | sha256sum | cut -c1-16)-py$ver
    if [ -f "$wheels/.stamp" ] && [ "$(cat "$wheels/.stamp")" = "$stamp" ]; then
        log "reusing wheels in docker/.wheels (python $ver)"
        return 0
    fi
    phase "host wheels (python $ver)"
    rm -rf "$wheels"
    mkdir -p "$wheels"
    local pip_log=$wheels/.pip.log
    # The second command fetches the build requirements for ustack's isolated build in the image.
    if ! { "$py" -m pip wheel -w "$wheels" "$repo[test]" &&
        "$py" -m pip download -d "$wheels" --only-binary=:all: 'setuptools>=68' wheel; } >"$pip_log" 2>&1; then
        tail -n 30 "$pip_log" >&2
        die "building wheels on the host failed (log: $pip_log)"
    fi
    rm -f "$pip_log"
    # ustack itself is compiled inside the image, against the image's headers.
    rm -f "$wheels"/ustack-*.whl
    echo "$stamp" >"$wheels/.stamp"
}

cd "$repo"
ensure_daemon
phase "choose base image"
choose_base
phase_end
build_wheels "$chosen"

phase "build $test_image (FROM $chosen)"
# Legacy builder: it uses a local FROM image as is; --network none keeps the build off any network.
build_log=$(mktemp /tmp/ustack-docker-build.XXXXXX)
if ! DOCKER_BUILDKIT=0 docker build --network none -f docker/Dockerfile \
    --build-arg BASE="$chosen" -t "$test_image" . >"$build_log" 2>&1; then
    tail -n 40 "$build_log" >&2
    die "image build failed (full log: $build_log)"
fi
rm -f "$build_log"

phase "checks in the container"
docker run --rm "${run_flags[@]}" "$test_image" bash -euc '
    python3 -c "import ustack.wire._checksum as m; print(\"C extension:\", m.__file__)" ||
        echo "C extension: not built (see the image build log)"
    python3 -c "import ustack.wire.checksum as c; print(\"checksum implementation:\", c.IMPLEMENTATION)"
    ip netns add ustack-docker-check
    ip netns exec ustack-docker-check ip tuntap add dev tun-check mode tun
    ip netns exec ustack-docker-check ip -brief link show tun-check
    ip netns delete ustack-docker-check
    echo "network namespace + TUN: ok"
' || die "the container cannot create a network namespace with a TUN device (flags: ${run_flags[*]})"

phase "test suite"
set +e
# A hung test must not hang the script: on timeout the client is killed and cleanup removes the
# container by name.
timeout "$suite_timeout" docker run --name "$container" --rm "${run_flags[@]}" "$test_image" \
    bash tests/run.sh "$@"
suite_rc=$?
set -e
if ((suite_rc == 124)); then
    log "the suite did not finish within ${suite_timeout} s (SUITE_TIMEOUT); stopped it"
fi
phase_end

log "timings:"
for t in "${timings[@]}"; do log "  $t"; done
log "suite exit code: $suite_rc"
exit "$suite_rc"
