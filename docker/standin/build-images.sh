#!/bin/sh
# Stand-in base images, for building digits where no container registry can be reached.
#
#   docker/standin/build-images.sh [ENGINE]        ENGINE: podman (default) or docker
#
# The Dockerfile and compose.scale.yaml start from two public images:
#   python:3.11-slim-bookworm                 -> localhost/python:3.11-slim-bookworm
#   nginxinc/nginx-unprivileged:1.28-alpine   -> localhost/nginx-unprivileged:standin
# Where they cannot be pulled, this makes images that keep the same contract from Debian's
# packages (the apt mirror this machine is configured with, found through apt-cache policy):
#   python  Debian bookworm's python3.11 with venv and pip, `python` on PATH, LANG=C.UTF-8;
#   nginx   nginx >= 1.27.3 (`server ... resolve`) from Debian testing, run as UID 101 and
#           started by an entrypoint that runs /docker-entrypoint.d/ and renders templates as
#           the official image's does (docker/standin/nginx-*.sh).
# Then build with --build-arg PYTHON_IMAGE=localhost/python:3.11-slim-bookworm and run the
# scaled variant with DEPLOY_NGINX_IMAGE=localhost/nginx-unprivileged:standin
# (docs/deploy.md, "Building without a registry"). An image made from the same files is kept.
# Needs root, debootstrap, and about 600 MB in $TMPDIR.
set -eu

engine="${1:-podman}"
here="$(cd "$(dirname "$0")" && pwd)"
python_image="localhost/python:3.11-slim-bookworm"
nginx_image="localhost/nginx-unprivileged:standin"
# Debian testing, whose nginx is >= 1.27.3 (bookworm's is 1.22, trixie's 1.26); it moves on, so
# the stand-in's nginx is whatever testing has that day (the build checks the version).
nginx_suite="${STANDIN_NGINX_SUITE:-testing}"
mirror="${STANDIN_DEBIAN_MIRROR:-$(apt-cache policy | awk '$3 == "bookworm/main" { print $2; exit }')}"
if [ -z "$mirror" ]; then
    echo "no Debian mirror for bookworm/main in apt's sources: set STANDIN_DEBIAN_MIRROR" >&2
    exit 1
fi
work="$(mktemp -d "${TMPDIR:-/var/tmp}/digits-standin.XXXXXX")"

# debootstrap mounts /proc (and more) inside the root it makes: unmount them before the root
# is packed or deleted (never delete through a mount).
unmount_under() {
    awk -v root="$1" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mountpoint; do umount -l "$mountpoint"; done
}

cleanup() {
    unmount_under "$work" || true
    rm -rf "$work"
}
trap cleanup EXIT
# Interrupted: end here (the EXIT trap cleans up), instead of going on without $work.
trap 'exit 130' INT TERM

# An image is made again when the files it is made from change: each carries the hash of
# this script and its own files in a label.
source_hash() {
    cat "$0" "$@" | sha256sum | cut -c1-16
}

up_to_date() {
    [ "$("$engine" image inspect --format '{{index .Config.Labels "io.digits.standin-source"}}' "$1" 2>/dev/null)" = "$2" ]
}

# rootfs NAME SUITE PACKAGES: a minimal Debian root imported as localhost/digits-standin-NAME.
rootfs() {
    name="$1" suite="$2" packages="$3"
    root="$work/$name"
    # The sid script serves every suite after bookworm, whatever debootstrap's age.
    script=/usr/share/debootstrap/scripts/sid
    [ "$suite" = bookworm ] && script=/usr/share/debootstrap/scripts/bookworm
    debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" "$script" \
        >"$work/$name.log" 2>&1 || { tail -n 20 "$work/$name.log" >&2; exit 1; }
    # What an image needs no copy of: package lists and caches, documentation, man pages.
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
        "$root"/usr/share/info/*
    unmount_under "$root"
    # Through a file, not a pipe: sh has no pipefail, and a tar that failed half-way must not
    # become an image.
    tar -C "$root" --numeric-owner --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* \
        -cf "$work/$name.tar" .
    "$engine" import "$work/$name.tar" "localhost/digits-standin-$name:rootfs" >/dev/null
    rm -f "$work/$name.tar"
}

hash="$(source_hash "$here/python.Containerfile")"
if up_to_date "$python_image" "$hash"; then
    echo "$python_image: up to date"
else
    echo "$python_image: debootstrap bookworm from $mirror"
    rootfs python bookworm python3.11,python3-venv,python3-pip,python-is-python3,ca-certificates
    "$engine" build --network none --build-arg ROOTFS=localhost/digits-standin-python:rootfs \
        --label "io.digits.standin-source=$hash" \
        -f "$here/python.Containerfile" -t "$python_image" "$here"
    "$engine" rmi localhost/digits-standin-python:rootfs >/dev/null
fi

hash="$(source_hash "$here"/nginx.Containerfile "$here"/nginx-*.sh)"
if up_to_date "$nginx_image" "$hash"; then
    echo "$nginx_image: up to date"
else
    echo "$nginx_image: debootstrap $nginx_suite from $mirror"
    rootfs nginx "$nginx_suite" nginx,wget,gettext-base
    "$engine" build --network none --build-arg ROOTFS=localhost/digits-standin-nginx:rootfs \
        --label "io.digits.standin-source=$hash" \
        -f "$here/nginx.Containerfile" -t "$nginx_image" "$here"
    "$engine" rmi localhost/digits-standin-nginx:rootfs >/dev/null
fi
