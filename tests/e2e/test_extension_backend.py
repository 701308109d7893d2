"""The extension backend with real agents: commands that build a host-gw data path, the inputs
flanneld gives each command, retries, timeouts, removals with the departed peer's data, restarts
and bad input. The leases written by hand here are byte for byte what flanneld v0.20.2 writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from labtools import log_mark, log_since, needs_lab, running_lab, wait_for

from overlayd.lab.hosts import ETCD_PREFIX, LAB_NETWORK
from overlayd.lab.namespaces import Lab, LabHost, sh

pytestmark = needs_lab


def extension_config(root: Path, **extra: object) -> str:
    """Commands as in flannel's host-gw example, which also note what they were given in ``root``
    (per host: ``ip netns identify`` names the namespace they run in)."""
    me = "$(ip netns identify)"
    return json.dumps({"Network": LAB_NETWORK, "Backend": {
        "Type": "extension",
        "PreStartupCommand": f'test -e {root}/fail-pre-{me} && {{ echo no such module >&2; exit 5; }}; '
        f'printf \'  <%s>&"x"\\n\' {me}; echo to-stderr >&2',
        "PostStartupCommand": f'test -e {root}/fail-post-{me} && {{ echo no device >&2; exit 6; }}; '
        f'echo "$NETWORK $SUBNET $PUBLIC_IP" > {root}/post-{me}',
        "SubnetAddCommand": f'test -e {root}/fail-add-${{SUBNET%/*}} && '
        "{ echo refused $SUBNET >&2; exit 3; }; "
        f'test -e {root}/hang-${{SUBNET%/*}} && sleep 600; '
        f'cat > {root}/add-{me}-${{SUBNET%/*}}; ip route replace $SUBNET via $PUBLIC_IP',
        "SubnetRemoveCommand": f'cat > {root}/remove-{me}-${{SUBNET%/*}}; '
        "ip route del $SUBNET via $PUBLIC_IP",
        "CommandTimeout": 3,
        **extra,
    }})  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("commands")


@pytest.fixture(scope="module")
def ext_lab(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Iterator[Lab]:
    with running_lab(tmp_path_factory, hosts=2, network_config=extension_config(root)) as lab:
        lab.add_containers(1)
        yield lab


def subnet_of(host: LabHost) -> str:
    return host.subnet_env()["FLANNEL_SUBNET"].replace(".1/", ".0/")


def lease_value(lab: Lab, subnet: str) -> str:
    key = subnet.replace("/", "-")
    return lab.etcd().etcdctl("get", f"{ETCD_PREFIX}/subnets/{key}", "--print-value-only").strip()


def put_lease(lab: Lab, subnet: str, value: str) -> None:
    lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/subnets/{subnet.replace('/', '-')}", value)


def delete_lease(lab: Lab, subnet: str) -> None:
    lab.etcd().etcdctl("del", f"{ETCD_PREFIX}/subnets/{subnet.replace('/', '-')}")


def flanneld_lease(public_ip: str, data: str) -> str:
    """A lease as flanneld v0.20.2's extension backend writes it."""
    return f'{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"extension","BackendData":{data}}}'


def route_via(host: LabHost, subnet: str) -> str | None:
    routes = json.loads(sh("ip", "-4", "-j", "route", "show", subnet, netns=host.netns) or "[]")
    return next((route.get("gateway") for route in routes if route.get("dst") == subnet), None)


def test_backend_data_is_pre_startup_output_as_flanneld_writes_it(ext_lab: Lab) -> None:
    for host in ext_lab.hosts:
        data = f'"\\u003c{host.netns}\\u003e\\u0026\\"x\\"\\nto-stderr"'  # trimmed, combined, Go-escaped
        assert lease_value(ext_lab, subnet_of(host)) == flanneld_lease(host.ip, data)


def test_post_startup_gets_this_hosts_network_subnet_and_public_ip(ext_lab: Lab, root: Path) -> None:
    for host in ext_lab.hosts:
        post, expected = root / f"post-{host.netns}", f"{LAB_NETWORK} {subnet_of(host)} {host.ip}\n"
        written = lambda p=post, e=expected: p.exists() and p.read_text() == e  # noqa: E731
        wait_for(written, 10, f"{host.name}'s PostStartupCommand")


def test_containers_ping_across_hosts_over_the_routes_the_commands_made(ext_lab: Lab, root: Path) -> None:
    h1, h2 = ext_lab.hosts
    wait_for(lambda: route_via(h1, subnet_of(h2)) == h2.ip and route_via(h2, subnet_of(h1)) == h1.ip,
             20, "each host's route to the other")  # fmt: skip
    table, ok = ext_lab.container_ping_table()
    assert ok, table
    # SubnetAddCommand had the peer's BackendData (a string, decoded) and a newline on stdin.
    added = root / f"add-{h1.netns}-{subnet_of(h2).split('/')[0]}"
    assert added.read_text() == f'  <{h2.netns}>&"x"\nto-stderr\n'.lstrip()


def test_a_deleted_lease_gets_subnet_remove_with_the_departed_peers_data(ext_lab: Lab, root: Path) -> None:
    h1 = ext_lab.hosts[0]
    subnet = "198.18.250.0/24"
    put_lease(ext_lab, subnet, flanneld_lease("192.0.2.99", '"fake \\u0026 \\"data\\""'))
    wait_for(lambda: route_via(h1, subnet) == "192.0.2.99", 20, "the route SubnetAddCommand made")
    delete_lease(ext_lab, subnet)
    removed = root / f"remove-{h1.netns}-198.18.250.0"
    wait_for(lambda: removed.exists() and removed.read_text() == 'fake & "data"\n', 20, "SubnetRemoveCommand")
    wait_for(lambda: route_via(h1, subnet) is None, 10, "the route gone")


def test_a_failing_command_is_logged_with_status_and_stderr_and_retried(ext_lab: Lab, root: Path) -> None:
    h1 = ext_lab.hosts[0]
    subnet, mark = "198.18.251.0/24", log_mark(h1)
    marker = root / "fail-add-198.18.251.0"
    marker.touch()
    try:
        put_lease(ext_lab, subnet, flanneld_lease("192.0.2.98", '"d"'))
        failed = ("SubnetAddCommand for peer 198.18.251.0/24 (PublicIP 192.0.2.98) failed with exit status"
                  " 3: refused 198.18.251.0/24; retrying in")  # fmt: skip
        wait_for(lambda: failed in log_since(h1, mark), 20, "the failure in the log")
        assert route_via(h1, subnet) is None
        marker.unlink()
        wait_for(lambda: route_via(h1, subnet) == "192.0.2.98", 30, "the retry's route")
        assert "failed attempt(s)" in log_since(h1, mark)
        assert "PATH=" not in log_since(h1, mark)  # never the environment
    finally:
        marker.unlink(missing_ok=True)
        delete_lease(ext_lab, subnet)


def test_a_hung_command_is_killed_and_holds_up_no_other_peer(ext_lab: Lab, root: Path) -> None:
    h1 = ext_lab.hosts[0]
    hung, fine, mark = "198.18.252.0/24", "198.18.253.0/24", log_mark(h1)
    marker = root / "hang-198.18.252.0"
    marker.touch()
    try:
        put_lease(ext_lab, hung, flanneld_lease("192.0.2.97", '"h"'))
        put_lease(ext_lab, fine, flanneld_lease("192.0.2.96", '"f"'))
        wait_for(lambda: route_via(h1, fine) == "192.0.2.96", 20, "the other peer's route")
        killed = "for peer 198.18.252.0/24 (PublicIP 192.0.2.97) timed out after 3 s and was killed"
        wait_for(lambda: killed in log_since(h1, mark), 20, "the timeout in the log")
        marker.unlink()
        wait_for(lambda: route_via(h1, hung) == "192.0.2.97", 30, "the retry after the timeout")
    finally:
        marker.unlink(missing_ok=True)
        delete_lease(ext_lab, hung)
        delete_lease(ext_lab, fine)


def test_a_peer_with_backend_data_that_is_not_a_string_is_named_and_skipped(ext_lab: Lab) -> None:
    h1 = ext_lab.hosts[0]
    subnet, mark = "198.18.254.0/24", log_mark(h1)
    put_lease(ext_lab, subnet, '{"PublicIP":"192.0.2.95","PublicIPv6":null,"BackendType":"extension",'
                               '"BackendData":{"VNI":1}}')  # fmt: skip
    try:
        named = 'lease 198.18.254.0-24: its BackendData {"VNI":1} is not a JSON string'
        wait_for(lambda: named in log_since(h1, mark), 20, "the bad lease named")
        assert route_via(h1, subnet) is None
    finally:
        delete_lease(ext_lab, subnet)


def test_a_restart_adds_present_peers_again_removes_only_the_one_that_left(ext_lab: Lab, root: Path) -> None:
    """As flanneld, the restarted agent runs SubnetAddCommand for every peer; unlike flanneld, a
    peer whose lease went while it was down gets its SubnetRemoveCommand (from the kept record)."""
    h1, h2 = ext_lab.hosts
    gone = "198.18.249.0/24"
    put_lease(ext_lab, gone, flanneld_lease("192.0.2.94", '"bye"'))
    wait_for(lambda: route_via(h1, gone) == "192.0.2.94", 20, "the route to the peer that will leave")
    added = root / f"add-{h1.netns}-{subnet_of(h2).split('/')[0]}"
    added.unlink()
    ext_lab.stop_agent(h1)
    delete_lease(ext_lab, gone)
    mark = log_mark(h1)
    ext_lab.start_agent(h1)
    wait_for(added.exists, 20, "SubnetAddCommand for the present peer again")
    removed = root / f"remove-{h1.netns}-198.18.249.0"
    gone_removed = lambda: removed.exists() and removed.read_text() == "bye\n"  # noqa: E731
    wait_for(gone_removed, 20, "SubnetRemoveCommand for the peer that left meanwhile")
    assert not (root / f"remove-{h1.netns}-{subnet_of(h2).split('/')[0]}").exists()
    assert route_via(h1, gone) is None and route_via(h1, subnet_of(h2)) == h2.ip
    assert "Traceback" not in log_since(h1, mark)


def test_a_config_with_a_non_string_command_is_refused_the_data_path_kept(ext_lab: Lab, root: Path) -> None:
    h1 = ext_lab.hosts[0]
    mark = log_mark(h1)
    bad = json.loads(extension_config(root))
    bad["Backend"]["SubnetAddCommand"] = 42
    ext_lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", json.dumps(bad))
    try:
        named = "Backend.SubnetAddCommand 42 is invalid; use a shell command as a JSON string"
        wait_for(lambda: named in log_since(h1, mark), 20, "the bad command named")
        table, ok = ext_lab.container_ping_table()
        assert ok, table
    finally:
        ext_lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", extension_config(root))


def test_a_failing_pre_startup_holds_the_lease_back_until_it_succeeds(ext_lab: Lab, root: Path) -> None:
    """flanneld exits when PreStartupCommand fails; overlayd names the status and output, is not
    ready, and takes its lease once the command succeeds."""
    netns = f"{ext_lab.name}-h3"
    marker = root / f"fail-pre-{netns}"
    marker.touch()
    try:
        h3 = ext_lab.add_host()
        failed = "PreStartupCommand failed with exit status 5: no such module"
        wait_for(lambda: h3.log_file.exists() and failed in log_since(h3, 0), 30, "the failure named")
        assert not h3.subnet_env()
        marker.unlink()
        wait_for(lambda: h3.subnet_env().get("FLANNEL_SUBNET"), 60, "h3's lease after the retry")
        data = f'"\\u003c{netns}\\u003e\\u0026\\"x\\"\\nto-stderr"'
        assert lease_value(ext_lab, subnet_of(h3)) == flanneld_lease(h3.ip, data)
    finally:
        marker.unlink(missing_ok=True)


def test_a_failing_post_startup_makes_the_node_not_ready_until_it_succeeds(ext_lab: Lab, root: Path) -> None:
    h2 = ext_lab.hosts[1]
    marker = root / f"fail-post-{h2.netns}"
    marker.touch()
    try:
        ext_lab.stop_agent(h2)
        mark = log_mark(h2)
        ext_lab.start_agent(h2)
        failed = "PostStartupCommand for subnet " + subnet_of(h2) + " failed with exit status 6: no device"
        wait_for(lambda: failed in log_since(h2, mark), 30, "the failure named")
        wait_for(lambda: ext_lab.http_get(h2, "/readyz")[0] == 503, 30, "h2 not ready")
        assert "step device" in ext_lab.http_get(h2, "/readyz")[1]
        marker.unlink()
        wait_for(lambda: ext_lab.http_get(h2, "/readyz")[0] == 200, 60, "h2 ready after the retry")
    finally:
        marker.unlink(missing_ok=True)


def test_a_node_swapped_from_flanneld_keeps_its_subnet_and_peers_rerun_their_commands(
    ext_lab: Lab, root: Path
) -> None:
    """The lease flanneld left (its bytes, its etcd lease) is taken over; the node's new
    PreStartupCommand output is published, peers run SubnetAddCommand again with it, and
    containers on the swapped node reach the others both ways."""
    etcd = ext_lab.etcd()
    lease_id = etcd.etcdctl("lease", "grant", "86400").split()[1]
    h1 = ext_lab.hosts[0]
    ip = f"192.0.2.{11 + len(ext_lab.hosts)}"
    etcd.etcdctl("put", f"{ETCD_PREFIX}/subnets/198.18.201.0-24", flanneld_lease(ip, '"flanneld-era"'),
                 f"--lease={lease_id}")  # fmt: skip
    added = root / f"add-{h1.netns}-198.18.201.0"
    old = "flanneld-era\n"
    wait_for(lambda: added.exists() and added.read_text() == old, 20, "h1's add for the flanneld node")
    node = ext_lab.add_host()  # its agent replaces the flanneld that wrote the lease
    assert node.ip == ip
    wait_for(lambda: node.subnet_env().get("FLANNEL_SUBNET") == "198.18.201.1/24", 30, "its old subnet")
    data = f'"\\u003c{node.netns}\\u003e\\u0026\\"x\\"\\nto-stderr"'
    assert lease_value(ext_lab, "198.18.201.0/24") == flanneld_lease(ip, data)
    new = f'<{node.netns}>&"x"\nto-stderr\n'
    wait_for(lambda: added.read_text() == new, 20, "h1's add with the new data")
    ext_lab.add_container(node, f"{node.name}c1")
    wait_for(lambda: ext_lab.container_ping_table()[1], 30, "container pings with the swapped node")
