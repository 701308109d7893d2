"""status: metrics parsing and both renderings, from hand-made inputs (no agent, no etcd)."""

import json
import math

from overlayd.ops.devicestatus import DeviceView
from overlayd.ops.status import (
    AgentView,
    HostStatus,
    LeaseView,
    own_subnet,
    parse_metrics,
    redact_endpoint,
    render_text,
    to_json,
)

METRICS = """\
# TYPE overlayd_build_info gauge
overlayd_build_info{python="3.11.2",version="0.1.0"} 1.0
# TYPE overlayd_lease_info gauge
overlayd_lease_info{network="198.18.0.0/16",public_ip="192.0.2.11",subnet="198.18.7.0/24",\
vtep_mac="aa:bb:cc:dd:ee:01"} 1.0
# TYPE overlayd_lease_expiry_timestamp_seconds gauge
overlayd_lease_expiry_timestamp_seconds 1.7e+09
# TYPE overlayd_peers_known gauge
overlayd_peers_known 3.0
# TYPE overlayd_peers_programmed gauge
overlayd_peers_programmed 2.0
# TYPE overlayd_last_reconcile_timestamp_seconds gauge
overlayd_last_reconcile_timestamp_seconds 1.6999e+09
# TYPE overlayd_repairs counter
overlayd_repairs_total{action="add",kind="route"} 2.0
overlayd_repairs_total{action="remove",kind="route"} 1.0
overlayd_repairs_total{action="add",kind="fdb"} 4.0
# TYPE overlayd_etcd_errors counter
overlayd_etcd_errors_total{operation="renew"} 1.0
overlayd_etcd_errors_total{operation="list_leases"} 2.0
# TYPE overlayd_etcd_watch_up gauge
overlayd_etcd_watch_up 0.0
# TYPE overlayd_ready gauge
overlayd_ready 1.0
# TYPE overlayd_vxlan_ingress_dropped_sources gauge
overlayd_vxlan_ingress_dropped_sources 2.0
"""


def test_parse_metrics_picks_status_figures() -> None:
    agent = parse_metrics(METRICS)
    assert agent.version == "0.1.0"
    assert agent.subnet == "198.18.7.0/24"
    assert agent.lease_expiry == 1.7e9
    assert (agent.peers_known, agent.peers_programmed) == (3.0, 2.0)
    assert agent.repairs == {"route": 3.0, "fdb": 4.0}
    assert agent.etcd_errors == 3.0
    assert agent.ready is True
    assert agent.watch_up is False
    assert agent.vxlan_dropped_sources == 2.0


def test_parse_metrics_of_an_agent_without_them_leaves_unknowns() -> None:
    agent = parse_metrics("# TYPE other gauge\nother 1.0\n")
    assert agent == AgentView()


def sample_status(**changes: object) -> HostStatus:
    fields: dict[str, object] = dict(
        subnet_file="/run/flannel/subnet.env",
        subnet_env={"FLANNEL_NETWORK": "198.18.0.0/16", "FLANNEL_SUBNET": "198.18.7.1/24"},
        device=DeviceView("flannel.1", 1450, "aa:bb:cc:dd:ee:01", ("198.18.9.0/24",), 1, 1),
        metrics_address="127.0.0.1:9464",
        agent=parse_metrics(METRICS),
        etcd_endpoints=("http://192.0.2.2:2379",),
        own_lease=LeaseView("198.18.7.0/24", "192.0.2.11", "aa:bb:cc:dd:ee:01", 86000.0),
        leases=(
            LeaseView("198.18.7.0/24", "192.0.2.11", "aa:bb:cc:dd:ee:01", 86000.0, None),
            LeaseView("198.18.9.0/24", "192.0.2.12", "aa:bb:cc:dd:ee:02", 3599.0, True),
            LeaseView("198.18.11.0/24", "192.0.2.13", None, math.inf, False),
        ),
    )
    fields.update(changes)
    return HostStatus(**fields)  # type: ignore[arg-type]


def test_text_shows_each_source_and_the_cluster_table() -> None:
    text = render_text(sample_status(), now=1.7e9 - 3600)
    assert "flannel.1 mtu 1450 mac aa:bb:cc:dd:ee:01: 1 routes, 1 neighbours, 1 fdb entries" in text
    assert "lease expires in 1h00m" in text
    assert "peers 2 programmed / 3 known" in text
    assert "repairs: fdb 4, route 3" in text
    assert "etcd watch DOWN" in text
    assert "VXLAN DROPPED from 2 address(es) without a lease" in text
    quiet = parse_metrics(METRICS.replace("overlayd_vxlan_ingress_dropped_sources 2.0",
                                          "overlayd_vxlan_ingress_dropped_sources 0.0"))  # fmt: skip
    assert "VXLAN DROPPED" not in render_text(sample_status(agent=quiet), now=1.7e9)
    assert "cluster (3 leases in etcd)" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("  198.18.")}
    assert rows["198.18.7.0/24"].endswith("this host")
    assert "59m59s" in rows["198.18.9.0/24"] and rows["198.18.9.0/24"].endswith("yes")
    assert "never (reservation)" in rows["198.18.11.0/24"] and rows["198.18.11.0/24"].endswith("MISSING")


def test_an_agent_without_a_lease_has_no_expiry_to_show() -> None:
    """The expiry gauge is 0 until a lease is held; not "expires in -498832h"."""
    starting = parse_metrics(METRICS.replace("overlayd_lease_expiry_timestamp_seconds 1.7e+09",
                                             "overlayd_lease_expiry_timestamp_seconds 0.0"))  # fmt: skip
    text = render_text(sample_status(agent=starting), now=1.7e9)
    assert "no lease yet" in text and "lease expires in" not in text


def test_agent_down_is_what_a_scripted_check_needs() -> None:
    """``overlayd status`` exits 3 for these: the agent unreachable, or not ready."""
    assert sample_status().agent_down is None
    not_ready = parse_metrics(METRICS.replace("overlayd_ready 1.0", "overlayd_ready 0.0"))
    assert sample_status(agent=not_ready).agent_down == "the agent is not ready (see /readyz)"
    gone = "agent unreachable at http://127.0.0.1:9464/metrics (Connection refused)"
    assert sample_status(agent=None, agent_error=gone).agent_down == gone
    off = "metrics server is off (--metrics-address=off); no agent figures"
    assert sample_status(agent=None, agent_error=off, metrics_address=None).agent_down is None  # no telling


def test_text_names_each_unreadable_source() -> None:
    status = HostStatus(
        subnet_file="/x/subnet.env",
        subnet_env_error="/x/subnet.env: No such file or directory",
        device_error="no flannel.1 device",
        agent_error="agent unreachable at http://127.0.0.1:9464/metrics",
        etcd_error="etcd http://192.0.2.2:2379: unreachable",
    )
    text = render_text(status, now=0)
    for reason in ("No such file", "no flannel.1 device", "agent unreachable", "etcd http://192.0.2.2:2379"):
        assert reason in text
    assert status.nothing_read
    assert not sample_status().nothing_read


def test_json_is_serialisable_and_marks_reservations() -> None:
    data = json.loads(json.dumps(to_json(sample_status())))
    assert data["device"]["routes"] == ["198.18.9.0/24"]
    assert data["agent"]["repairs"] == {"route": 3.0, "fdb": 4.0}
    reservation = data["leases"][2]
    assert reservation["ttl"] is None and reservation["reservation"] is True
    assert data["leases"][1]["programmed"] is True and data["leases"][1]["reservation"] is False


def test_own_subnet_and_redaction() -> None:
    assert str(own_subnet({"FLANNEL_SUBNET": "198.18.7.1/24"})) == "198.18.7.0/24"
    assert own_subnet({"FLANNEL_SUBNET": "garbage"}) is None
    assert own_subnet(None) is None
    assert redact_endpoint("https://root:s3cret@192.0.2.2:2379") == "https://192.0.2.2:2379"
    assert redact_endpoint("http://192.0.2.2:2379") == "http://192.0.2.2:2379"


def test_a_config_mismatch_shows_on_the_agent_line_with_the_count_and_the_fixes() -> None:
    held = parse_metrics(METRICS + "# TYPE overlayd_config_mismatch gauge\noverlayd_config_mismatch 1.0\n"
                         "# TYPE overlayd_config_mismatch_leases gauge\n"
                         "overlayd_config_mismatch_leases 3.0\n")
    assert (held.config_mismatch, held.config_mismatch_leases, held.ready) == (True, 3.0, True)
    text = render_text(sample_status(agent=held), now=1.7e9)
    agent_line = next(line for line in text.splitlines() if line.startswith("  agent"))
    assert agent_line.startswith("  agent       127.0.0.1:9464 (overlayd 0.1.0): ready;")
    assert "CONFIG MISMATCH: the network config in etcd does not hand out 3 live lease(s)" in agent_line
    assert "put it back, or restart the agents of the nodes outside to renumber them" in agent_line
    cleared = parse_metrics(METRICS + "# TYPE overlayd_config_mismatch gauge\noverlayd_config_mismatch 0.0\n")
    assert cleared.config_mismatch is False
    assert "MISMATCH" not in render_text(sample_status(agent=cleared), now=1.7e9)
