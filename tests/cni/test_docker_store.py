"""The Docker plugin and the real ``host-local`` plugin draw from one store: never the same address.

host-local runs as a runtime runs it (CNI_* environment, config on stdin), interleaved and in
parallel with the plugin's reservations, on one /28: together they fill it exactly once.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from overlayd.dockerplugin.hoststore import HostLocalStore, StoreError

HOST_LOCAL = Path("/usr/lib/cni/host-local")
SUBNET = IPv4Network("198.18.7.0/28")
GATEWAY = IPv4Address("198.18.7.1")

pytestmark = pytest.mark.skipif(not HOST_LOCAL.exists(), reason="needs containernetworking-plugins")


def host_local(data_dir: Path, command: str, container_id: str) -> subprocess.CompletedProcess[str]:
    config = {"cniVersion": "1.0.0", "name": "cbr0", "type": "host-local", "ipam": {
        "type": "host-local", "dataDir": str(data_dir),
        "ranges": [[{"subnet": str(SUBNET), "gateway": str(GATEWAY)}]]}}  # fmt: skip
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": "/proc/self/ns/net",
           "CNI_IFNAME": "eth0", "CNI_PATH": str(HOST_LOCAL.parent), "PATH": os.environ["PATH"]}  # fmt: skip
    return subprocess.run([str(HOST_LOCAL)], input=json.dumps(config), env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip


def cni_add(data_dir: Path, container_id: str) -> IPv4Address | None:
    done = host_local(data_dir, "ADD", container_id)
    if done.returncode != 0:
        assert "no IP addresses available" in done.stdout, done.stdout
        return None
    return IPv4Address(json.loads(done.stdout)["ips"][0]["address"].split("/")[0])


def docker_reserve(store: HostLocalStore) -> IPv4Address | None:
    try:
        return store.reserve(SUBNET, GATEWAY, None, "docker")
    except StoreError as err:
        assert "no free address left" in str(err)
        return None


def test_interleaved_they_fill_the_28_once_and_cni_del_frees_only_cnis(tmp_path: Path) -> None:
    store = HostLocalStore(tmp_path / "cbr0")
    got: list[tuple[str, IPv4Address | None]] = []
    for n in range(8):
        got.append(("cni", cni_add(tmp_path, f"cni{n}")))
        got.append(("docker", docker_reserve(store)))
    given = [address for _, address in got if address is not None]
    assert sorted(given) == [a for a in SUBNET.hosts() if a != GATEWAY], got
    dockers = {address for who, address in got if who == "docker" and address is not None}
    assert {r.address for r in store.reservations() if r.ours} == dockers
    for n in range(8):
        assert host_local(tmp_path, "DEL", f"cni{n}").returncode == 0
    assert {r.address for r in store.reservations()} == dockers, "a CNI DEL freed a Docker address"


def test_in_parallel_no_address_is_given_twice(tmp_path: Path) -> None:
    store = HostLocalStore(tmp_path / "cbr0")
    with ThreadPoolExecutor(max_workers=8) as pool:
        cni = [pool.submit(cni_add, tmp_path, f"p{n}") for n in range(8)]
        docker = [pool.submit(docker_reserve, store) for _ in range(8)]
        given = [f.result() for f in cni + docker]
    addresses = [a for a in given if a is not None]
    assert len(addresses) == 13 and len(set(addresses)) == 13, given


def test_a_lock_held_too_long_is_an_error_naming_it_and_nothing_is_reserved(tmp_path: Path) -> None:
    store = HostLocalStore(tmp_path / "cbr0")
    store.directory.mkdir()
    holder = os.open(store.directory / "lock", os.O_RDONLY | os.O_CREAT)  # another open file: another holder
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        named = r"cbr0/lock is held by another process for 0 s"
        with pytest.raises(StoreError, match=named), store.locked(0.2):
            pass
    finally:
        os.close(holder)
    assert store.reservations() == []
    assert docker_reserve(store) == IPv4Address("198.18.7.2")
