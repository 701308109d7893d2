"""Firewall rules: the rendered script (pure) and the live table in a namespace (root)."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest
from nsutil import in_netns

from overlayd.netfilter.firewall import (
    Firewall,
    FirewallSpec,
    IngressGuard,
    NftFeatures,
    _listed_peers,
    _normalise,
    render_ruleset,
    render_table,
)

SPEC = FirewallSpec(
    network=IPv4Network("198.18.0.0/16"),
    own_subnet=IPv4Network("198.18.5.0/24"),
    ip_masq=True,
    forward_rules=True,
)


def test_render_has_flannel_masquerade_and_forward_rules() -> None:
    script = render_ruleset(SPEC)
    assert script.startswith("table ip overlayd\ndelete table ip overlayd\ntable ip overlayd {\n")
    rules = [line.strip() for line in script.splitlines() if line.startswith("\t\t")]
    assert rules == [
        "type nat hook postrouting priority srcnat; policy accept;",
        "meta mark & 0x00004000 == 0x00004000 return",  # kube-proxy's: it masquerades those itself
        "ip saddr 198.18.0.0/16 ip daddr 198.18.0.0/16 return",
        "ip saddr 198.18.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
        "ip saddr != 198.18.0.0/16 ip daddr 198.18.5.0/24 return",
        "ip saddr != 198.18.0.0/16 ip daddr 198.18.0.0/16 masquerade fully-random",
        "type filter hook forward priority filter; policy accept;",
        "ip saddr 198.18.0.0/16 accept",
        "ip daddr 198.18.0.0/16 accept",
    ]


def test_render_leaves_out_disabled_parts() -> None:
    no_masq = FirewallSpec(SPEC.network, SPEC.own_subnet, ip_masq=False, forward_rules=True)
    assert "postrouting" not in render_ruleset(no_masq)
    assert render_table(FirewallSpec(SPEC.network, SPEC.own_subnet, False, False), "t") == (
        "table ip t {\n}\n"
    )
    assert "masquerade fully-random" not in render_table(SPEC, features=NftFeatures(fully_random=False))


def nft_list(table: str = "overlayd") -> str:
    return subprocess.run(["nft", "list", "table", "ip", table], capture_output=True,
                          text=True, check=False).stdout


def ensure_steps() -> dict[str, object]:
    firewall = Firewall()
    steps: dict[str, object] = {"first": firewall.ensure(SPEC), "second": firewall.ensure(SPEC)}
    steps["listing"] = nft_list()
    subprocess.run("nft add rule ip overlayd forward ip saddr 198.19.0.0/16 drop", shell=True,
                   check=True)
    steps["after extra rule"] = firewall.ensure(SPEC)
    steps["repaired"] = nft_list() == steps["listing"]
    subprocess.run("nft delete table ip overlayd", shell=True, check=True)
    steps["after delete"] = firewall.ensure(SPEC)
    steps["restarted agent"] = Firewall().ensure(SPEC)  # adopts the identical live table
    no_masq = FirewallSpec(SPEC.network, SPEC.own_subnet, ip_masq=False, forward_rules=True)
    steps["masq off"] = firewall.ensure(no_masq)
    steps["masq off listing"] = nft_list()
    firewall.remove()
    firewall.remove()  # idempotent
    steps["removed listing"] = nft_list()
    return steps


@pytest.mark.root
def test_ensure_is_idempotent_and_repairs(netns: str) -> None:
    steps = in_netns(netns, ensure_steps)
    assert (steps["first"], steps["second"]) == (True, False)
    assert "ip saddr != 198.18.0.0/16 ip daddr 198.18.5.0/24 return" in steps["listing"]
    assert "masquerade fully-random" in steps["listing"]
    assert steps["after extra rule"] is True
    assert steps["repaired"] is True
    assert steps["after delete"] is True
    assert steps["restarted agent"] is False
    assert steps["masq off"] is True
    assert "postrouting" not in steps["masq off listing"]
    assert "ip daddr 198.18.0.0/16 accept" in steps["masq off listing"]
    assert steps["removed listing"] == ""


def recording_logs() -> list[str]:
    """Messages logged by the firewall modules from now on in this (forked) process."""
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    for name in ("overlayd.netfilter.firewall", "overlayd.netfilter.iptfwd"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    return records


def iptables_s() -> str:
    return subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout


def forward_rules_steps() -> dict[str, object]:
    subprocess.run("iptables -P FORWARD DROP && iptables -N DOCKER-USER && iptables -A FORWARD -j DOCKER-USER"
                   " && iptables -A DOCKER-USER -j RETURN", shell=True, check=True)
    logs = recording_logs()
    firewall = Firewall()
    steps: dict[str, object] = {"first": firewall.ensure(SPEC), "listing": iptables_s()}
    steps["second"] = firewall.ensure(SPEC)
    steps["logs after start"] = list(logs)
    for name, damage in (("jump deleted", "iptables -D FORWARD -j OVERLAYD-FWD"),
                         ("FORWARD flushed", "iptables -F FORWARD"),
                         ("chain changed", "iptables -A OVERLAYD-FWD -s 192.0.2.0/24 -j ACCEPT")):
        del logs[:]
        subprocess.run(damage, shell=True, check=True)
        steps[name] = (firewall.ensure(SPEC), firewall.ensure(SPEC), list(logs), iptables_s())
    firewall.remove()
    steps["removed"] = iptables_s()
    firewall.remove()  # idempotent
    return steps


@pytest.mark.root
def test_forward_rules_accept_the_network_in_iptables_and_are_repaired_once_logged(netns: str) -> None:
    steps = in_netns(netns, forward_rules_steps)
    assert (steps["first"], steps["second"]) == (True, False)
    listing = str(steps["listing"])
    ours = [line for line in listing.splitlines() if "OVERLAYD-FWD" in line]
    assert ours == ["-N OVERLAYD-FWD", "-A FORWARD -j OVERLAYD-FWD",
                    "-A OVERLAYD-FWD -s 198.18.0.0/16 -j ACCEPT",
                    "-A OVERLAYD-FWD -d 198.18.0.0/16 -j ACCEPT"], "scoped to the Network, nothing else"
    assert "-P FORWARD DROP" in listing and "-A FORWARD -j DOCKER-USER" in listing
    started = steps["logs after start"]
    assert sum("accepting forwarded traffic from and to 198.18.0.0/16" in m for m in started) == 1  # type: ignore[union-attr]
    assert not any("drop by policy" in m for m in started), "the iptables DROP is handled, not warned about"  # type: ignore[union-attr]
    for name in ("jump deleted", "FORWARD flushed", "chain changed"):
        repaired, again, logs, after = steps[name]  # type: ignore[misc]
        assert (repaired, again) == (True, False), name
        assert sum("were missing or changed" in m for m in logs) == 1, (name, logs)
        assert [line for line in after.splitlines() if "OVERLAYD-FWD" in line] == ours, name
    assert "OVERLAYD-FWD" not in str(steps["removed"])
    assert "-A DOCKER-USER -j RETURN" in str(steps["removed"]), "nothing of anyone else's removed"


def forward_rules_off_steps() -> dict[str, object]:
    off = replace(SPEC, forward_rules=False)
    steps: dict[str, object] = {"off": Firewall().ensure(off), "listing": iptables_s()}
    Firewall().ensure(SPEC)
    logs = recording_logs()
    firewall = Firewall()
    steps["turned off"] = (firewall.ensure(off), iptables_s(), list(logs))
    steps["again"] = firewall.ensure(off)
    return steps


@pytest.mark.root
def test_forward_rules_off_writes_none_and_removes_an_earlier_runs(netns: str) -> None:
    steps = in_netns(netns, forward_rules_off_steps)
    assert "OVERLAYD-FWD" not in str(steps["listing"])
    changed, listing, logs = steps["turned off"]  # type: ignore[misc]
    assert changed is True and "OVERLAYD-FWD" not in listing
    assert any("forward rules are off" in m for m in logs)
    assert steps["again"] is False


def without_iptables_steps(bin_dir: str) -> dict[str, object]:
    import os

    subprocess.run("iptables -P FORWARD DROP", shell=True, check=True)
    os.symlink(shutil.which("nft"), f"{bin_dir}/nft")  # type: ignore[arg-type]
    os.environ["PATH"] = bin_dir
    logs = recording_logs()
    firewall = Firewall()
    steps: dict[str, object] = {"first": firewall.ensure(SPEC), "second": firewall.ensure(SPEC)}
    steps["logs"] = list(logs)
    steps["table"] = nft_list()
    return steps


@pytest.mark.root
def test_without_iptables_the_node_is_told_once_and_the_table_still_written(netns: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    steps = in_netns(netns, without_iptables_steps, str(tmp_path))
    logs = steps["logs"]
    assert sum("the iptables binary is not on PATH" in m for m in logs) == 1, logs  # type: ignore[union-attr]
    assert any("ip filter FORWARD" in m and "drop by policy" in m for m in logs), logs  # type: ignore[union-attr]
    assert "ip daddr 198.18.0.0/16 accept" in str(steps["table"])


def warnings_with_foreign_nft_drop() -> list[str]:
    subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
        "table inet hostfw {\n chain guard {\n type filter hook forward priority 0; policy drop;\n }\n}\n"))
    records = recording_logs()
    Firewall().ensure(SPEC)
    return records


@pytest.mark.root
def test_warns_about_a_foreign_nftables_forward_drop(netns: str) -> None:
    messages = in_netns(netns, warnings_with_foreign_nft_drop)
    assert any("inet hostfw guard" in message for message in messages), messages


GUARD = IngressGuard("udp", 4789, "vxlan")  # what the vxlan backend names, on port 4789
ALLOW = FirewallSpec(
    SPEC.network, SPEC.own_subnet, ip_masq=False, forward_rules=False, ingress_allowlist=True,
    ingress=GUARD,
    ingress_sources=frozenset(IPv4Address(f"192.0.2.{n}") for n in range(20, 3, -1)),
)  # fmt: skip


def test_render_allowlist_set_and_drop_rule() -> None:
    table = render_table(ALLOW)
    assert "\t\telements = { 192.0.2.4, 192.0.2.5, 192.0.2.6," in table  # sorted as addresses
    assert "udp dport 4789 ip saddr != @vxlan_peers counter drop" in table
    # Recording a dropped source is a rule of its own: an update on a full set ends its rule.
    assert "\t\tudp dport 4789 ip saddr != @vxlan_peers update @vxlan_dropped { ip saddr }\n" in table
    assert "flags dynamic,timeout" in table and "size 256" in table
    assert "elements" not in render_table(replace(ALLOW, ingress_sources=frozenset()))
    assert "vxlan_peers" not in render_table(SPEC)


def kernel_listing(dropped: str, size_line: str = "size 256") -> str:
    """ALLOW's table as ``nft list table`` prints it once the kernel recorded ``dropped``."""
    table = render_table(ALLOW).replace("counter drop", "counter packets 3 bytes 150 drop")
    table = table.replace("\t\tsize 256\n", f"\t\t{size_line}\n")
    return table.replace("\t\ttimeout 10m\n", f"\t\ttimeout 10m\n\t\telements = {{ {dropped} }}\n")


@pytest.mark.parametrize(
    "listing",
    [
        kernel_listing("192.0.2.200 expires 9m59s992ms"),
        # many elements span lines; newer nft adds the element count as a comment
        kernel_listing("192.0.2.200 expires 9m59s992ms, 192.0.2.201 expires 3s,\n\t\t\t     "
                       "192.0.2.202 expires 1m"),
        kernel_listing("192.0.2.200 expires 9m59s992ms", size_line="size 256\t# count 1"),
    ],
)
def test_recorded_sources_and_nft_comments_do_not_count_as_drift(listing: str) -> None:
    assert _normalise(listing) == _normalise(render_table(ALLOW))
    assert _listed_peers(_normalise(listing)) == ALLOW.ingress_sources


def test_a_listing_in_an_unknown_format_differs_instead_of_failing() -> None:
    """Whatever nft prints, the comparison must not raise: a pass that fails here would not
    write subnet.env. A difference only rewrites the table."""
    odd = render_table(ALLOW).replace("set vxlan_dropped {", "meter vxlan_dropped {")
    odd = odd.replace("\t\ttimeout 10m\n", "\t\ttimeout 10m\n\t\telements = { 192.0.2.200 expires 9m }\n")
    assert _normalise(odd) != _normalise(render_table(ALLOW))


def allowlist_steps() -> dict[str, object]:
    firewall = Firewall()
    steps: dict[str, object] = {"first": firewall.ensure(ALLOW), "second": firewall.ensure(ALLOW)}
    # Packets counted by the drop rule must not make the table look different.
    counted = render_ruleset(ALLOW).replace("counter drop", "counter packets 7 bytes 700 drop")
    subprocess.run(["nft", "-f", "-"], input=counted, text=True, check=True)
    steps["after counters"] = Firewall().ensure(ALLOW)
    newcomer = IPv4Address("192.0.2.77")
    firewall.allow_peer(newcomer)
    with_newcomer = replace(ALLOW, ingress_sources=(ALLOW.ingress_sources or frozenset()) | {newcomer})
    steps["fast add then full pass"] = firewall.ensure(with_newcomer)
    firewall.disallow_peer(newcomer)
    firewall.disallow_peer(newcomer)  # already gone: fine
    steps["fast delete then full pass"] = firewall.ensure(ALLOW)
    steps["unknown peers keep the live set"] = Firewall().ensure(replace(ALLOW, ingress_sources=None))
    one_left = frozenset({IPv4Address("192.0.2.5")})
    steps["peer gone"] = firewall.ensure(replace(ALLOW, ingress_sources=one_left))
    steps["set"] = subprocess.run(["nft", "list", "set", "ip", "overlayd", "vxlan_peers"],
                                  capture_output=True, text=True, check=True).stdout
    steps["off"] = firewall.ensure(replace(ALLOW, ingress_allowlist=False))
    steps["off listing"] = nft_list()
    return steps


@pytest.mark.root
def test_allowlist_is_idempotent_with_elements_and_fast_path(netns: str) -> None:
    steps = in_netns(netns, allowlist_steps)
    assert (steps["first"], steps["second"]) == (True, False)
    assert steps["after counters"] is False
    assert steps["fast add then full pass"] is False
    assert steps["fast delete then full pass"] is False
    assert steps["unknown peers keep the live set"] is False
    assert steps["peer gone"] is True
    assert "192.0.2.5" in str(steps["set"]) and "192.0.2.6" not in str(steps["set"])
    assert steps["off"] is True
    assert "vxlan_peers" not in str(steps["off listing"])


def send_vxlan_from(*sources: str) -> None:
    """One UDP packet to ALLOW's VXLAN port from each source address (put on lo here)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for source in sources:
        subprocess.run(["ip", "addr", "replace", f"{source}/32", "dev", "lo"], check=True)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((source, 0))
            sock.sendto(b"not a peer", (source, GUARD.port))


def dropped_sources_steps() -> dict[str, object]:
    firewall = Firewall()
    steps: dict[str, object] = {"before a table": firewall.dropped_sources()}
    firewall.ensure(ALLOW)
    send_vxlan_from("192.0.2.200", "192.0.2.201", "192.0.2.5")  # two strangers and a peer
    steps["dropped"] = firewall.dropped_sources()
    steps["listing"] = nft_list()
    steps["ensure again"] = firewall.ensure(ALLOW)
    steps["a restart's ensure"] = Firewall().ensure(ALLOW)
    steps["peers kept from the listing"] = RecordingNft().ensure(replace(ALLOW, ingress_sources=None))
    steps["set"] = subprocess.run(["nft", "list", "set", "ip", "overlayd", "vxlan_peers"],
                                  capture_output=True, text=True, check=True).stdout
    return steps


@pytest.mark.root
def test_dropped_sources_are_recorded_and_do_not_count_as_drift(netns: str) -> None:
    """The kernel names what the allowlist dropped; those elements are not ours to compare."""
    steps = in_netns(netns, dropped_sources_steps)
    assert steps["before a table"] == frozenset()
    assert steps["dropped"] == frozenset({IPv4Address("192.0.2.200"), IPv4Address("192.0.2.201")})
    assert "192.0.2.200 expires" in str(steps["listing"]), "the listing shows them, with their timeout"
    assert steps["ensure again"] is False and steps["a restart's ensure"] is False
    assert steps["peers kept from the listing"] is False
    assert "192.0.2.20" in str(steps["set"]) and "192.0.2.200" not in str(steps["set"])


class RecordingNft(Firewall):
    """The real nft, its calls recorded; optionally refusing ``fully-random`` as an old nft or
    kernel does."""

    def __init__(self, refuse_fully_random: bool = False, refuse_dynamic_sets: bool = False) -> None:
        super().__init__()
        self.refused = {"fully-random": refuse_fully_random, "flags dynamic": refuse_dynamic_sets}
        self.calls: list[list[str]] = []

    def _run_nft(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        for text, refused in self.refused.items():
            if refused and stdin and text in stdin:
                return subprocess.CompletedProcess(args, 1, "", f"Error: syntax error, unexpected {text}")
        return Firewall._run_nft(args, stdin)

    def probes(self) -> int:
        return sum("--check" in args for args in self.calls)


def refusing_nft_steps(firewall: RecordingNft, spec: FirewallSpec) -> dict[str, object]:
    """Two ensures by an nft that refuses a feature: what each did, and the probes so far."""
    steps: dict[str, object] = {"first": firewall.ensure(spec), "listing": nft_list()}
    steps["probes"] = firewall.probes()
    steps["second"] = firewall.ensure(spec)
    steps["probes after"] = firewall.probes()
    steps["dropped"] = firewall.dropped_sources()
    return steps


def without_fully_random_steps() -> dict[str, object]:
    return refusing_nft_steps(RecordingNft(refuse_fully_random=True), SPEC)


@pytest.mark.root
def test_without_fully_random_the_table_is_written_with_plain_masquerade(netns: str) -> None:
    steps = in_netns(netns, without_fully_random_steps)
    assert steps["first"] is True
    assert "ip saddr 198.18.0.0/16 ip daddr != 224.0.0.0/4 masquerade" in str(steps["listing"])
    assert "fully-random" not in str(steps["listing"])
    assert steps["probes"] == 1, "probed once, after nft refused the table"
    assert (steps["second"], steps["probes after"]) == (False, 1)


def without_dynamic_sets_steps() -> dict[str, object]:
    return refusing_nft_steps(RecordingNft(refuse_dynamic_sets=True), ALLOW)


@pytest.mark.root
def test_without_dynamic_sets_the_allowlist_still_drops_without_recording(netns: str) -> None:
    """An nft or kernel that refuses the record must not cost the node its masquerading,
    forward rules or allowlist: the table is written without it."""
    steps = in_netns(netns, without_dynamic_sets_steps)
    assert steps["first"] is True
    listing = str(steps["listing"])
    assert "udp dport 4789 ip saddr != @vxlan_peers counter" in listing and "vxlan_dropped" not in listing
    assert steps["probes"] == 2, "fully-random probed (accepted), then the dynamic set (refused)"
    assert (steps["second"], steps["probes after"]) == (False, 2)
    assert steps["dropped"] == frozenset()


def first_ensure_calls() -> list[list[str]]:
    firewall = RecordingNft()
    firewall.ensure(replace(ALLOW, ingress_sources=None))
    return firewall.calls


@pytest.mark.root
def test_a_start_with_unknown_peers_lists_the_table_once_and_does_not_probe(netns: str) -> None:
    calls = in_netns(netns, first_ensure_calls)
    assert not any("--check" in args for args in calls)
    assert sum(args[:2] == ["list", "table"] for args in calls) == 2  # before, and after writing


def unknown_peers_without_a_live_set_steps() -> dict[str, object]:
    firewall = Firewall()
    steps: dict[str, object] = {"first": firewall.ensure(replace(ALLOW, ingress_sources=None))}
    steps["before the listing"] = nft_list()
    steps["listed"] = firewall.ensure(ALLOW)
    steps["after the listing"] = nft_list()
    return steps


@pytest.mark.root
def test_no_allowlist_until_the_peers_are_known_when_none_is_live(netns: str) -> None:
    """A first start (or flanneld's host taken over): no set to keep, and an empty one would
    drop every peer's VXLAN until the first listing, so none is made until then."""
    steps = in_netns(netns, unknown_peers_without_a_live_set_steps)
    assert steps["first"] is True
    assert "vxlan_peers" not in str(steps["before the listing"])
    assert "drop" not in str(steps["before the listing"])
    assert steps["listed"] is True
    assert "192.0.2.20" in str(steps["after the listing"]) and "drop" in str(steps["after the listing"])


def cleanup(netns: str) -> subprocess.CompletedProcess[str]:
    command = ["ip", "netns", "exec", netns, sys.executable, "-m", "overlayd", "cleanup"]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


@pytest.mark.root
def test_cleanup_removes_the_table_for_flanneld_and_is_idempotent(netns: str) -> None:
    """Handing a node (back) to flanneld: nobody would keep a left-behind allowlist current."""
    in_netns(netns, lambda: Firewall().ensure(ALLOW))
    assert "vxlan_peers" in in_netns(netns, nft_list)
    done = cleanup(netns)
    assert done.returncode == 0, done.stderr
    assert "removed nftables table ip overlayd" in done.stdout
    assert in_netns(netns, nft_list) == ""
    assert cleanup(netns).returncode == 0
