#!/usr/bin/env bash
# Containers on a machine with no Docker engine and no image registry (tests/containers.rs):
#   scripts/containers.sh setup          podman + runc + debootstrap, their configuration, and a
#                                        Debian base image (localhost/debian:bookworm-slim)
#   scripts/containers.sh images BINARY  the lanes image from a prebuilt binary (Dockerfile
#                                        target `prebuilt`) and the stand-in RabbitMQ and
#                                        PostgreSQL images of tests/containers/
# Idempotent: what exists is kept (images are rebuilt only when asked with REBUILD=1, except
# the lanes image, which always takes the binary given).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")/.."

say() { echo "==> containers: $*"; }
die() {
    echo "==> containers: ERROR: $*" >&2
    exit 1
}
have_image() { [ "${REBUILD:-0}" != 1 ] && podman image exists "$1"; }

setup() {
    local missing=()
    for tool in podman runc debootstrap docker-compose; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt-get update >/dev/null 2>&1 || true
        apt-get install -y --no-install-recommends podman runc debootstrap docker-compose \
            uidmap slirp4netns fuse-overlayfs >/dev/null || die "apt-get install failed"
    fi
    # crun cannot run here ("cgroups in hybrid mode not supported") and there is no systemd.
    local conf=/etc/containers/containers.conf
    if ! grep -qs '^runtime = "runc"' "$conf"; then
        [ -e "$conf" ] && cp "$conf" "$conf.before-lanes"
        mkdir -p /etc/containers
        cat >"$conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
        say "wrote $conf (runc, cgroupfs)"
    fi
    if ! have_image localhost/debian:bookworm-slim; then
        local root
        root="$(mktemp -d /var/tmp/lanes-rootfs.XXXXXX)"
        say "building the base image with debootstrap (about a minute)"
        debootstrap --variant=minbase bookworm "$root" >/dev/null || die "debootstrap failed"
        tar -C "$root" -c . | podman import - localhost/debian:bookworm-slim >/dev/null
        rm -rf "$root"
    fi
    say "podman ready ($(podman --version))"
}

images() {
    local binary="${1:?the lanes binary to put in the image}"
    [ -x "$binary" ] || die "$binary is not an executable"
    for standin in rabbitmq postgres; do
        if ! have_image "localhost/lanes-standin-$standin:test"; then
            say "building the stand-in $standin image"
            podman build -q --pull=never --network host -t "localhost/lanes-standin-$standin:test" \
                -f "tests/containers/$standin.Containerfile" tests/containers >/dev/null
        fi
    done
    local ctx
    ctx="$(mktemp -d)"
    cp "$binary" "$ctx/lanes"
    say "building localhost/lanes:test from $binary"
    podman build -q --pull=never --network host --target prebuilt -t localhost/lanes:test \
        -f Dockerfile "$ctx" >/dev/null
    rm -rf "$ctx"
}

case "${1:-}" in
setup) setup ;;
images) images "${2:-}" ;;
*)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
