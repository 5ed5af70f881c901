#!/usr/bin/env bash
# Idempotent set-up for the benchmark: the peers it compares against (bpftrace, auditd) and a
# C compiler for the workload driver. Run after scripts/setup.sh (`make bench` does both).
# auditd is installed but left stopped and disabled: the benchmark starts it only for its
# own rounds, so it never taxes the rest of the host.
set -euo pipefail

say() { printf 'bench-setup: %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "error: run as root"; exit 2; }

export DEBIAN_FRONTEND=noninteractive
pkgs=(gcc libc6-dev bpftrace auditd)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The package's postinst may start auditd; the benchmark runs its own auditd only during its
# auditd rounds, so stop that one (by its pid, as the kernel reports it) and drop any rules.
pid=$(auditctl -s 2>/dev/null | awk '$1 == "pid" {print $2}')
if [ -n "$pid" ] && [ "$pid" != 0 ]; then
  say "stopping auditd (pid $pid): the benchmark starts it only for its own rounds"
  kill "$pid" 2>/dev/null || true
fi
auditctl -D >/dev/null 2>&1 || true
