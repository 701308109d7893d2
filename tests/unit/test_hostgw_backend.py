"""host-gw behind the seam, pure parts: flanneld's lease bytes, the peers it routes, the peer off
the segment named with the fix, NAT refused; the refused backends; a backend change switched in
place rather than restarted for."""

from __future__ import annotations

import json
import logging
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from overlayd.backend.api import BackendError, HostFacts
from overlayd.backend.desired import DesiredEntries, DirectRoute, Route
from overlayd.backend.hostgw.backend import HostGw
from overlayd.backend.hostgw.config import HostGwConfig
from overlayd.backend.monitor import DeviceChange, is_echo
from overlayd.backend.select import BACKENDS, CONFIG_PARSERS, REFUSED, backend_for
from overlayd.subnet.confchange import ConfigAction, decide
from overlayd.subnet.config import ConfigError, NetworkConfig, parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs, decode_attrs, encode_attrs

# What flanneld v0.20.2's host-gw writes: LeaseAttrs{PublicIP, BackendType: "host-gw"} marshalled
# by encoding/json, PublicIPv6 a nil pointer (null), BackendData an empty RawMessage (omitempty).
FLANNELD_VALUE = '{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"host-gw"}'
SEGMENT = IPv4Network("192.0.2.0/24")


def config(backend_type: str = "host-gw", **backend: object) -> NetworkConfig:
    raw = {"Network": "198.18.0.0/16", "Backend": {"Type": backend_type, **backend}}
    return parse_network_config(json.dumps(raw), backends=CONFIG_PARSERS)


def host(public_ip: str = "192.0.2.11", external_ip: str = "192.0.2.11") -> HostFacts:
    addresses = IPv4Address(public_ip), "eth0", IPv4Address(external_ip)
    return HostFacts(*addresses, 1500, (SEGMENT,), Path("/nonexistent"))


def lease(subnet: str, public_ip: str, backend_type: str = "host-gw") -> Lease:
    return Lease(IPv4Network(subnet), LeaseAttrs(IPv4Address(public_ip), backend_type))


OWN = lease("198.18.11.0/24", "192.0.2.11")


def test_the_lease_is_flanneld_s_byte_for_byte_both_ways() -> None:
    attrs = HostGw().lease_data(config(), host())
    assert encode_attrs(attrs) == FLANNELD_VALUE
    assert decode_attrs("198.18.11.0-24", FLANNELD_VALUE) == attrs


def test_behind_a_nat_it_refuses_naming_both_addresses_and_the_fix() -> None:
    with pytest.raises(BackendError) as caught:
        HostGw().lease_data(config(), host(public_ip="192.0.2.99"))
    message = str(caught.value)
    assert "PublicIP 192.0.2.99 is not eth0's address 192.0.2.11" in message
    assert "Drop --public-ip" in message and '"vxlan"' in message


def test_the_section_has_no_keys_and_containers_get_the_whole_mtu() -> None:
    parsed = config(VNI=7, DirectRouting=True)  # flanneld's host-gw reads no other key either
    assert parsed.backend == HostGwConfig()
    backend = backend_for("Host-GW")
    assert isinstance(backend, HostGw) and backend.config_fields(parsed.backend) == {"Type": "host-gw"}
    assert backend.container_mtu(parsed, 9000) == 9000
    assert backend.underlay_ingress(parsed) is None and backend.device_names(parsed) == ()


def test_it_routes_other_hosts_host_gw_leases_on_its_segment(caplog: pytest.LogCaptureFixture) -> None:
    backend, net = HostGw(), config()
    backend.reached_directly(net, host())
    assert backend.wants_peer(lease("198.18.12.0/24", "192.0.2.12"), OWN, net)
    assert not backend.wants_peer(OWN, OWN, net)
    assert not backend.wants_peer(lease("198.18.13.0/24", "192.0.2.11"), OWN, net)  # our PublicIP
    assert not backend.wants_peer(lease("198.18.12.0/24", "192.0.2.12", "vxlan"), OWN, net)
    assert not caplog.records
    assert backend.peer_entries(lease("198.18.12.0/24", "192.0.2.12")) == (
        DirectRoute(IPv4Network("198.18.12.0/24"), IPv4Address("192.0.2.12")),
    )


def test_a_peer_off_the_segment_is_named_once_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    backend, net = HostGw(), config()
    backend.reached_directly(net, host())
    far = lease("198.18.14.0/24", "198.19.0.5")
    with caplog.at_level(logging.WARNING):
        assert not backend.wants_peer(far, OWN, net)
        assert not backend.wants_peer(far, OWN, net)
    [record] = caplog.records
    message = record.getMessage()
    for part in ("198.18.14.0/24", "198.18.14.0-24", "198.19.0.5", "192.0.2.0/24 on eth0",
                 '"Type": "vxlan"', '"DirectRouting": true'):  # fmt: skip
        assert part in message, part
    moved = lease("198.18.14.0/24", "198.19.0.6")  # a new PublicIP is news: named again
    with caplog.at_level(logging.WARNING):
        assert not backend.wants_peer(moved, OWN, net)
    assert len(caplog.records) == 2


@pytest.mark.parametrize("backend_type", sorted(REFUSED))
def test_each_refused_backend_says_why_and_what_to_use(backend_type: str) -> None:
    for make in (lambda: config(backend_type), lambda: backend_for(backend_type, "network config")):
        with pytest.raises(ConfigError) as caught:
            make()
        message = str(caught.value)
        assert f"Backend.Type '{backend_type}' " in message and "use " in message
        assert "is invalid" not in message


def test_the_refusals_name_their_reasons() -> None:
    assert not REFUSED.keys() & BACKENDS.keys(), "a backend overlayd now has is still refused"
    assert "no ipip module" in REFUSED["ipip"] and "Unknown device type" in REFUSED["ipip"]
    assert "wireguard" in BACKENDS or "not yet" in REFUSED["wireguard"]  # until its backend comes
    assert "AWS" in REFUSED["aws-vpc"] and "Google" in REFUSED["gce"]


def test_a_backend_change_is_switched_in_place_and_a_new_vni_restarts() -> None:
    vxlan, hostgw = config("vxlan"), config()
    own = lease("198.18.5.0/24", "192.0.2.5")
    assert decide(vxlan, hostgw, own, []).action is ConfigAction.SWITCH
    assert decide(hostgw, vxlan, own, []).action is ConfigAction.SWITCH
    assert decide(vxlan, config("vxlan", VNI=2), own, []).action is ConfigAction.RESTART


def test_the_monitor_reports_a_deleted_route_of_ours_on_the_underlay() -> None:
    """The kernel reports host-gw's route on eth0 as any gateway route: a wanted direct route
    deleted is drift; a route nobody wants (the default route changing) is not ours to watch."""
    desired = DesiredEntries(direct=lambda lease: True)
    desired.set_peer("198.18.12.0-24", lease("198.18.12.0/24", "192.0.2.12"))
    ours = Route(IPv4Network("198.18.12.0/24"), IPv4Address("192.0.2.12"))
    default = Route(IPv4Network("0.0.0.0/0"), IPv4Address("192.0.2.1"))
    assert not is_echo(desired, DeviceChange("RTM_DELROUTE", ours, added=False))
    assert is_echo(desired, DeviceChange("RTM_NEWROUTE", ours, added=True))
    assert is_echo(desired, DeviceChange("RTM_DELROUTE", default, added=False))
