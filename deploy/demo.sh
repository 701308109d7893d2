#!/usr/bin/env bash
# The demo on a fresh Debian machine, as root: three hosts in network namespaces, a real etcd,
# one overlayd agent per host and two containers per host attached by the CNI plugin; prints the
# hosts and all-pairs ping tables of their flannel.1 addresses and of the containers across the
# VXLAN overlay. Removes the lab afterwards unless KEEP=1 is set
# (then explore with `.venv/bin/overlayd lab status` and remove with `.venv/bin/overlayd lab down`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
name=${OVERLAYD_LAB:-ovlab}
hosts=${HOSTS:-3}
if [ "${KEEP:-0}" != 1 ]; then
  trap '.venv/bin/overlayd lab down --name "$name" >/dev/null && echo "demo: lab $name removed, its logs with it (KEEP=1 keeps it)"' EXIT
fi
.venv/bin/overlayd lab down --name "$name" >/dev/null 2>&1 || true
.venv/bin/overlayd lab up --name "$name" --hosts "$hosts" --ping
if [ "${KEEP:-0}" = 1 ]; then
  echo "demo: lab $name kept; .venv/bin/overlayd lab status|ping|down --name $name"
fi
