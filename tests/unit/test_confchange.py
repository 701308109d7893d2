"""A running agent's verdict on a changed network config: apply, restart, hold, or clear a hold."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.confchange import (
    ConfigAction,
    clear_message,
    decide,
    describe,
    hold_message,
    hold_reason,
    leases_outside,
    name_leases,
)
from overlayd.subnet.config import NetworkConfig, parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs

WHERE = "network config at /coreos.com/network/config"
RESTORE = "etcdctl put /coreos.com/network/config '{\"Network\": \"198.18.0.0/16\"}'"


def config(**keys: object) -> NetworkConfig:
    """A vxlan network config (Backend.Type vxlan unless the section names another)."""
    backend = {"Type": "vxlan", **keys.pop("Backend", {})}  # type: ignore[dict-item]
    return parse_network_config(json.dumps({**keys, "Backend": backend}), backends=CONFIG_PARSERS)


OLD = config(Network="198.18.0.0/16")
MOVED = config(Network="198.19.0.0/16")  # holds none of OLD's subnets
HALF = config(Network="198.18.0.0/17")  # holds OLD's lower half only


def lease(cidr: str, host: int = 20) -> Lease:
    mac = f"02:00:00:00:00:{host:02x}"
    return Lease(IPv4Network(cidr), LeaseAttrs(IPv4Address(f"192.0.2.{host}"), "vxlan", vni=1, vtep_mac=mac))


OWN = lease("198.18.5.0/24", 11)
LOW_PEER = lease("198.18.7.0/24", 12)
HIGH_PEER = lease("198.18.200.0/24", 13)


def test_the_same_config_is_unchanged_and_an_unrelated_change_applies() -> None:
    assert decide(OLD, OLD, OWN, [OWN, LOW_PEER]).action is ConfigAction.UNCHANGED
    ported = config(Network="198.18.0.0/16", Backend={"Type": "vxlan", "Port": 4789})
    verdict = decide(OLD, ported, OWN, [OWN, LOW_PEER, HIGH_PEER])
    assert verdict.action is ConfigAction.APPLY and verdict.outside_count == 0 and not verdict.cleared


def test_a_wider_network_holding_every_lease_applies() -> None:
    assert decide(OLD, config(Network="198.16.0.0/14"), OWN, [HIGH_PEER]).action is ConfigAction.APPLY


def test_a_network_change_leaving_our_lease_outside_holds_instead_of_renumbering() -> None:
    verdict = decide(OLD, MOVED, OWN, [OWN, LOW_PEER, HIGH_PEER])
    assert verdict.action is ConfigAction.HOLD
    assert verdict.own_outside and verdict.own_subnet == OWN.subnet
    assert verdict.others_outside == (LOW_PEER, HIGH_PEER)  # our own lease is not counted twice
    assert verdict.outside_count == 3 and verdict.announce


def test_a_peer_left_outside_holds_even_when_our_lease_fits() -> None:
    """Applying it would skip that peer here while it still serves containers at its address."""
    verdict = decide(OLD, HALF, OWN, [LOW_PEER, HIGH_PEER])
    assert verdict.action is ConfigAction.HOLD and not verdict.own_outside
    assert verdict.others_outside == (HIGH_PEER,)


def test_subnetlen_and_subnet_range_changes_count_as_well() -> None:
    assert decide(OLD, config(Network="198.18.0.0/16", SubnetLen=25), OWN, []).own_outside
    narrowed = config(Network="198.18.0.0/16", SubnetMax="198.18.100.0")
    assert decide(OLD, narrowed, OWN, [HIGH_PEER]).others_outside == (HIGH_PEER,)


def test_leases_already_outside_the_config_in_force_do_not_hold_a_change() -> None:
    """A stray lease every agent already skips is not harmed by the change."""
    stray = lease("10.0.0.0/24", 30)
    assert decide(OLD, config(Network="198.18.0.0/16", Backend={"Port": 4789}), OWN, [stray]).action is (
        ConfigAction.APPLY
    )


def test_a_hold_is_announced_once_per_stored_config() -> None:
    first = decide(OLD, MOVED, OWN, [LOW_PEER])
    again = decide(OLD, MOVED, OWN, [LOW_PEER], held=first)
    assert first.announce and not again.announce and again.action is ConfigAction.HOLD
    other = decide(OLD, config(Network="198.20.0.0/16"), OWN, [LOW_PEER], held=again)
    assert other.announce


def test_putting_the_old_config_back_clears_the_hold_and_nothing_moves() -> None:
    held = decide(OLD, MOVED, OWN, [LOW_PEER])
    reverted = decide(OLD, OLD, OWN, [LOW_PEER], held=held)
    assert reverted.action is ConfigAction.UNCHANGED and reverted.cleared
    assert reverted.own_subnet == OWN.subnet
    assert clear_message(reverted, WHERE) == (
        f"{WHERE} is back to the config in force (Network 198.18.0.0/16): config mismatch cleared, "
        "this node keeps subnet 198.18.5.0/24, nothing moved"
    )
    assert not decide(OLD, OLD, OWN, [LOW_PEER]).cleared, "no hold, nothing to clear"


def test_once_the_nodes_outside_have_moved_the_held_config_applies() -> None:
    held = decide(OLD, HALF, OWN, [LOW_PEER, HIGH_PEER])
    moved = lease("198.18.90.0/24", 13)  # HIGH_PEER's node restarted and took a subnet of HALF
    verdict = decide(OLD, HALF, OWN, [LOW_PEER, moved], held=held)
    assert verdict.action is ConfigAction.APPLY and verdict.cleared
    assert "config mismatch cleared, taking it in force" in clear_message(verdict, WHERE)


def test_a_vni_change_restarts_only_when_no_lease_is_left_outside() -> None:
    """A restart renumbers every node whose subnet the new config does not hold, so a new VNI
    together with such a Network change holds like the Network change alone."""
    new_vni = config(Network="198.18.0.0/16", Backend={"Type": "vxlan", "VNI": 2})
    assert decide(OLD, new_vni, OWN, [LOW_PEER]).action is ConfigAction.RESTART
    both = config(Network="198.19.0.0/16", Backend={"Type": "vxlan", "VNI": 2})
    assert decide(OLD, both, OWN, [LOW_PEER]).action is ConfigAction.HOLD


def test_the_hold_message_names_both_networks_our_subnet_and_both_fixes() -> None:
    message = hold_message(decide(OLD, MOVED, OWN, [LOW_PEER]), WHERE, RESTORE)
    assert message.startswith(
        f"{WHERE} changed from Network 198.18.0.0/16 to Network 198.19.0.0/16, which does not hand "
        "out this node's subnet 198.18.5.0/24 (nor 1 other live lease(s): 198.18.7.0/24 (192.0.2.12));"
    )
    assert f"put it back ({RESTORE})" in message
    assert "systemctl restart overlayd" in message and "re-create its containers" in message


def test_the_hold_message_when_only_peers_fall_outside_names_them() -> None:
    message = hold_message(decide(OLD, HALF, OWN, [LOW_PEER, HIGH_PEER]), WHERE, RESTORE)
    assert "still hands out this node's subnet 198.18.5.0/24 but not 1 other node(s)' live lease(s): " \
        "198.18.200.0/24 (192.0.2.13)" in message
    assert "renumber those nodes by restarting their agents" in message
    assert "this node then takes the new config by itself" in message


def test_hold_reason_is_one_line_for_readyz() -> None:
    reason = hold_reason(decide(OLD, MOVED, OWN, [LOW_PEER]))
    assert reason == (
        "config mismatch: etcd's Network 198.19.0.0/16 does not hand out this node's subnet "
        "198.18.5.0/24 and 1 other lease(s); running Network 198.18.0.0/16 until fixed (put the old "
        "config back, or restart the agent to renumber this node)"
    )
    assert "\n" not in reason


def test_describe_shows_the_keys_that_differ() -> None:
    longer = config(Network="198.18.0.0/16", SubnetLen=25)
    assert describe(longer, OLD) == "Network 198.18.0.0/16 SubnetLen 25"
    assert describe(OLD, OLD) == "Network 198.18.0.0/16"
    narrowed = config(Network="198.18.0.0/16", SubnetMin="198.18.10.0", SubnetMax="198.18.100.0")
    assert describe(narrowed, OLD) == "Network 198.18.0.0/16 SubnetMin 198.18.10.0 SubnetMax 198.18.100.0"


def test_name_leases_names_a_few_and_counts_the_rest() -> None:
    leases = [lease(f"198.18.{n}.0/24", n) for n in range(1, 6)]
    assert name_leases(leases) == (
        "198.18.1.0/24 (192.0.2.1), 198.18.2.0/24 (192.0.2.2), 198.18.3.0/24 (192.0.2.3) and 2 more"
    )


def test_leases_outside_without_a_current_config_counts_every_lease() -> None:
    stray = lease("10.0.0.0/24", 30)
    assert leases_outside(None, OLD, [stray, LOW_PEER]) == [stray]
    assert leases_outside(OLD, MOVED, [HIGH_PEER, stray, LOW_PEER]) == [LOW_PEER, HIGH_PEER]
