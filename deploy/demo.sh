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
lab_running=3  # `overlayd lab up`: a lab of that name runs (kept, or another demo's); it is left alone
# Ctrl-C stops `lab up`; the demo itself goes on to remove what was built.
trap 'interrupted=1' INT TERM
interrupted=0
# With Docker installed, each host also runs a dockerd and the Docker plugin, with a container in
# the ping table beside the CNI ones.
docker=()
if command -v dockerd >/dev/null && command -v docker >/dev/null; then docker=(--docker); fi
up() { .venv/bin/overlayd lab up --name "$name" --hosts "$hosts" --ping "${docker[@]}" && status=0 || status=$?; }
up
if [ "$status" = "$lab_running" ] && [ -z "${OVERLAYD_LAB:-}" ] && [ "$interrupted" = 0 ]; then
  name=ovlab$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
  echo "demo: lab ovlab is in use (see above); this run uses lab $name"
  up
fi
if [ "$status" = "$lab_running" ]; then
  exit "$status"
fi
if [ "${KEEP:-0}" = 1 ]; then
  echo "demo: lab $name kept; .venv/bin/overlayd lab status|ping|down --name $name"
else
  .venv/bin/overlayd lab down --name "$name" >/dev/null
  echo "demo: lab $name removed, its logs with it (KEEP=1 keeps it)"
fi
[ "$interrupted" = 0 ] || exit 130
exit "$status"
