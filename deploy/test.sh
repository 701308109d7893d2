#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine, as root: installs what it needs, lints, tests.
# Extra arguments go to pytest (e.g. `bash deploy/test.sh tests/unit -k lease`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
# The deploy checks run systemd-analyze and promtool, and the alert test runs a Prometheus server
# of its own. Both binaries are unpacked from Debian's prometheus package into .tools/ instead of
# installing that package, whose install would start a Prometheus service on this machine.
if ! command -v systemd-analyze >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd
fi
if [ ! -x .tools/prometheus ] || { ! command -v promtool >/dev/null && [ ! -x .tools/promtool ]; }; then
  download=$(mktemp -d)
  fetch() { (cd "$download" && apt-get download -q -o APT::Sandbox::User=root prometheus); }
  fetch || { apt-get update -q && fetch; }
  dpkg-deb -x "$download"/prometheus_*.deb "$download/files"
  install -D "$download/files/usr/bin/promtool" .tools/promtool
  install -D "$download/files/usr/bin/prometheus" .tools/prometheus
  rm -rf "$download"
fi
export PATH="$PATH:$PWD/.tools"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
