# The Debian 13 (trixie) root of the Nix 2.26 tier. Sourced by tests/nix226/run, not run.
#
#   nix226_root_build    builds $NIX226_ROOT once (debootstrap, then apt-get inside)
#   nix226_in_root CMD.. runs CMD inside a fresh copy of it (see below), exit status CMD's
#
# Settings (environment):
#   HOMELAB_NIX226_CACHE   where roots and the .deb cache live (/var/cache/homelab-agent-nix226)
#   HOMELAB_NIX226_MIRROR  the Debian mirror (default: the first Debian archive URI of this
#                          host's apt sources, as ../shared/real-systemd/lib.sh finds it)
#
# The root is keyed by a hash of NIX226_VERSION, the suite and the package list: a new
# list or a new way of configuring it builds a new root; old ones are not removed
# (rm -rf "$NIX226_CACHE"/root-* while nothing runs).

NIX226_CACHE=${HOMELAB_NIX226_CACHE:-/var/cache/homelab-agent-nix226}
NIX226_SUITE=trixie
# Bump when the way the root is configured changes.
NIX226_VERSION=2
# What the Nix-using tests need, as tests/setup installs it on the host (without the
# build tools: nothing is compiled inside), plus qemu-user-binfmt for the aarch64
# recipe (trixie ships the binfmt lines there; the emulator comes with qemu-user).
NIX226_PACKAGES="nix-bin git openssh-server openssh-client gnupg gpg-agent gpgv python3
  nginx-light fcgiwrap prometheus prometheus-node-exporter webhook openssl ca-certificates
  iproute2 procps qemu-user-binfmt"
NIX226_KEY=$(printf '%s\n' "$NIX226_VERSION" "$NIX226_SUITE" $NIX226_PACKAGES | sha256sum | cut -c1-12)
NIX226_ROOT=$NIX226_CACHE/root-$NIX226_KEY

# The mirror this host's apt already uses: the first Debian archive URI in its sources.
nix226_host_mirror() {
  {
    sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null
    sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' \
      /etc/apt/sources.list 2>/dev/null
  } | tr ' ' '\n' | grep -v -- '-security' | grep -m1 .
}

# Unmounts whatever an interrupted build left mounted under $1.
nix226_unmount_under() {
  awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m"; done
}

# Builds the root when it is missing. Prints progress on stderr; the full log is
# $NIX226_CACHE/build.log. Returns non-zero (with the log's tail) when it fails.
nix226_root_build() {
  [[ -d $NIX226_ROOT ]] && return 0
  local mirror tmp started=$SECONDS
  mirror=${HOMELAB_NIX226_MIRROR:-$(nix226_host_mirror || true)}
  [[ -n $mirror ]] || mirror=http://deb.debian.org/debian
  mkdir -p "$NIX226_CACHE/debs" || return 1
  (
    exec 9>"$NIX226_CACHE/.lock"
    flock -w 1800 9 || { echo "nix226: another build holds $NIX226_CACHE/.lock" >&2; exit 1; }
    [[ -d $NIX226_ROOT ]] && exit 0 # built by someone else while we waited
    tmp=$NIX226_ROOT.tmp
    nix226_unmount_under "$tmp"
    rm -rf --one-file-system "$tmp"
    log=$NIX226_CACHE/build.log
    echo "nix226: building $NIX226_ROOT (debootstrap $NIX226_SUITE from $mirror)" >&2
    {
      # debootstrap does not resolve virtual packages (nix-bin's dependencies need some):
      # a minimal base here, everything else with apt-get inside.
      debootstrap --variant=minbase --cache-dir="$NIX226_CACHE/debs" \
        "$NIX226_SUITE" "$tmp" "$mirror" &&
        # No service starts while packages install (nginx, ssh, prometheus...).
        printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d" &&
        chmod 0755 "$tmp/usr/sbin/policy-rc.d" &&
        printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
          >"$tmp/etc/apt/apt.conf.d/90nix226" &&
        # Lean: qemu-user ships an emulator for every architecture (450 MB); the tests
        # need aarch64's. No documentation either.
        printf '%s\n' 'path-exclude=/usr/bin/qemu-*' 'path-include=/usr/bin/qemu-aarch64' \
          'path-exclude=/usr/share/doc/*' 'path-exclude=/usr/share/man/*' \
          'path-exclude=/usr/share/locale/*' >"$tmp/etc/dpkg/dpkg.cfg.d/90nix226" &&
        unshare --mount --propagation private -- bash -c '
          set -e
          tmp=$1 debs=$2; shift 2
          mount -t proc proc "$tmp/proc"
          mount --rbind /dev "$tmp/dev"
          mount --bind "$debs" "$tmp/var/cache/apt/archives"
          export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
          chroot "$tmp" /usr/bin/apt-get update -q
          chroot "$tmp" /usr/bin/apt-get install -y -q "$@"
        ' _ "$tmp" "$NIX226_CACHE/debs" $NIX226_PACKAGES
    } </dev/null >"$log" 2>&1 || {
      tail -n 25 "$log" >&2
      echo "nix226: building the $NIX226_SUITE root failed (log: $log)" >&2
      exit 1
    }
    # The store, as root's nix writes it without a daemon; no nix.conf: the tests state
    # every setting (an empty NIX_CONF_DIR, as tests/run).
    mkdir -p "$tmp/nix/store" "$tmp/nix/var/nix" "$tmp/work"
    rm -rf "$tmp"/var/lib/apt/lists/* "$tmp/debootstrap"
    mv "$tmp" "$NIX226_ROOT"
    echo "nix226: root built in $((SECONDS - started))s ($(du -sh "$NIX226_ROOT" | cut -f1))" >&2
  )
}
