#!/usr/bin/env bash
# Idempotent host set-up for ebpfguard: distro packages, kernel headers for bcc, tracefs,
# a venv that sees the distro's bcc, and `ebpfguard` on PATH.
#   scripts/setup.sh          what the agent needs
#   scripts/setup.sh --test   plus what the test suite needs
# A second run skips what is already there.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo/.venv"
stamps="$repo/.stamps"
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "run as root: installing packages and loading eBPF probes needs it"
command -v apt-get >/dev/null || die "this script supports Debian and Ubuntu (apt-get not found)"

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then apt-get -o DPkg::Lock::Timeout=600 update -qq; apt_updated=1; fi
  say "installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
apt_has() {
  if [ $apt_updated -eq 0 ]; then apt-get -o DPkg::Lock::Timeout=600 update -qq; apt_updated=1; fi
  apt-cache show "$1" >/dev/null 2>&1
}

agent_pkgs=(python3 python3-venv python3-pip python3-bpfcc)
# prometheus: promtool (rules checks, rule unit tests, check metrics) and a real server for the
# metrics tests; curl: fetching the endpoint as an operator would; prometheus-alertmanager
# (with amtool) and rsyslog: real receivers for the alert outputs, started by the tests on
# loopback with temp configs (never the host's syslog); openssl: test certificates for TLS.
test_pkgs=(gcc libc6-dev bpftool openssh-server openssh-client iproute2 procps tmux
           util-linux systemd logrotate vagrant liburing-dev  # setpriv, systemd-analyze, logrotate -d, vagrant validate, io_uring
           prometheus curl prometheus-alertmanager rsyslog openssl)  # openssl: metrics TLS test certificates
apt_install "${agent_pkgs[@]}"
[ $want_test -eq 1 ] && apt_install "${test_pkgs[@]}"

# Kernel headers: bcc compiles our probes against them at start-up.
kver=$(uname -r)
moddir="/lib/modules/$kver"
if [ ! -e "$moddir/build/include" ]; then
  if apt_has "linux-headers-$kver"; then
    apt_install "linux-headers-$kver"
  else
    arch=$(dpkg --print-architecture)
    meta="linux-headers-$arch"            # Debian
    apt_has "$meta" || meta=linux-headers-generic   # Ubuntu
    apt_install "$meta"
    build=$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n 1)
    [ -n "$build" ] || build=$(ls -d /usr/src/linux-headers-*-generic 2>/dev/null | sort -V | tail -n 1)
    [ -n "$build" ] || die "no kernel headers found under /usr/src after installing $meta"
    common="${build%-*}-common"
    [ -d "$common" ] || common="$build"
    mkdir -p "$moddir"
    ln -sfn "$build" "$moddir/build"
    ln -sfn "$common" "$moddir/source"
    cat >&2 <<MSG
setup: ##################################################################################
setup: WARNING: no exact kernel headers exist for $kver in this distro.
setup:   Linked the nearest ones instead: $moddir/build -> $build
setup:   This is safe for ebpfguard's probes: they use only tracepoints, cgroup BPF hooks and
setup:   BPF helpers, whose layouts are read from the running kernel (tracefs formats), and
setup:   never read a kernel struct by offset; the headers only supply type names and macros.
setup:   Other bcc tools that read kernel structs may be WRONG on this host.
setup: ##################################################################################
MSG
  fi
fi

# tracefs: bcc reads tracepoint formats from it.
if [ ! -e /sys/kernel/tracing/events ] && [ ! -e /sys/kernel/debug/tracing/events ]; then
  say "mounting tracefs on /sys/kernel/tracing"
  mount -t tracefs nodev /sys/kernel/tracing
fi

# The venv must come from the distro's python so it sees the distro's bcc.
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
mkdir -p "$stamps"
extras=""
[ $want_test -eq 1 ] && extras="[test]"
hash=$(sha256sum "$repo/pyproject.toml" | cut -c1-16)
have=$(cat "$stamps/pip" 2>/dev/null || true)
if [ "$have" != "$hash[test]" ] && { [ $want_test -eq 1 ] || [ "$have" != "$hash" ]; }; then
  say "installing ebpfguard$extras into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -e "$repo$extras"
  echo "$hash$extras" > "$stamps/pip"
fi
"$venv/bin/python" -c "import bcc" 2>/dev/null || die "the venv cannot import bcc (python3-bpfcc); is $venv made from /usr/bin/python3?"
# `make install` owns the name once it has put a release there; a clone links itself otherwise.
link=/usr/local/bin/ebpfguard
if [ -L "$link" ] && [ -e "$(dirname "$(readlink "$link")")/../.installed-files" ]; then
  say "ready: $venv/bin/ebpfguard ($link is the system install, $(readlink "$link"))"
else
  ln -sfn "$venv/bin/ebpfguard" "$link"
  say "ready: $(command -v ebpfguard)"
fi
