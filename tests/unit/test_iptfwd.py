"""The iptables forward rules' pure parts: reading ``iptables -S`` and the restore scripts."""

from __future__ import annotations

from ipaddress import IPv4Network

from overlayd.netfilter.iptfwd import FilterListing, in_place, parse_listing, removal_script, restore_script

NET = IPv4Network("198.18.0.0/16")
DOCKER = """-P INPUT ACCEPT
-P FORWARD DROP
-P OUTPUT ACCEPT
-N DOCKER
-N DOCKER-USER
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A DOCKER-USER -j RETURN
"""
OURS = """-N OVERLAYD-FWD
-A FORWARD -j OVERLAYD-FWD
-A OVERLAYD-FWD -s 198.18.0.0/16 -j ACCEPT
-A OVERLAYD-FWD -d 198.18.0.0/16 -j ACCEPT
"""


def test_docker_only_listing_has_nothing_of_ours() -> None:
    listing = parse_listing("# Warning: iptables-legacy tables present\n" + DOCKER)
    assert listing == FilterListing(jumps=(), chain_rules=None)
    assert not in_place(listing, NET)
    assert removal_script(listing) is None


def test_our_rules_beside_dockers_are_in_place_wherever_the_jump_is() -> None:
    assert in_place(parse_listing(DOCKER + OURS), NET)
    moved = OURS.replace("-A FORWARD -j OVERLAYD-FWD\n", "") + "-A FORWARD -j OVERLAYD-FWD\n"
    assert in_place(parse_listing(DOCKER + moved), NET)


def test_a_changed_network_an_extra_rule_or_a_second_jump_is_not_in_place() -> None:
    assert not in_place(parse_listing(DOCKER + OURS), IPv4Network("198.19.0.0/16"))
    extra = OURS + "-A OVERLAYD-FWD -s 192.0.2.0/24 -j ACCEPT\n"
    assert not in_place(parse_listing(extra), NET)
    assert not in_place(parse_listing(OURS + "-A FORWARD -i eth0 -j OVERLAYD-FWD\n"), NET)
    assert not in_place(parse_listing(OURS.replace("-N OVERLAYD-FWD\n", "")), NET)


def test_restore_script_replaces_every_jump_and_the_chain_in_one_transaction() -> None:
    listing = parse_listing(OURS + "-A FORWARD -i eth0 -j OVERLAYD-FWD\n")
    assert restore_script(listing, NET).splitlines() == [
        "*filter",
        ":OVERLAYD-FWD - [0:0]",
        "-D FORWARD -j OVERLAYD-FWD",
        "-D FORWARD -i eth0 -j OVERLAYD-FWD",
        "-I FORWARD 1 -j OVERLAYD-FWD",
        "-A OVERLAYD-FWD -s 198.18.0.0/16 -j ACCEPT",
        "-A OVERLAYD-FWD -d 198.18.0.0/16 -j ACCEPT",
        "COMMIT",
    ]


def test_removal_script_deletes_only_ours() -> None:
    script = removal_script(parse_listing(DOCKER + OURS))
    assert script is not None
    assert script.splitlines() == ["*filter", "-D FORWARD -j OVERLAYD-FWD", "-F OVERLAYD-FWD",
                                   "-X OVERLAYD-FWD", "COMMIT"]
    chain_only = removal_script(parse_listing("-N OVERLAYD-FWD\n"))
    assert chain_only is not None and "-D FORWARD" not in chain_only
