#!/usr/bin/env bash
# Install everything overlayd, its tests and its demo need on a Debian machine (run as root):
# the real components from Debian packages, and a virtual environment in .venv with the
# Python dependencies. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(etcd-server etcd-client containernetworking-plugins iproute2 iptables nftables
          iperf3 iputils-ping procps openssl)  # openssl: certificates for the etcd TLS tests
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ! python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  missing+=(python3 python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The Debian etcd-server package may start a system etcd; the lab and tests run their own.

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# An editable install leaves our own modules uncompiled; a wheel install would have compiled
# them. Without bytecode every agent start and CNI call compiles its modules again (~30 ms on a
# cold start) wherever PYTHONDONTWRITEBYTECODE is set or the checkout is read-only.
.venv/bin/python -m compileall -q overlayd cni-shim/cni_shim
echo "setup: ready ($(.venv/bin/python --version), etcd $(etcd --version | head -1 | awk '{print $3}'))"
