"""The backend seam as VXLAN fills it: the lease it publishes, the MTU it leaves, the peers it
wants, what the allowlist guards, its config section; and that another backend plugs in."""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from overlayd.backend.api import Backend, HostFacts, UnderlayIngress
from overlayd.backend.desired import DirectRoute, Fdb, Neigh, Route
from overlayd.backend.select import BACKENDS, CONFIG_PARSERS, DEFAULT_TYPE, backend_for
from overlayd.backend.udp.config import UdpConfig
from overlayd.backend.vxlan.backend import Vxlan
from overlayd.backend.vxlan.lease import vxlan_lease_attrs
from overlayd.base.headerfield import HeaderField
from overlayd.netfilter.firewall import FirewallSpec, IngressGuard, render_table
from overlayd.subnet.config import BackendParsers, ConfigError, ConfigFields, parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs, LeaseError, decode_attrs, encode_attrs

WHERE = "network config at /coreos.com/network/config"
SUPPORTED = ", ".join(BACKENDS)
MAC = "0a:58:c6:12:05:01"


def config(backend: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    """A vxlan network config: the section ``backend`` with Type vxlan unless it names another."""
    raw = {"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", **(backend or {})}}
    return parse_network_config(json.dumps(raw), where=WHERE, backends=CONFIG_PARSERS)


def lease(subnet: str, public_ip: str, vni: int = 1, mac: str = MAC, backend_type: str = "vxlan") -> Lease:
    attrs = LeaseAttrs(IPv4Address(public_ip), backend_type, vni, mac)
    return Lease(IPv4Network(subnet), attrs)


OWN = lease("198.18.5.0/24", "192.0.2.5", mac="0a:58:c6:12:05:05")


def test_every_backend_provides_the_whole_seam() -> None:
    members = {name for name in dir(Backend) if not name.startswith("_")} | set(Backend.__annotations__)
    for name, backend in BACKENDS.items():
        missing = sorted(member for member in members if not hasattr(backend, member))
        assert not missing, f"backend {name} lacks {missing}"
        assert backend.type == name


def test_vxlan_lease_data_is_flannels_json_and_reads_back() -> None:
    attrs = vxlan_lease_attrs(config({"VNI": 70000}).backend, IPv4Address("192.0.2.5"), MAC)
    text = encode_attrs(attrs)
    assert text == (
        '{"PublicIP":"192.0.2.5","PublicIPv6":null,"BackendType":"vxlan",'
        f'"BackendData":{{"VNI":4464,"VtepMAC":"{MAC}"}}}}'
    )  # VNI 70000 as flanneld's 16-bit lease field carries it
    assert decode_attrs("198.18.5.0-24", text) == attrs


def test_a_peers_bad_vxlan_backend_data_is_named() -> None:
    raw = '{"PublicIP":"192.0.2.9","BackendType":"vxlan","BackendData":{"VNI":"1","VtepMAC":"x"}}'
    with pytest.raises(
        LeaseError, match=r"lease 198\.18\.9\.0-24: vxlan BackendData needs an integer VNI"
    ) as caught:
        decode_attrs("198.18.9.0-24", raw)
    assert caught.value.reason == "bad_backend_data"


def test_another_backends_data_is_kept_whole() -> None:
    raw = '{"PublicIP":"192.0.2.9","PublicIPv6":null,"BackendType":"host-gw","BackendData":{"x":1}}'
    attrs = decode_attrs("198.18.9.0-24", raw)
    assert (attrs.backend_type, attrs.vni, attrs.extra_backend_data) == ("host-gw", None, '{"x":1}')
    assert encode_attrs(attrs) == raw


@pytest.mark.parametrize(
    ("section", "underlay_mtu", "expected"),
    [({}, 1500, 1450), ({"MTU": 9000}, 1500, 8950), ({"MTU": 0}, 9000, 8950)],
)
def test_container_mtu_is_the_underlays_less_vxlans_overhead(
    section: dict[str, object], underlay_mtu: int, expected: int
) -> None:
    assert Vxlan().container_mtu(config(section), underlay_mtu) == expected


def test_wants_peer_another_hosts_vxlan_lease_on_our_vni() -> None:
    vxlan, net = Vxlan(), config({"VNI": 70000})
    assert vxlan.wants_peer(lease("198.18.7.0/24", "192.0.2.7", vni=4464), OWN, net)  # as leases carry it
    assert not vxlan.wants_peer(OWN, OWN, net)  # our own
    assert not vxlan.wants_peer(lease("198.18.8.0/24", "192.0.2.5", vni=4464), OWN, net)  # our PublicIP
    assert not vxlan.wants_peer(lease("198.18.7.0/24", "192.0.2.7", vni=2), OWN, net)
    assert not vxlan.wants_peer(
        lease("198.18.7.0/24", "192.0.2.7", vni=4464, backend_type="host-gw"), OWN, net
    )
    assert not vxlan.wants_peer(lease("198.18.7.0/24", "192.0.2.7", vni=4464, mac=""), OWN, net)


def test_peer_entries_over_vxlan_or_direct() -> None:
    peer = lease("198.18.7.0/24", "192.0.2.7")
    gateway = IPv4Address("198.18.7.0")
    assert Vxlan().peer_entries(peer) == (
        Neigh(gateway, MAC),
        Fdb(MAC, IPv4Address("192.0.2.7")),
        Route(IPv4Network("198.18.7.0/24"), gateway),
    )
    assert Vxlan().peer_entries(peer, direct=True) == (
        DirectRoute(IPv4Network("198.18.7.0/24"), IPv4Address("192.0.2.7")),
    )


def test_underlay_ingress_is_udp_to_the_vxlan_port_with_the_sets_operators_know() -> None:
    vni_1 = HeaderField(96, 24, 1)  # the VNI: another network's VXLAN on the same port is not ours to judge
    assert Vxlan().underlay_ingress(config()) == UnderlayIngress("udp", 8472, "vxlan", vni_1)
    assert Vxlan().underlay_ingress(config({"VNI": 7})).network_field == HeaderField(96, 24, 7)
    assert Vxlan().underlay_ingress(config({"Port": 4789})).port == 4789
    assert Vxlan().device_names(config({"VNI": 7})) == ("flannel.7",)


def test_the_firewall_guards_what_the_backend_names_as_before() -> None:
    ingress = Vxlan().underlay_ingress(config({"Port": 4789}))
    peers = frozenset({IPv4Address("192.0.2.7")})
    net, own = IPv4Network("198.18.0.0/16"), IPv4Network("198.18.5.0/24")
    new = FirewallSpec(
        net, own, False, False, True, IngressGuard(ingress.protocol, ingress.port, ingress.name), peers
    )
    old = FirewallSpec(net, own, False, False, True, IngressGuard("udp", 4789, "vxlan"), peers)
    assert new == old and render_table(new) == render_table(old)
    assert "udp dport 4789 ip saddr != @vxlan_peers update @vxlan_dropped { ip saddr }" in render_table(new)
    assert (new.guarded, new.ingress_sources) == (IngressGuard("udp", 4789, "vxlan"), peers)


def test_the_vxlan_backend_refuses_another_backends_config() -> None:
    other = parse_network_config(
        '{"Network": "198.18.0.0/16", "Backend": {"Type": "other"}}', backends=_WITH_OTHER
    )
    with pytest.raises(TypeError, match="a other network config was handed to the vxlan backend"):
        Vxlan().container_mtu(other, 1500)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"Type": "bogus"}, f"{WHERE}: Backend.Type 'bogus' is invalid; overlayd supports {SUPPORTED}"),
        ({"VNI": -1}, f"{WHERE}: Backend.VNI -1 is invalid; use a whole number between 0 and 16777215"),
        (
            {"Port": "8472"},
            f"{WHERE}: Backend.Port '8472' is invalid; use a whole number between 0 and 65535",
        ),
        ({"MTU": 600}, f"{WHERE}: Backend.MTU 600 is invalid; use a whole number between 626 and 65535"),
        ({"GBP": "yes"}, f"{WHERE}: Backend.GBP 'yes' is invalid; use true or false"),
    ],
)
def test_config_errors_are_worded_as_before(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(section)
    assert str(caught.value) == message


def test_backend_for_refuses_an_unknown_type_as_the_config_does() -> None:
    assert isinstance(backend_for("VXLAN"), Vxlan) and DEFAULT_TYPE == "udp"  # flanneld's default
    with pytest.raises(ConfigError) as caught:
        backend_for("bogus", WHERE)
    assert str(caught.value) == f"{WHERE}: Backend.Type 'bogus' is invalid; overlayd supports {SUPPORTED}"


@dataclass(frozen=True)
class OtherConfig:
    type: str = "other"
    colour: str = "blue"

    @property
    def restart_key(self) -> tuple[object, ...]:
        return (self.type,)


def _parse_other(fields: ConfigFields) -> OtherConfig:
    colour = fields.value.get("colour", "blue")
    if colour not in ("blue", "green"):
        raise fields.fail("Colour", colour, "use blue or green")
    return OtherConfig(colour=str(colour))


_WITH_OTHER = BackendParsers({**CONFIG_PARSERS.parsers, "other": _parse_other}, CONFIG_PARSERS.default_type)


def test_a_second_backend_plugs_in_without_touching_the_network_config() -> None:
    parsed = parse_network_config(
        '{"Network": "198.18.0.0/16", "Backend": {"Type": "Other", "Colour": "green"}}', backends=_WITH_OTHER
    )
    assert parsed.backend == OtherConfig(colour="green")
    assert parse_network_config('{"Network": "198.18.0.0/16"}', backends=_WITH_OTHER).backend == UdpConfig()
    with pytest.raises(ConfigError, match=r"Backend.Type 'bogus' is invalid; overlayd supports .*, other$"):
        config = {"Network": "198.18.0.0/16", "Backend": {"Type": "bogus"}}
        parse_network_config(json.dumps(config), backends=_WITH_OTHER)
    with pytest.raises(ConfigError, match=r"Backend.Colour 'red' is invalid; use blue or green"):
        parse_network_config(
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "other", "Colour": "red"}}',
            backends=_WITH_OTHER,
        )


def test_direct_routing_reaches_the_peers_on_our_segment() -> None:
    address = IPv4Address("192.0.2.5")
    host = HostFacts(address, "eth0", address, 1500, (IPv4Network("192.0.2.0/25"),), Path("/nonexistent"))
    assert Vxlan().reached_directly(config(), host) is None
    direct = Vxlan().reached_directly(config({"DirectRouting": True}), host)
    assert direct is not None
    assert direct(lease("198.18.7.0/24", "192.0.2.7")) and not direct(lease("198.18.7.0/24", "192.0.2.200"))


def test_vxlan_settings_say_themselves_in_the_words_the_logs_used() -> None:
    """The SIGUSR1 state line and the restart warning read the backend's own words, unchanged."""
    from overlayd.backend.vxlan.config import VxlanConfig

    old, new = VxlanConfig(vni=1), VxlanConfig(vni=2, port=4789, direct_routing=True)
    assert old.summary == "VNI 1 port 8472"
    assert new.summary == "VNI 2 port 4789, DirectRouting"
    assert new.restart_reason(old) == "VNI 1 -> 2"
