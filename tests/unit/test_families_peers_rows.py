"""The families benchmark's pure parts: its fake peers' leases and network configs per family,
which entries it waits for, and the rows it prints beside the IPv4-only baseline."""

from __future__ import annotations

import json
from ipaddress import IPv6Network

import pytest

from overlayd.backend.select import CONFIG_PARSERS, install
from overlayd.bench.families import family_rows
from overlayd.bench.kernel import peer_tokens
from overlayd.bench.peers import MAX_PEER_INDEX, PREFIX, Family, network_config, peer_kv, peer_subnet6
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import decode_lease, is_ipv6_only


@pytest.fixture(autouse=True)
def _codecs() -> None:
    install()  # the vxlan codec writes BackendData and BackendV6Data, as the command line has it


def test_an_ipv6_only_peer_is_written_in_flanneld_s_form() -> None:
    key, value = peer_kv(3, family=Family.IPV6_ONLY)
    assert key == PREFIX + "0.0.0.0-0&2001:db8:1000:3::-64"
    assert json.loads(value) == {
        "PublicIP": "0.0.0.0", "PublicIPv6": "2001:db8::103", "BackendType": "vxlan",
        "BackendV6Data": {"VNI": 1, "VtepMAC": "0e:b6:00:00:00:03"},
    }  # fmt: skip
    lease = decode_lease(key.removeprefix(PREFIX), value)
    assert is_ipv6_only(lease) and lease.ipv6_subnet == peer_subnet6(3)


def test_each_family_s_peer_has_the_halves_of_its_family() -> None:
    ipv4, dual = (decode_lease(k.removeprefix(PREFIX), v)
                  for k, v in (peer_kv(3), peer_kv(3, family=Family.DUAL)))  # fmt: skip
    assert ipv4.ipv6_subnet is None and ipv4.attrs.vtep_mac_v6 is None
    assert dual.subnet == ipv4.subnet and dual.ipv6_subnet == peer_subnet6(3)
    assert dual.attrs.vtep_mac == ipv4.attrs.vtep_mac and dual.attrs.vtep_mac_v6 == "0e:b6:00:00:00:03"


def test_an_ipv6_only_peer_has_no_ipv4_mac_or_public_ip_to_change() -> None:
    with pytest.raises(ValueError, match="peer 3: an IPv6-only lease has no IPv4 MAC or PublicIP"):
        peer_kv(3, mac="0e:bf:00:00:00:03", family=Family.IPV6_ONLY)


def test_the_ipv6_only_config_leaves_no_ipv4_pool_and_keeps_the_agent_above_its_peers() -> None:
    config = parse_network_config(network_config(Family.IPV6_ONLY), backends=CONFIG_PARSERS)
    assert config.ipv4 is None and config.ipv6 is not None
    assert config.ipv6.network == IPv6Network("2001:db8:1000::/48")
    assert config.ipv6.subnet_min > peer_subnet6(MAX_PEER_INDEX).network_address
    dual = parse_network_config(network_config(Family.DUAL), backends=CONFIG_PARSERS)
    assert dual.ipv4 is not None and dual.ipv6 == config.ipv6


def test_the_entries_waited_for_are_the_family_s_halves_the_ipv6_one_timed() -> None:
    assert peer_tokens(5, Family.IPV4) == (5,)
    assert peer_tokens(5, Family.DUAL) == (5, -5)
    assert peer_tokens(5, Family.IPV6_ONLY) == (-5,)


def measured(cold: float, events: list[float], missed: int = 0) -> dict:
    return {"cold": [cold, cold], "events": events, "missed": missed}


def test_ipv6_only_rows_stand_beside_the_dual_stack_ones_against_ipv4() -> None:
    rows = family_rows(100, {
        Family.IPV4: measured(0.2, [0.001] * 10),
        Family.DUAL: measured(0.22, [0.0015] * 10),
        Family.IPV6_ONLY: measured(0.3, [0.002] * 10),
    })  # fmt: skip
    table = {row.figure: row for row in rows}
    v6only = table["cold start, 100 peers, all entries: IPv6-only vs IPv4-only, median"]
    assert (v6only.value, v6only.baseline, v6only.ratio, v6only.goal) == (
        "300 ms", "200 ms", "1.50x", "within 10 % of IPv4"
    )  # fmt: skip
    for p in (50, 95):
        row = table[f"event latency, 100 peers: IPv6-only peer's entries vs IPv4's, p{p}"]
        assert (row.value, row.baseline, row.ratio) == ("2.00 ms", "1.00 ms", "2.00x")
        assert table[f"event latency, 100 peers: IPv6 half's entries vs IPv4's, p{p}"].ratio == "1.50x"
    assert "cold start, 100 peers, all entries: dual-stack (both families) vs IPv4-only, median" in table
    assert len(rows) == 6, "no missed-events row when none was missed"


def test_events_missed_in_any_family_are_counted_for_each() -> None:
    rows = family_rows(100, {
        Family.IPV4: measured(0.2, [0.001]), Family.DUAL: measured(0.2, [0.001]),
        Family.IPV6_ONLY: measured(0.2, [0.001], missed=2),
    })  # fmt: skip
    assert rows[-1].figure == "events not seen within 10 s (IPv4-only / dual-stack / IPv6-only)"
    assert rows[-1].value == "0 / 0 / 2"
