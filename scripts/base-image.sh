#!/usr/bin/env bash
# A Debian bookworm base image for the tests' Docker builds, made locally
# (no image registry is needed):
#   scripts/base-image.sh TAG
# debootstrap --variant=minbase bookworm from the Debian mirror of the
# host's apt sources into a temp dir, packed as a tarball cached in
# $KDNS_CACHE (default /var/cache/kdns-test), then `docker import`ed as TAG.
# Later runs only import the cached tarball. Prints TAG on success.
set -euo pipefail

TAG=${1:?usage: $0 TAG}
CACHE=${KDNS_CACHE:-/var/cache/kdns-test}
DOCKER=${DOCKER:-/usr/bin/docker}
SUITE=bookworm
TARBALL=$CACHE/debian-$SUITE-minbase-$(dpkg --print-architecture).tar

say() { echo "base-image: $*" >&2; }

# The mirror the host's apt uses (deb822 sources or sources.list).
mirror() {
    local m
    m=$(grep -hs -A3 '^Types:.*deb' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '/^URIs:/ {print $2}' | grep -v -- '-security' | grep -m1 '/debian/\?$' || true)
    [[ -n $m ]] || m=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | grep -m1 '/debian/\?$' || true)
    echo "${m:-http://deb.debian.org/debian}"
}

if [[ ! -s $TARBALL ]]; then
    command -v debootstrap >/dev/null || { say "debootstrap not found; run scripts/setup.sh"; exit 1; }
    mkdir -p "$CACHE"
    work=$(mktemp -d /tmp/kdns-debootstrap.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    m=$(mirror)
    say "debootstrap --variant=minbase $SUITE from $m (once; cached in $TARBALL)"
    if ! debootstrap --variant=minbase "$SUITE" "$work/root" "$m" >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        say "debootstrap failed"
        exit 1
    fi
    # apt inside the image: the same mirror, plus updates and security.
    sec=${m%/debian*}/debian-security
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' "$m" "$SUITE" "$m" "$SUITE" "$sec" "$SUITE" >"$work/root/etc/apt/sources.list"
    rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
    tar --numeric-owner -C "$work/root" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$work"
    trap - EXIT
fi

"$DOCKER" import --change 'CMD ["/bin/bash"]' - "$TAG" <"$TARBALL" >/dev/null
echo "$TAG"
