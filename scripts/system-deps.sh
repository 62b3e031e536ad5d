#!/usr/bin/env bash
# Installs the real services the tests run against, from Debian's packages, where this machine
# allows it (root or passwordless sudo). Where it cannot, the tests that need them skip with a
# one-line reason, except under CI=true, where they fail.
set -u
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql-15)
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v age >/dev/null || need+=(age)
[ -x /usr/bin/chromium ] || need+=(chromium)  # the browser tests drive Debian's chromium (no browser download)
# WeasyPrint (reports, labels) draws text with Pango; its PDFs embed DejaVu.
ls /usr/lib/*/libpango-1.0.so.0 >/dev/null 2>&1 || need+=(libpango-1.0-0 libpangoft2-1.0-0)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "system-deps: cannot install ${need[*]} (not root, no sudo): those tests will skip" >&2; exit 0; fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null 2>&1; $SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1; } ||
  echo "system-deps: apt-get could not install ${need[*]}: those tests will skip" >&2
exit 0
