"""The agent waits for a missing or broken network config, masquerades on request, is observable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from labtools import log_mark, log_since, needs_lab, running_lab, status_json, wait_for

from overlayd.lab.namespaces import ETCD_PREFIX, Lab, LabHost, sh

VXLAN_NETWORK = '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan"}}'

pytestmark = [needs_lab, pytest.mark.root]


@pytest.fixture
def bare_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Two hosts with --ip-masq and no network config in etcd yet."""
    with running_lab(
        tmp_path_factory, hosts=2, agent_args=("--ip-masq",), converge=False, network_config=None
    ) as lab:
        yield lab


def fetch(lab: Lab, path: str) -> tuple[int, str]:
    """GET h1's HTTP endpoint (served on the default --metrics-address) from inside its namespace."""
    return lab.http_get(lab.hosts[0], path)


def test_missing_then_invalid_then_valid_config(bare_lab: Lab) -> None:
    h1 = bare_lab.hosts[0]
    log = h1.log_file.read_text
    wait_for(lambda: "is missing; waiting for it" in log(), 15, "the missing-config message")
    status, body = fetch(bare_lab, "/readyz")
    assert status == 503 and "reading the network config: network config at" in body, body
    assert "is missing; waiting for it" in body, "/readyz must say why, not only what it waits for"
    etcd = bare_lab.etcd()
    etcd.etcdctl("put", f"{ETCD_PREFIX}/config", '{"Network": "198.18.0.0/16", "SubnetLen": 31}')
    wait_for(
        lambda: "SubnetLen 31 is larger than 30; use a SubnetLen between 18 and 30" in log(),
        15,
        "the invalid-config message naming SubnetLen",
    )
    assert not h1.subnet_file.exists(), "no subnet.env may be written from a broken config"
    assert all(host.pid and os.path.exists(f"/proc/{host.pid}") for host in bare_lab.hosts), "agent exited"
    etcd.etcdctl("put", f"{ETCD_PREFIX}/config", VXLAN_NETWORK)
    bare_lab.wait_converged(timeout=30)
    env = h1.subnet_env()
    assert env["FLANNEL_IPMASQ"] == "true"
    assert bare_lab.ping(h1, bare_lab.hosts[1].flannel_address() or "", count=2)

    rules = sh("nft", "list", "table", "ip", "overlayd", netns=h1.netns)
    assert "ip saddr 198.18.0.0/16 ip daddr 198.18.0.0/16 return" in rules
    assert "masquerade" in rules

    assert fetch(bare_lab, "/readyz")[0] == 200
    status, metrics = fetch(bare_lab, "/metrics")
    assert status == 200
    assert "overlayd_peers_known 1.0" in metrics
    assert "overlayd_peers_programmed 1.0" in metrics
    assert "overlayd_ready 1.0" in metrics
    assert f'subnet="{env["FLANNEL_SUBNET"].replace(".1/", ".0/")}"' in metrics
    assert fetch(bare_lab, "/healthz")[0] == 200


    # A running cluster's config broken by hand: logged, nothing changes, traffic keeps flowing.
    before = h1.subnet_file.read_text()
    etcd.etcdctl("put", f"{ETCD_PREFIX}/config", '{"Network": "198.18.0.0/29"}')
    wait_for(lambda: "keeping the current config" in log(), 20, "the broken running config to be refused")
    assert "Network 198.18.0.0/29 is too small" in log()
    assert h1.subnet_file.read_text() == before
    assert bare_lab.ping(h1, bare_lab.hosts[1].flannel_address() or "", count=2)
    assert "198.18.0.0/16" in sh("nft", "list", "table", "ip", "overlayd", netns=h1.netns)


def test_backend_mtu_is_the_underlays_as_in_flanneld(bare_lab: Lab) -> None:
    """Backend.MTU 1400 (a smaller underlay path): flannel.1 and FLANNEL_MTU get 1350, as on a
    flanneld node with the same config, whatever the interface's own MTU (1500 here)."""
    config = '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "MTU": 1400}}'
    bare_lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", config)
    bare_lab.wait_converged(timeout=30)
    for host in bare_lab.hosts:
        link = json.loads(sh("ip", "-j", "link", "show", "flannel.1", netns=host.netns))[0]
        assert (link["mtu"], host.subnet_env()["FLANNEL_MTU"]) == (1350, "1350")
    assert bare_lab.ping(bare_lab.hosts[0], bare_lab.hosts[1].flannel_address() or "", count=2)


def test_an_unusable_state_dir_stops_the_agent_with_exit_2_naming_the_option(bare_lab: Lab) -> None:
    """Restarting cannot fix it: one line naming --state-dir and the fix, exit code 2 (which the
    unit does not restart), no traceback and no claim of a lease left in place."""
    bare_lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", VXLAN_NETWORK)
    blocker = bare_lab.dir / "not-a-directory"
    blocker.write_text("")
    h3 = bare_lab.add_host(agent_args=[f"--state-dir={blocker}/state"])
    _, status = os.waitpid(h3.pid, 0)
    h3.pid = 0
    log = h3.log_file.read_text()
    assert os.waitstatus_to_exitcode(status) == 2, log
    assert f"--state-dir {blocker}/state: cannot keep state there (Not a directory" in log
    assert "give a writable directory" in log and "Traceback" not in log
    assert "stopped (no lease was held)" in log and "lease are left in place" not in log


def test_a_second_agent_for_the_same_state_dir_refuses_to_run(bare_lab: Lab) -> None:
    """Two agents on one host would take turns rewriting the firewall and subnet.env."""
    bare_lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", VXLAN_NETWORK)
    bare_lab.wait_converged(timeout=30)
    h1 = bare_lab.hosts[0]
    command = [*bare_lab.agent_command(h1), "--metrics-address=off", "--ip-masq=false"]
    second = subprocess.run(["ip", "netns", "exec", h1.netns, *command],
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"another overlayd (pid {h1.pid}) runs with --state-dir" in second.stdout + second.stderr
    assert h1.subnet_env()["FLANNEL_IPMASQ"] == "true"  # still the first agent's (--ip-masq)


def test_an_unwritable_subnet_file_is_reported_once_and_in_readyz(bare_lab: Lab) -> None:
    """The data path is programmed, but containers cannot start: not ready, with the option named;
    one log line, not a traceback per pass."""
    bare_lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", VXLAN_NETWORK)
    blocker = bare_lab.dir / "not-a-directory"
    blocker.write_text("")
    h3 = bare_lab.add_host(agent_args=[f"--subnet-file={blocker}/subnet.env", "--reconcile-interval=0.3"])
    wait_for(lambda: "could not write subnet.env" in h3.log_file.read_text(), 20, "the subnet.env error")
    wait_for(lambda: bare_lab.http_get(h3, "/readyz")[0] == 503, 10, "/readyz to answer 503")
    time.sleep(2)  # several passes at 0.3 s
    log = h3.log_file.read_text()
    assert log.count("could not write subnet.env") == 1 and "Traceback" not in log, log
    assert f"--subnet-file {blocker}/subnet.env: cannot write it (File exists: {blocker})" in log
    status, body = bare_lab.http_get(h3, "/readyz")
    assert status == 503 and "--subnet-file" in body, body
    assert bare_lab.ping(h3, bare_lab.hosts[0].flannel_address() or "", count=2), "the data path is up"


def test_a_deleted_config_is_kept_and_the_hint_restores_the_one_in_use(bare_lab: Lab) -> None:
    """Following an example Network instead would renumber every node it does not contain."""
    config = '{"Network": "198.18.0.0/16", "SubnetLen": 25, "Backend": {"Type": "vxlan"}}'
    etcd = bare_lab.etcd()
    etcd.etcdctl("put", f"{ETCD_PREFIX}/config", config)
    bare_lab.wait_converged(timeout=30)
    h1 = bare_lab.hosts[0]
    before = h1.subnet_file.read_text()
    etcd.etcdctl("del", f"{ETCD_PREFIX}/config")
    hint = f"restore the one in use with: etcdctl put {ETCD_PREFIX}/config '{config}'"
    wait_for(lambda: hint in h1.log_file.read_text(), 20, "the restore hint")
    assert "overlayd_network_config_ok 0.0" in fetch(bare_lab, "/metrics")[1], "monitoring must see it"
    assert h1.subnet_file.read_text() == before
    assert bare_lab.ping(h1, bare_lab.hosts[1].flannel_address() or "", count=2)
    etcd.etcdctl("put", f"{ETCD_PREFIX}/config", config)  # as the hint says
    wait_for(lambda: "overlayd_network_config_ok 1.0" in fetch(bare_lab, "/metrics")[1], 20, "ok again")
    assert h1.subnet_file.read_text() == before


def test_a_lease_that_runs_out_during_an_etcd_outage_is_not_ready_until_etcd_answers(bare_lab: Lab) -> None:
    """Before that point the data path is served from memory (ready); after it, peers have dropped
    our routes with our key, so "ready" would mislead."""
    bare_lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", VXLAN_NETWORK)
    h3 = bare_lab.add_host(agent_args=["--subnet-lease-ttl=6", "--reconcile-interval=0.5"])
    bare_lab.wait_converged(timeout=30)
    bare_lab.stop_etcd()
    try:
        wait_for(lambda: "expired while etcd was unreachable" in bare_lab.http_get(h3, "/readyz")[1], 30,
                 "/readyz to say the lease ran out")  # fmt: skip
        assert bare_lab.http_get(h3, "/readyz")[0] == 503
    finally:
        bare_lab.start_etcd()
    wait_for(lambda: bare_lab.http_get(h3, "/readyz")[0] == 200, 30, "ready again once etcd answers")
    bare_lab.wait_converged(timeout=30)


OLD_NETWORK = '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan"}}'
NEW_NETWORK = '{"Network": "198.19.0.0/16", "Backend": {"Type": "vxlan"}}'


def own_subnets(lab: Lab) -> dict[str, str]:
    return {host.name: host.subnet_env()["FLANNEL_SUBNET"] for host in lab.hosts}


def lease_keys(lab: Lab) -> set[str]:
    out = lab.etcd().etcdctl("get", "--prefix", "--keys-only", f"{ETCD_PREFIX}/subnets/")
    return {line.rsplit("/", 1)[1] for line in out.split()}


def mismatched(host: LabHost) -> bool:
    return Lab.metric(host, "overlayd_config_mismatch") == 1


@pytest.fixture
def lab_with_containers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Three hosts on 198.18.0.0/16, one container each; leases renewed every few seconds."""
    with running_lab(
        tmp_path_factory, hosts=3, agent_args=("--subnet-lease-ttl=12",), network_config=OLD_NETWORK
    ) as lab:
        lab.add_containers(1)
        yield lab


def test_a_network_change_renumbers_no_running_node_and_a_revert_moves_nothing(
    lab_with_containers: Lab,
) -> None:
    """A careless Network change used to renumber every node at once (cross-host container traffic
    lost), and putting the old config back renumbered them again. Now each agent keeps its lease
    and data path and says so; the revert clears that, and no node ever moved."""
    lab, etcd = lab_with_containers, lab_with_containers.etcd()
    subnets, keys = own_subnets(lab), lease_keys(lab)
    marks = {host.name: log_mark(host) for host in lab.hosts}
    etcd.etcdctl("put", f"{ETCD_PREFIX}/config", NEW_NETWORK)
    for host in lab.hosts:
        wait_for(lambda host=host: mismatched(host), 30, f"{host.name} to report the config mismatch")
    renewed = {host.name: Lab.metric(host, "overlayd_lease_renewals_total") for host in lab.hosts}
    for host in lab.hosts:  # the lease held off is still ours: renewed, not left to expire
        wait_for(lambda host=host: Lab.metric(host, "overlayd_lease_renewals_total") > renewed[host.name],
                 30, f"{host.name} to renew its lease while holding")  # fmt: skip
    for host in lab.hosts:
        log = log_since(host, marks[host.name])
        subnet = subnets[host.name].replace(".1/", ".0/")
        assert log.count("ERROR") == 1, log
        assert (
            "network config at /coreos.com/network/config changed from Network 198.18.0.0/16 to Network "
            f"198.19.0.0/16, which does not hand out this node's subnet {subnet} (nor 2 other live lease(s)"
        ) in log
        assert f"put it back (etcdctl put {ETCD_PREFIX}/config '{OLD_NETWORK}')" in log
        assert "systemctl restart overlayd" in log and "re-create its containers" in log
        assert "lost" not in log and "deleted lease" not in log and "our subnet changed" not in log
        status, body = lab.http_get(host, "/readyz")
        assert status == 200, body
        assert body.startswith(
            "ready; config mismatch: etcd's Network 198.19.0.0/16 does not hand out this node's subnet "
            f"{subnet} and 2 other lease(s); running Network 198.18.0.0/16 until fixed"
        ), body
        assert Lab.metric(host, "overlayd_config_mismatch_leases") == 3
        agent = status_json(lab, host)["agent"]
        assert agent["config_mismatch"] is True and agent["config_mismatch_leases"] == 3 and agent["ready"]
        assert "198.18.0.0/16" in sh("nft", "list", "table", "ip", "overlayd", netns=host.netns)
    text = sh(sys.executable, "-m", "overlayd", "status", f"--etcd-endpoints={lab.etcd_endpoint}",
              f"--subnet-file={lab.hosts[0].subnet_file}", netns=lab.hosts[0].netns)  # fmt: skip
    assert "CONFIG MISMATCH: the network config in etcd does not hand out 3 live lease(s)" in text, text
    assert own_subnets(lab) == subnets and lease_keys(lab) == keys
    table, ok = lab.container_ping_table()
    assert ok, f"containers must keep talking across hosts while the config is held:\n{table}"
    assert lab.ping_table()[1]

    marks = {host.name: log_mark(host) for host in lab.hosts}
    etcd.etcdctl("put", f"{ETCD_PREFIX}/config", OLD_NETWORK)
    for host in lab.hosts:
        wait_for(lambda host=host: not mismatched(host), 30, f"{host.name} to clear the mismatch")
        log = log_since(host, marks[host.name])
        subnet = subnets[host.name].replace(".1/", ".0/")
        assert (
            "is back to the config in force (Network 198.18.0.0/16): config mismatch cleared, this node "
            f"keeps subnet {subnet}, nothing moved"
        ) in log, log
        assert lab.http_get(host, "/readyz") == (200, "ready\n")
    assert own_subnets(lab) == subnets and lease_keys(lab) == keys
    table, ok = lab.container_ping_table()
    assert ok, table


def test_old_new_old_with_restarts_brings_a_node_back_to_its_first_subnet(lab_with_containers: Lab) -> None:
    """A restart under the new config renumbers the node, as documented; after the revert, a
    restart takes back the subnet it had first (remembered in its state directory), so its
    containers' addresses route again."""
    lab, etcd = lab_with_containers, lab_with_containers.etcd()
    h1 = lab.hosts[0]
    first = h1.subnet_env()["FLANNEL_SUBNET"]
    etcd.etcdctl("put", f"{ETCD_PREFIX}/config", NEW_NETWORK)
    wait_for(lambda: mismatched(h1), 30, "h1 to hold the old config")
    mark = log_mark(h1)
    lab.stop_agent(h1)
    lab.start_agent(h1)
    wait_for(lambda: h1.subnet_env().get("FLANNEL_SUBNET", "").startswith("198.19."), 30, "h1 renumbered")
    log = log_since(h1, mark)
    assert f"which carries our PublicIP {h1.ip}: Network 198.19.0.0/16" in log, log
    assert f"re-create its containers that have addresses of {first.replace('.1/', '.0/')}" in log

    etcd.etcdctl("put", f"{ETCD_PREFIX}/config", OLD_NETWORK)
    wait_for(lambda: mismatched(h1), 30, "h1, now on the new Network, to hold it against the revert")
    assert h1.subnet_env()["FLANNEL_SUBNET"].startswith("198.19."), "a revert moves no running node"
    lab.stop_agent(h1)
    lab.start_agent(h1)
    wait_for(lambda: h1.subnet_env().get("FLANNEL_SUBNET") == first, 30, f"h1 back on {first}")
    lab.wait_converged(timeout=30)
    for host in lab.hosts[1:]:
        wait_for(lambda host=host: not mismatched(host), 30, f"{host.name} to clear the mismatch")
    table, ok = lab.container_ping_table()
    assert ok, f"h1's container keeps its address and reaches the others again:\n{table}"
