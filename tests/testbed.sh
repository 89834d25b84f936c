#!/usr/bin/env bash
# The test bed: a Docker daemon that answers, and the local images the tests run.
#
# Used by .ci/run and by developers alike, so both test against the same thing.
# Idempotent: every image carries the hash of its inputs in a label and is
# rebuilt only when that hash changes; downloads (.deb files, pip wheels, the
# `pip install --target` trees) are kept in a cache folder, so a second run
# takes a few seconds.
#
# No image registry is reachable, so nothing is pulled:
#   mcp-fleet-test/pybase   Debian's python3 and the libraries it needs, unpacked
#                           from .deb files and `docker import`ed (a debootstrap
#                           takes several times longer and brings a package
#                           manager nobody uses here). Bytecode is precompiled,
#                           because a read-only container cannot write it.
#   mcp-fleet-test/time     mcp-server-time (tests/images/time/).
#   mcp-fleet-test/servers  tests/servers/*.py on the mcp SDK (tests/images/servers/);
#                           every file of tests/servers is part of its input hash.
# tests/testbed_images.py names these images for the tests.
#
# Usage: tests/testbed.sh [--rebuild]
# Environment: MCP_FLEET_TESTBED_CACHE (cache folder, default
#   ${XDG_CACHE_HOME:-~/.cache}/mcp-fleet-testbed), PYTHON (host interpreter,
#   default python3; it names the package versions the images pin).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGES_DIR=$REPO/tests/images
CACHE=${MCP_FLEET_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-fleet-testbed}
PYTHON=${PYTHON:-python3}
PYBASE_IMAGE=mcp-fleet-test/pybase:latest
TIME_IMAGE=mcp-fleet-test/time:latest
SERVERS_IMAGE=mcp-fleet-test/servers:latest
HASH_LABEL=mcp-fleet-testbed.input-hash
DOCKERD_WAIT_SECONDS=30
REBUILD=0
APT_UPDATED=0

log() { printf '[testbed] %s\n' "$*"; }
die() { printf '[testbed] error: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
since() { local ms=$(($(now_ms) - $1)); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }
sha256() { sha256sum | cut -d' ' -f1; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else die "needs root: $*"; fi; }

# Run a command; keep its output in a log file and show the tail only on failure.
quietly() {
    local logfile=$1
    shift
    if ! "$@" >"$logfile" 2>&1; then
        tail -n 40 "$logfile" >&2
        die "failed: $* (full log: $logfile)"
    fi
}

apt_update() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        local t0
        t0=$(now_ms)
        quietly "$CACHE/logs/apt-update.log" as_root apt-get update
        APT_UPDATED=1
        log "apt-get update: $(since "$t0")"
    fi
}

# --- Docker daemon -----------------------------------------------------------

# Run a command with nothing open above stdin, stdout and stderr. For a daemon
# started here: it outlives this script and keeps every descriptor it inherits
# for as long as it runs (and passes them on to containerd): our lock (fd 9),
# whatever the caller left open (a pipe whose reader would then never see its
# end, a second run's flock waiting forever).
without_inherited_fds() {
    (
        local fd
        for fd in "/proc/$BASHPID/fd"/*; do
            fd=${fd##*/}
            ((fd > 2)) || continue
            eval "exec $fd>&-"
        done
        "$@"
    )
}

ensure_docker() {
    local t0
    t0=$(now_ms)
    if docker info >/dev/null 2>&1; then
        log "docker daemon answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
        return
    fi
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        apt_update
        quietly "$CACHE/logs/apt-install-docker.log" as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends docker.io
        log "installed docker.io: $(since "$t0")"
    fi
    [[ -z ${DOCKER_HOST:-} ]] || die "DOCKER_HOST=$DOCKER_HOST does not answer; start that daemon"
    local dockerd_log=$CACHE/logs/dockerd.log
    # No systemd here: start the daemon ourselves, detached so it outlives this script.
    # No bridge network: containers get loopback only, all a stdio server needs.
    without_inherited_fds as_root setsid -f dockerd --bridge=none --iptables=false \
        --ip-masq=false --ip-forward=false </dev/null >>"$dockerd_log" 2>&1
    local deadline=$((SECONDS + DOCKERD_WAIT_SECONDS))
    until docker info >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            tail -n 30 "$dockerd_log" >&2
            die "dockerd did not answer within ${DOCKERD_WAIT_SECONDS}s (log: $dockerd_log)"
        fi
        sleep 0.2
    done
    log "started dockerd: $(since "$t0") (log: $dockerd_log)"
}

image_hash() {
    docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$1" 2>/dev/null || true
}

# True (0) when IMAGE exists and was built from inputs hashing to HASH.
image_current() {
    [[ $REBUILD -eq 0 && "$(image_hash "$1")" == "$2" ]]
}

# --- Base image: Debian's python3, unpacked --------------------------------

# Sets CLOSURE_FILE: lines "name=version file sha256" (see pybase/debian_closure.py).
# The answer only changes with the apt package lists, so it is cached on their state.
resolve_closure() {
    local resolver=$IMAGES_DIR/pybase/debian_closure.py
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt_update
    fi
    local key
    key=$({
        stat -c '%n %s %Y' /var/lib/apt/lists/*_Packages*
        sha256sum "$resolver"
        dpkg --print-architecture
    } | sha256)
    CLOSURE_FILE=$CACHE/closure/$key.txt
    if [[ ! -s $CLOSURE_FILE ]]; then
        mkdir -p "$CACHE/closure"
        rm -f "$CACHE"/closure/*.txt
        "$PYTHON" "$resolver" >"$CLOSURE_FILE.tmp"
        mv "$CLOSURE_FILE.tmp" "$CLOSURE_FILE"
    fi
    PYVER=$(sed -n 's/^python\(3\.[0-9]*\)=.*/\1/p' "$CLOSURE_FILE" | head -n1)
    GLIBC_MINOR=$(sed -n 's/^libc6=2\.\([0-9]*\).*/\1/p' "$CLOSURE_FILE")
    [[ -n $PYVER && -n $GLIBC_MINOR ]] || die "cannot tell python/glibc versions from $CLOSURE_FILE"
}

# Run a command inside the unpacked root (a user namespace stands in for root).
in_rootfs() {
    local root=$1
    shift
    if [[ $EUID -eq 0 ]]; then
        chroot "$root" "$@"
    else
        unshare --map-root-user chroot "$root" "$@"
    fi
}

build_pybase() {
    local hash
    hash=$({
        cat "$CLOSURE_FILE"
        declare -f build_pybase in_rootfs
    } | sha256)
    if image_current "$PYBASE_IMAGE" "$hash"; then
        log "pybase: up to date, reused"
        return
    fi
    local debs=$CACHE/debs root=$CACHE/build/pybase-rootfs t0 missing=()
    t0=$(now_ms)
    mkdir -p "$debs"
    while read -r spec file _sum; do
        [[ -f $debs/$file ]] || missing+=("$spec")
    done <"$CLOSURE_FILE"
    if ((${#missing[@]})); then
        (cd "$debs" && quietly "$CACHE/logs/apt-download.log" \
            apt-get download -o APT::Sandbox::User=root "${missing[@]}")
    fi
    (cd "$debs" && awk '{print $3 "  " $2}' "$CLOSURE_FILE" | sha256sum --check --quiet) ||
        die "downloaded .deb files do not match their checksums (delete $debs and retry)"
    for file in "$debs"/*.deb; do # drop what the closure no longer names
        grep -qF " ${file##*/} " "$CLOSURE_FILE" || rm -f "$file"
    done
    log "pybase: ${#missing[@]} of $(wc -l <"$CLOSURE_FILE") .deb files downloaded: $(since "$t0")"

    rm -rf "$root"
    mkdir -p "$root"
    while read -r _spec file _sum; do
        dpkg-deb -x "$debs/$file" "$root"
    done <"$CLOSURE_FILE"
    rm -rf "$root"/usr/share/{doc,man,info,lintian}
    mkdir -p "$root"/{tmp,proc,dev,root}
    chmod 1777 "$root/tmp"
    printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >"$root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
    # Debian ships no bytecode; compile it with the image's own interpreter.
    # No -j: the chroot has no /dev/shm for multiprocessing.
    in_rootfs "$root" "/usr/bin/python$PYVER" -m compileall -q "/usr/lib/python$PYVER"
    tar --numeric-owner --owner=0 --group=0 -C "$root" -c . |
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["python3"]' \
            --change "LABEL $HASH_LABEL=$hash" \
            - "$PYBASE_IMAGE" >/dev/null
    rm -rf "$root"
    log "pybase: built in $(since "$t0") (python $PYVER, glibc 2.$GLIBC_MINOR)"
}

# --- Python packages for the images: pip install --target -------------------

# The requirements file with bare names pinned to the versions installed next
# to the tests (when installed), so the images serve what the tests were written for.
pinned_requirements() {
    "$PYTHON" - "$1" <<'PY'
import re
import sys
from importlib import metadata

for raw in open(sys.argv[1], encoding="utf-8"):
    line = raw.split("#", 1)[0].strip()
    if re.fullmatch(r"[A-Za-z0-9._-]+", line):
        try:
            line = f"{line}=={metadata.version(line)}"
        except metadata.PackageNotFoundError:
            pass
    if line:
        print(line)
PY
}

# Sets SITE_DIR (holding `site/`) and SITE_KEY for the image folder $1.
pip_site() {
    local name=$1 requirements arch
    arch=$(uname -m)
    case $arch in
    x86_64 | aarch64) ;;
    *) die "no manylinux wheels known for architecture $arch" ;;
    esac
    requirements=$(pinned_requirements "$IMAGES_DIR/$name/requirements.txt")
    SITE_KEY=$(printf '%s\n' "$requirements" "$PYVER" "$arch" "$GLIBC_MINOR" "$(declare -f pip_site)" | sha256)
    SITE_DIR=$CACHE/sites/$name-${SITE_KEY:0:16}
    [[ -f $SITE_DIR/.complete ]] && return
    local t0 platforms=() minor
    t0=$(now_ms)
    # Every manylinux tag the base image's glibc satisfies, legacy aliases included.
    platforms+=(--platform "manylinux1_$arch" --platform "manylinux2010_$arch" --platform "manylinux2014_$arch")
    for minor in $(seq 5 "$GLIBC_MINOR"); do
        platforms+=(--platform "manylinux_2_${minor}_$arch")
    done
    rm -rf "$CACHE/sites/$name"-*
    mkdir -p "$SITE_DIR"
    printf '%s\n' "$requirements" >"$SITE_DIR/requirements.txt"
    quietly "$CACHE/logs/pip-$name.log" "$PYTHON" -m pip install \
        --disable-pip-version-check --no-warn-conflicts --root-user-action=ignore --no-compile \
        --cache-dir "$CACHE/pip" --target "$SITE_DIR/site" --only-binary=:all: \
        --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}" "${platforms[@]}" \
        -r "$SITE_DIR/requirements.txt"
    touch "$SITE_DIR/.complete"
    log "$name: pip install --target ($(tr '\n' ' ' <"$SITE_DIR/requirements.txt")): $(since "$t0")"
}

# Content hash of a folder: file names and contents, bytecode caches left out.
tree_hash() {
    (cd "$1" && find . -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 |
        sort -z | xargs -0 -r sha256sum) | sha256
}

# build_app_image IMAGE NAME [DIR]: tests/images/NAME/Dockerfile on the base,
# with the pip site as `site/` and, if given, DIR as `<basename DIR>/`.
build_app_image() {
    local image=$1 name=$2 extra=${3:-} hash base_id t0 extra_args=()
    pip_site "$name"
    base_id=$(docker image inspect -f '{{.Id}}' "$PYBASE_IMAGE")
    hash=$({
        printf '%s\n' "$base_id" "$SITE_KEY"
        cat "$IMAGES_DIR/$name/Dockerfile"
        [[ -z $extra ]] || tree_hash "$extra"
        declare -f build_app_image tree_hash
    } | sha256)
    if image_current "$image" "$hash"; then
        log "$name: up to date, reused"
        return
    fi
    t0=$(now_ms)
    [[ -z $extra ]] || extra_args=(-C "$(dirname "$extra")" "$(basename "$extra")")
    tar --numeric-owner --owner=0 --group=0 --mode=a+rX --exclude=__pycache__ --exclude='*.pyc' -c \
        -C "$IMAGES_DIR/$name" Dockerfile -C "$SITE_DIR" site "${extra_args[@]}" |
        quietly "$CACHE/logs/build-$name.log" env DOCKER_BUILDKIT=0 docker build \
            --network none --build-arg "BASE=$PYBASE_IMAGE" --label "$HASH_LABEL=$hash" \
            -t "$image" -
    log "$name: built in $(since "$t0")"
}

# --- Headless Chromium (the status page test renders the page for real) -----

ensure_chromium() {
    local t0
    t0=$(now_ms)
    if command -v chromium >/dev/null; then
        return
    fi
    apt_update
    quietly "$CACHE/logs/apt-install-chromium.log" as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends chromium fonts-dejavu-core
    log "installed chromium: $(since "$t0")"
}

main() {
    case ${1:-} in
    --rebuild) REBUILD=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        return
        ;;
    "") ;;
    *) die "unknown argument: $1 (try --help)" ;;
    esac
    local t0
    t0=$(now_ms)
    mkdir -p "$CACHE/logs"
    exec 9>"$CACHE/lock"
    if ! flock -n 9; then
        log "another testbed.sh runs; waiting for it"
        flock 9
    fi
    ensure_docker
    ensure_chromium
    resolve_closure
    build_pybase
    build_app_image "$TIME_IMAGE" time
    build_app_image "$SERVERS_IMAGE" servers "$REPO/tests/servers"
    # Rebuilt images leave their predecessors untagged; drop those. A pass
    # frees only images without children, so an old base may need another.
    local _
    for _ in 1 2 3; do
        [[ -n $(docker image ls -q --filter dangling=true --filter "label=$HASH_LABEL") ]] || break
        docker image prune -f --filter "label=$HASH_LABEL" >/dev/null
    done
    docker image ls --filter "label=$HASH_LABEL" --format '[testbed] image {{.Repository}}:{{.Tag}} {{.Size}}'
    log "ready in $(since "$t0")"
}

main "$@"
