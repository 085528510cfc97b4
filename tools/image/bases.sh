#!/usr/bin/env bash
# The two base images `make image` builds the Containerfile on, from Debian's packages, since no
# image registry is reachable here (users with one use python:3.12-slim and python:3.12):
#   localhost/sessionizer-base:bookworm     python3 + venv, for the runtime stage
#   localhost/sessionizer-builder:bookworm  the same + a C compiler, for the wheel's build stage
# Each is made once (mmdebstrap --variant=minbase) and kept in buildah's vfs storage.
set -euo pipefail

BUILDAH=(buildah --storage-driver vfs)
SUITE=bookworm
SOURCES=("deb http://deb.debian.org/debian $SUITE main" "deb http://deb.debian.org/debian-security $SUITE-security main")
# Leave out what a container never reads: documentation, manuals, translations.
SLIM=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*')

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v buildah >/dev/null || need+=(buildah)
if ((${#need[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "make image needs ${need[*]}: sudo apt-get install ${need[*]}" >&2
        exit 1
    fi
    echo "installing ${need[*]} from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

base() {  # name packages
    local name=$1 packages=$2
    if "${BUILDAH[@]}" images --noheading "localhost/$name:$SUITE" >/dev/null 2>&1; then
        return
    fi
    local work
    work=$(mktemp -d)
    echo "building the base image localhost/$name:$SUITE ($packages)"
    mmdebstrap --quiet --mode=root --variant=minbase --include="$packages" "${SLIM[@]}" \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$SUITE" "$work/rootfs.tar" "${SOURCES[@]}"
    local container
    container=$("${BUILDAH[@]}" from scratch)
    "${BUILDAH[@]}" add --quiet "$container" "$work/rootfs.tar" /
    "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd /bin/bash "$container"
    "${BUILDAH[@]}" commit --quiet --rm "$container" "localhost/$name:$SUITE" >/dev/null
    rm -rf "$work"
}

base sessionizer-base python3,python3-venv,ca-certificates
base sessionizer-builder python3,python3-venv,ca-certificates,gcc,libc6-dev
mkdir -p .cache/image/target
