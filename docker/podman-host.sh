#!/usr/bin/env bash
# Make this machine able to build and run digits' containers with podman, for
# `make container-test` (tests/container/) on a Debian host without Docker. Idempotent: each
# step does nothing where it is already done, and the script does nothing where a Docker engine
# answers. Needs root. docs/deploy.md, "Checked for real", says why each step is here.
set -euo pipefail

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo "podman-host: a Docker engine answers; nothing to prepare"
    exit 0
fi

# 1. The engine, from Debian: podman with its runtime (crun), init (catatonit, for compose's
#    `init: true`), network stack (netavark; aardvark-dns for container names; iptables for
#    published ports) and builder (buildah); debootstrap for the stand-in base images
#    (docker/standin/).
packages="podman buildah crun catatonit fuse-overlayfs slirp4netns uidmap netavark aardvark-dns iptables debootstrap"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "podman-host: installing$missing"
    apt-get update -qq
    # shellcheck disable=SC2086  # one word a package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. Resource limits. podman asks the runtime for nofile=1048576 and a large nproc in every
#    container, and raising a limit needs CAP_SYS_RESOURCE, which a sandboxed root may lack
#    ("crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted"). Ask for this shell's hard
#    nofile instead, and an nproc under podman's own (a container here needs a few hundred).
limits=/etc/containers/containers.conf.d/50-digits-ulimits.conf
capabilities="$(awk '$1 == "CapEff:" { print $2 }' /proc/self/status)"
# CAP_SYS_RESOURCE is capability 24.
if [ $(( 0x$capabilities >> 24 & 1 )) -eq 0 ] && [ ! -f "$limits" ]; then
    nofile="$(ulimit -Hn)"
    mkdir -p "$(dirname "$limits")"
    printf '# Written by docker/podman-host.sh: no CAP_SYS_RESOURCE to raise limits here.\n[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=4096:4096"]\n' \
        "$nofile" "$nofile" >"$limits"
    echo "podman-host: wrote $limits"
fi

# 3. Hybrid cgroups (v1 hierarchies plus a v2 one at /sys/fs/cgroup/unified): crun refuses to
#    run while the v2 hierarchy holds any controller ("cgroups in hybrid mode not supported,
#    drop all controllers from cgroupv2"). A controller that no v1 hierarchy has mounted
#    (hugetlb, here) stays in v2; mounting a v1 hierarchy for it moves it out.
unified=/sys/fs/cgroup/unified
if [ -f "$unified/cgroup.controllers" ]; then
    read -r -a controllers <"$unified/cgroup.controllers" || true
    for controller in "${controllers[@]}"; do
        mkdir -p "/sys/fs/cgroup/$controller"
        mount -t cgroup -o "$controller" cgroup "/sys/fs/cgroup/$controller"
        echo "podman-host: mounted the $controller cgroup v1 hierarchy"
    done
fi

podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}} {{.Host.NetworkBackend}}' \
    | sed 's/^/podman-host: runtime, storage, network: /'
