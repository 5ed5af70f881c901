#!/usr/bin/env bash
# A system install of ebpfguard that the service can trust (`make install`, `make uninstall`).
#   scripts/install.sh install WHEEL    a venv in $PREFIX from the wheel, the systemd unit
#                                       running $PREFIX/bin/ebpfguard, logrotate, a PATH link
#   scripts/install.sh uninstall        removes exactly what install put there
# Everything installed is root's and written under umask 022: the unit runs code as root, so
# no file it executes may be writable by anyone else (a clone's .venv is not such a place).
# Locations (defaults in the Makefile): PREFIX, BINDIR, UNITDIR, LOGROTATEDIR.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
: "${PREFIX:=/opt/ebpfguard}" "${BINDIR:=/usr/local/bin}" "${UNITDIR:=/etc/systemd/system}"
: "${LOGROTATEDIR:=/etc/logrotate.d}"
# What install put where, one path a line: uninstall removes these and nothing else.
manifest="$PREFIX/.installed-files"

say() { printf 'install: %s\n' "$*" >&2; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "run as root: the install is root's, so that only root can change what the service runs"
case "$PREFIX" in
  /*/*) ;;
  *) die "PREFIX must be an absolute directory of its own (got '$PREFIX')" ;;
esac
umask 022

# Under systemd, it re-reads units; elsewhere (a container, a chroot) there is nothing to tell.
reload_systemd() { if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; }

remove_install() {
  [ -e "$PREFIX" ] || return 0
  [ -f "$manifest" ] || die "$PREFIX exists but was not made by this script; remove it or pick another PREFIX"
  if [ -d /run/systemd/system ] && systemctl is-enabled --quiet ebpfguard 2>/dev/null; then
    systemctl disable --now ebpfguard >&2
  fi
  while IFS= read -r path; do
    # A clone's set-up may have re-pointed the PATH link since: leave one that is not ours.
    if [ -L "$path" ] && [ "$(readlink "$path")" != "$PREFIX/bin/ebpfguard" ]; then continue; fi
    rm -f -- "$path"
  done < "$manifest"
  rm -rf -- "$PREFIX"
  reload_systemd
  say "removed $PREFIX"
}

install_wheel() {
  local wheel=$1
  [ -f "$wheel" ] || die "no wheel at '$wheel' (make install builds one)"
  remove_install
  say "installing $(basename "$wheel") into $PREFIX"
  # The distro's python, so the venv sees the distro's bcc (python3-bpfcc).
  /usr/bin/python3 -m venv --system-site-packages "$PREFIX"
  "$PREFIX/bin/pip" install -q --disable-pip-version-check --no-cache-dir "$wheel" >&2
  "$PREFIX/bin/python" -c "import bcc" 2>/dev/null || die "$PREFIX cannot import bcc (apt-get install python3-bpfcc)"

  mkdir -p "$UNITDIR" "$LOGROTATEDIR" "$BINDIR"
  sed "s#/opt/ebpfguard/#$PREFIX/#g" "$repo/deploy/systemd/ebpfguard.service" > "$UNITDIR/ebpfguard.service"
  chmod 644 "$UNITDIR/ebpfguard.service"
  install -m 644 "$repo/deploy/logrotate/ebpfguard" "$LOGROTATEDIR/ebpfguard"
  ln -sfn "$PREFIX/bin/ebpfguard" "$BINDIR/ebpfguard"
  printf '%s\n' "$UNITDIR/ebpfguard.service" "$LOGROTATEDIR/ebpfguard" "$BINDIR/ebpfguard" > "$manifest"
  reload_systemd
  say "installed: $BINDIR/ebpfguard -> $PREFIX/bin/ebpfguard; start the service with"
  say "  systemctl enable --now ebpfguard"
}

case "${1:-}" in
  install) install_wheel "${2:-}" ;;
  uninstall) remove_install ;;
  *) die "usage: $0 install WHEEL | uninstall" ;;
esac
