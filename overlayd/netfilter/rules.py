"""The overlay's nftables table as text: rendered from a ``FirewallSpec``, and a live listing
normalised so that the two compare (pure: ``firewall`` runs nft and keeps the table).

Semantics are flannel's (``FLANNEL-POSTRTG`` / ``FLANNEL-FWD``): with IP masquerading, traffic
inside the overlay Network keeps its source address, traffic leaving it is masqueraded (never
towards multicast), and traffic entering our subnet from outside is left alone; with forward
rules, forwarding to and from the Network is accepted. A dual-stack network's IPv6 half gets the
same rules in a ``table ip6`` of the same name (``family``).

Masquerading follows flanneld's ``FLANNEL-POSTRTG``: packets kube-proxy marked (``0x4000/0x4000``,
masqueraded by kube-proxy's own rules) return first, so they are never translated twice, and the
masquerade is ``fully-random`` (source ports picked at random, which avoids SNAT port clashes under
load) unless ``--ip-masq-fully-random-disable`` says otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from overlayd.base.headerfield import HeaderField
from overlayd.netfilter.family import IP, IP6, NftFamily, of_family
from overlayd.netfilter.names import LEGACY_TABLE

MULTICAST = IP.multicast
KUBE_PROXY_MARK = 0x4000  # kube-proxy's masquerade mark: its packets are masqueraded by its own rules
PEER_SUFFIX = "_peers"  # the allowlist's sets are <name>_peers and <name>_dropped
DROPPED_SUFFIX = "_dropped"
DROPPED_FOR = "10m"  # how long a dropped source stays listed after its last packet
DROPPED_MAX = 256
# Our table holds at most one allowlist, so its sets are found by their suffix.
_DROPPED_ELEMENTS = re.compile(rf"(set \w+{DROPPED_SUFFIX} {{[^{{}}]*?)\s*elements = {{[^}}]*}}")
_PEER_ELEMENTS = re.compile(rf"set \w+{PEER_SUFFIX} {{[^{{}}]*?elements = {{([^}}]*)}}")
_COUNTER_VALUES = re.compile(r"counter packets \d+ bytes \d+")
_COMMENTS = re.compile(r"[ \t]*#[^\n]*")  # newer nft prints "size 256 # count 3"
_ELEMENTS = re.compile(r"elements = \{([^}]*)\}")


@dataclass(frozen=True)
class NftFeatures:
    """Parts of the table an older nft or kernel may refuse; each is dropped (once probed and
    found refused) rather than leave the node without masquerading and forward rules."""

    fully_random: bool = True  # ``masquerade fully-random``
    record_drops: bool = True  # the dynamic set of dropped sources


@dataclass(frozen=True)
class IngressGuard:
    """What the ingress allowlist guards, as the backend says: the underlay packets that carry
    overlay traffic to this host. ``name`` names the sets ``<name>_peers`` and ``<name>_dropped``."""

    protocol: str  # "udp"
    port: int
    name: str
    network_field: HeaderField | None = None  # only this network's packets on the port (VXLAN's VNI)
    ipv6_port: int | None = None  # the port in the ``ip6`` table (WireGuard's ListenPortV6); None: ``port``

    @property
    def peer_set(self) -> str:
        return self.name + PEER_SUFFIX

    @property
    def dropped_set(self) -> str:
        return self.name + DROPPED_SUFFIX


@dataclass(frozen=True)
class FirewallSpec:
    """Inputs of the overlay's rules."""

    network: IPv4Network | None  # None: an IPv6-only network (its rules are the ip6 table's alone)
    own_subnet: IPv4Network | None
    ip_masq: bool
    forward_rules: bool
    ingress_allowlist: bool = False
    ingress: IngressGuard | None = None  # None: the allowlist guards nothing
    # PublicIPs (and PublicIPv6s) allowed to send us overlay traffic; None: not known yet (before
    # the first peer listing), so ``Firewall.ensure`` keeps the live set, or has none yet, rather
    # than drop every peer's traffic meanwhile.
    ingress_sources: frozenset[IPv4Address | IPv6Address] | None = frozenset()
    masq_fully_random: bool = True  # False: --ip-masq-fully-random-disable
    # The underlay interface on which new connections into the Network are dropped (the backend's
    # tunnel is the only way in); DNAT'd ones (hostPort, NodePort) and replies pass. None: none.
    sealed_underlay: str | None = None
    # The IPv6 half of a dual-stack or IPv6-only network: the same rules in a ``table ip6``
    # (None: IPv4 only).
    ipv6_network: IPv6Network | None = None
    ipv6_own_subnet: IPv6Network | None = None

    def family_part(self, family: NftFamily) -> FirewallSpec:
        """The spec of ``family``'s table: its network, subnet and allowlist sources."""
        if family is IP6:
            assert self.ipv6_network is not None and self.ipv6_own_subnet is not None
            ingress = self.ingress
            if ingress is not None and ingress.ipv6_port is not None:
                ingress = replace(ingress, port=ingress.ipv6_port)
            return replace(self, network=self.ipv6_network, own_subnet=self.ipv6_own_subnet,  # type: ignore[arg-type]
                           ingress_sources=of_family(self.ingress_sources, IP6), ingress=ingress)
        return replace(self, ingress_sources=of_family(self.ingress_sources, IP))

    @property
    def guarded(self) -> IngressGuard | None:
        """The guard in force: the allowlist on and something to guard."""
        return self.ingress if self.ingress_allowlist else None


def render_table(
    spec: FirewallSpec,
    table: str = LEGACY_TABLE,
    features: NftFeatures = NftFeatures(),
    family: NftFamily = IP,
) -> str:
    """The table definition of ``family`` (``spec`` projected onto it: ``family_part``), laid
    out as ``nft list table`` prints it."""
    net, sub, ip = spec.network, spec.own_subnet, family.name
    fully_random = features.fully_random and spec.masq_fully_random
    masquerade = "masquerade fully-random" if fully_random else "masquerade"
    chains = []
    if (guard := spec.guarded) is not None:
        peers = sorted(spec.ingress_sources or ())
        elements = [f"\t\telements = {{ {', '.join(map(str, peers))} }}"] if peers else []
        header = [f"\tset {guard.peer_set} {{", f"\t\ttype {family.set_type}"]
        chains.append("\n".join([*header, *elements, "\t}\n"]))
        ours = f" {guard.network_field.nft()}" if guard.network_field else ""
        not_a_peer = f"{guard.protocol} dport {guard.port}{ours} {ip} saddr != @{guard.peer_set}"
        rules = [f"{not_a_peer} counter drop"]
        if features.record_drops:
            chains.append(dropped_set(guard.dropped_set, family.set_type))
            rules.insert(0, f"{not_a_peer} update @{guard.dropped_set} {{ {ip} saddr }}")
        chains.append(chain("input", "filter hook input priority filter", rules))
    if spec.ip_masq:
        chains.append(chain("postrouting", "nat hook postrouting priority srcnat", [
            f"meta mark & {KUBE_PROXY_MARK:#010x} == {KUBE_PROXY_MARK:#010x} return",
            f"{ip} saddr {net} {ip} daddr {net} return",
            f"{ip} saddr {net} {ip} daddr != {family.multicast} {masquerade}",
            f"{ip} saddr != {net} {ip} daddr {sub} return",
            f"{ip} saddr != {net} {ip} daddr {net} {masquerade}",
        ]))
    forward = [f"{ip} saddr {net} accept", f"{ip} daddr {net} accept"] if spec.forward_rules else []
    if spec.sealed_underlay is not None:
        forward.insert(0, f'iifname "{spec.sealed_underlay}" {ip} daddr {net} '
                          "ct state != { established, related } ct status ! dnat counter drop")
    if forward:
        chains.append(chain("forward", "filter hook forward priority filter", forward))
    return f"table {ip} {table} {{\n" + "\n".join(chains) + "}\n"


def render_ruleset(
    spec: FirewallSpec,
    table: str = LEGACY_TABLE,
    features: NftFeatures = NftFeatures(),
    family: NftFamily = IP,
) -> str:
    """The nft script that atomically replaces our table of ``family`` (creating it if absent)."""
    return delete_script(table, family) + render_table(spec, table, features, family)


def delete_script(table: str, family: NftFamily = IP) -> str:
    """The nft script that deletes a table, present or not (declared first, so nft never fails)."""
    return f"table {family.name} {table}\ndelete table {family.name} {table}\n"


def probe_table(name: str, table: str) -> str:
    """A throw-away table that uses only the ``NftFeatures`` field ``name``, for ``nft --check``."""
    if name == "fully_random":
        body = chain("p", "nat hook postrouting priority srcnat", ["masquerade fully-random"])
    else:
        probe_set = f"probe{DROPPED_SUFFIX}"
        rule = f"udp dport 1 update @{probe_set} {{ ip saddr }}"
        body = dropped_set(probe_set) + chain("p", "filter hook input priority filter", [rule])
    return f"table ip {table}_probe {{\n{body}}}\n"


def dropped_set(name: str, set_type: str = IP.set_type) -> str:
    return (f"\tset {name} {{\n\t\ttype {set_type}\n\t\tsize {DROPPED_MAX}\n"
            f"\t\tflags dynamic,timeout\n\t\ttimeout {DROPPED_FOR}\n\t}}\n")


def chain(name: str, hook: str, rules: list[str]) -> str:
    lines = [f"\tchain {name} {{", f"\t\ttype {hook}; policy accept;"]
    lines += [f"\t\t{rule}" for rule in rules]
    return "\n".join(lines) + "\n\t}\n"


def mentions(listing: str, network: IPv4Network | IPv6Network, family: NftFamily = IP) -> bool:
    """Whether a normalised table listing has a rule about ``network`` (as a source or destination)."""
    return any(f"{family.name} {field} {network} " in line + " " for line in listing.splitlines()
               for field in ("saddr", "daddr"))


def _addresses(elements: str) -> list[IPv4Address | IPv6Address]:
    """The addresses of an ``elements = { ... }`` list's inside; ValueError for anything else."""
    return [ip_address(item.strip()) for item in elements.split(",") if item.strip()]


def _sorted_elements(match: re.Match[str]) -> str:
    """Elements in address order; a list of anything but plain addresses is left as it is (it
    then differs from ours, and the pass rewrites the table instead of failing)."""
    try:
        peers = sorted(_addresses(match[1]))
    except ValueError:
        return match[0]
    return f"elements = {{ {', '.join(map(str, peers))} }}"


def listed_peers(listing: str | None) -> frozenset[IPv4Address | IPv6Address]:
    """The allowlist's elements in a normalised listing of our table (none if it has no set)."""
    match = _PEER_ELEMENTS.search(listing or "")
    return frozenset(_addresses(match[1])) if match else frozenset()


def normalise(listing: str) -> str:
    """Comparable form of a table listing: whitespace, counter values, element order and the
    dropped sources (the kernel's to add) ignored."""
    listing = _DROPPED_ELEMENTS.sub(r"\1", _COUNTER_VALUES.sub("counter", _COMMENTS.sub("", listing)))
    listing = _ELEMENTS.sub(_sorted_elements, listing)
    return "\n".join(line.strip() for line in listing.splitlines() if line.strip())
