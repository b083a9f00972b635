#!/usr/bin/env bash
# Install the Debian tools Imprint's end-to-end tests and benchmarks drive: iproute2 (network
# namespaces), Kea (kea-dhcp4 as the peer server, perfdhcp as a load client), dhcpcd and busybox
# udhcpc (real DHCP clients), dig, curl, chromium (page screenshots), procps, sqlite3, and
# PostgreSQL (the store contract tests start a throwaway server of their own: initdb, pg_ctl).
#
# Idempotent: does nothing when every package is already installed. Without root or apt-get it
# only prints what is missing and exits 0, so the tests that need these tools skip with a reason.
# Services are never started: Kea's postinst would otherwise leave kea-dhcp4 listening on port 67.
set -euo pipefail

PACKAGES=(
  iproute2
  kea-dhcp4-server
  kea-admin
  dhcpcd-base
  udhcpc
  dnsutils
  curl
  chromium
  procps
  sqlite3
  postgresql
)
# Binaries the tests look up, checked after the install so a renamed package is caught here.
BINARIES=(ip kea-dhcp4 perfdhcp dhcpcd udhcpc dig curl chromium pgrep sqlite3)
# apt-get update is skipped when the lists were refreshed less than this long ago.
APT_FRESH_SECONDS=$((6 * 3600))
APT_STAMP=/var/lib/apt/imprint-update-stamp

missing_packages() {
  local pkg status
  for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "installed" ]]; then
      printf '%s\n' "$pkg"
    fi
  done
}

missing_binaries() {
  local bin
  for bin in "${BINARIES[@]}"; do
    # perfdhcp and kea-dhcp4 live in /usr/sbin, which a non-root PATH may lack.
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1; then
      printf '%s\n' "$bin"
    fi
  done
  # PostgreSQL's server binaries live in /usr/lib/postgresql/<major>/bin, never on PATH.
  if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    printf '%s\n' "initdb (postgresql)"
  fi
}

report_versions() {
  local pkg
  echo "install-debian-deps: installed versions:"
  for pkg in "${PACKAGES[@]}"; do
    printf '  %-18s %s\n' "$pkg" \
      "$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || echo '(not installed)')"
  done
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-debian-deps: no apt-get/dpkg here; install these by hand if you want the" \
    "network-namespace tests and benches:"
  missing_binaries | sed 's/^/  missing binary: /'
  exit 0
fi

mapfile -t MISSING < <(missing_packages)
if [[ ${#MISSING[@]} -eq 0 ]]; then
  echo "install-debian-deps: all packages already installed"
else
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-debian-deps: not root; missing packages (network-namespace tests will skip):"
    printf '  %s\n' "${MISSING[@]}"
    echo "  run: sudo $0"
    exit 0
  fi

  export DEBIAN_FRONTEND=noninteractive

  # policy-rc.d exiting 101 tells invoke-rc.d "do not start services" (Debian policy 9.3.3).
  # An existing policy-rc.d is put back exactly as it was when we finish.
  POLICY=/usr/sbin/policy-rc.d
  POLICY_BACKUP=""
  restore_policy() {
    if [[ -n "$POLICY_BACKUP" ]]; then
      mv -f "$POLICY_BACKUP" "$POLICY"
    else
      rm -f "$POLICY"
    fi
  }
  if [[ -e "$POLICY" ]]; then
    POLICY_BACKUP=$(mktemp /usr/sbin/.policy-rc.d.imprint.XXXXXX)
    cp -p "$POLICY" "$POLICY_BACKUP"
  fi
  trap restore_policy EXIT
  printf '#!/bin/sh\nexit 101\n' >"$POLICY"
  chmod 0755 "$POLICY"

  apt_update() {
    echo "install-debian-deps: apt-get update"
    apt-get update -qq
    touch "$APT_STAMP"
  }
  now=$(date +%s)
  last=0
  if [[ -f "$APT_STAMP" ]]; then
    last=$(stat -c %Y "$APT_STAMP")
  fi
  updated=0
  if ((now - last < APT_FRESH_SECONDS)); then
    echo "install-debian-deps: apt lists refreshed $(((now - last) / 60)) min ago; skipping update"
  else
    apt_update
    updated=1
  fi

  echo "install-debian-deps: installing ${MISSING[*]}"
  if ! apt-get install -y -qq --no-install-recommends "${MISSING[@]}"; then
    # The stamp can outlive the lists (an image cleaned /var/lib/apt/lists): refresh once.
    if ((updated)); then
      exit 1
    fi
    apt_update
    apt-get install -y -qq --no-install-recommends "${MISSING[@]}"
  fi

  restore_policy
  trap - EXIT
fi

# Belt and braces: a kea-dhcp4 started by a package script (or an older install) would answer
# our test clients instead of the server under test. Stop only daemons run from Kea's packaged
# binaries, never a kea-dhcp4 a test started from its own config in a temporary directory.
if command -v pgrep >/dev/null 2>&1; then
  for pid in $(pgrep '^kea-' || true); do
    args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [[ "$args" == *"/etc/kea/"* ]]; then
      echo "install-debian-deps: stopping packaged Kea daemon $pid: $args"
      kill "$pid" 2>/dev/null || true
    fi
  done
fi

report_versions
mapfile -t NOBIN < <(missing_binaries)
if [[ ${#NOBIN[@]} -gt 0 ]]; then
  echo "install-debian-deps: still missing binaries: ${NOBIN[*]}"
fi
exit 0
