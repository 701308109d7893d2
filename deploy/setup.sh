#!/usr/bin/env bash
# Install everything overlayd, its tests and its demo need on a Debian machine (run as root):
# the real components from Debian packages, and a virtual environment in .venv with the
# Python dependencies. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(etcd-server etcd-client containernetworking-plugins iproute2 iptables nftables
          iperf3 iputils-ping procps openssl  # openssl: certificates for the etcd TLS tests
          docker.io busybox-static  # a real dockerd per lab host, and its offline image
          wireguard-go wireguard-tools tcpdump)  # WireGuard where the kernel lacks it; wg; captures
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# The system's Python when it is new enough: one under a home directory (pyenv's, say) would not
# start under the unit's ProtectHome=yes, and a pyenv shim costs ~90 ms per start.
python=python3
if /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  python=/usr/bin/python3
fi
if ! "$python" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  missing+=(python3 python3-venv)
  python=/usr/bin/python3
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -q
  # docker.io's postinst starts a system dockerd, which rewrites this machine's own iptables
  # (FORWARD policy DROP) and turns on forwarding. The tests run their own dockerds inside lab
  # namespaces only: keep every package's service from starting during the install.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's etcd-server package enables and starts a system etcd on 127.0.0.1:2379. The lab and the
# tests run their own, and the agent's default endpoint would quietly find that one: when this run
# installed the package, stop and disable it again.
if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ -d /run/systemd/system ]; then
  systemctl disable --now etcd.service >/dev/null 2>&1 || true
  echo "setup: stopped and disabled the system etcd that etcd-server started" \
       "(systemctl enable --now etcd to have it back)"
fi
# Likewise docker.io enables docker.service and docker.socket for the next boot: disable them (a
# system dockerd would set this machine's FORWARD policy to DROP), and stop them if one started.
if [[ " ${missing[*]} " == *" docker.io "* ]] && command -v systemctl >/dev/null; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now docker.socket docker.service >/dev/null 2>&1 || true
  else
    systemctl disable docker.socket docker.service >/dev/null 2>&1 || true
  fi
  echo "setup: disabled the system dockerd that docker.io enabled; the tests start their own" \
       "(systemctl enable --now docker to have it back)"
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# An editable install leaves our own modules uncompiled; a wheel install would have compiled
# them. Without bytecode every agent start and CNI call compiles its modules again (~30 ms on a
# cold start) wherever PYTHONDONTWRITEBYTECODE is set or the checkout is read-only.
.venv/bin/python -m compileall -q overlayd cni-shim/cni_shim
echo "setup: ready ($(.venv/bin/python --version), etcd $(etcd --version | head -1 | awk '{print $3}'))"
