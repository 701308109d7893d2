"""Masquerade and forward rules for the overlay, as one nftables table replaced atomically.

Semantics are flannel's (``FLANNEL-POSTRTG`` / ``FLANNEL-FWD``): with IP masquerading, traffic
inside the overlay Network keeps its source address, traffic leaving it is masqueraded (never
towards multicast), and traffic entering our subnet from outside is left alone; with forward
rules, forwarding to and from the Network is accepted.

Why our own table (``ip overlayd`` for the default network; named after the etcd prefix for any
other, see ``names``) rather than iptables chains: the whole rule set is replaced in one ``nft -f``
transaction (declare, delete, recreate), so there is never a moment with half the rules, nothing of
anyone else's (another network's agent included) is edited, and comparing the live table with the
desired one is a text comparison. The limit: an nftables ``accept`` ends evaluation only in its own
base chain. Every other table hooked at ``forward`` still runs, so a ``drop`` there — for example
the ``FORWARD`` policy DROP that Docker sets — still drops overlay traffic. So with forward rules
the accept is also written where iptables users drop, as flanneld's ``FLANNEL-FWD`` was: chain
``OVERLAYD-FWD`` jumped from ``filter FORWARD`` (``iptfwd``). A drop by policy in any other nftables
table is named in a warning. Our ``return`` in ``postrouting`` likewise cannot stop another table's
masquerade.

Masquerading follows flanneld's ``FLANNEL-POSTRTG``: packets kube-proxy marked (``0x4000/0x4000``,
masqueraded by kube-proxy's own rules) return first, so they are never translated twice, and the
masquerade is ``fully-random`` (source ports picked at random, which avoids SNAT port clashes under
load) unless ``--ip-masq-fully-random-disable`` says otherwise.

An overlay encapsulation such as VXLAN has no authentication: whoever can send UDP to its port
injects frames into the overlay. With the ingress allowlist, an ``input`` chain drops packets to
that port (the backend names protocol and port: ``IngressGuard``) unless their source is in the
named set ``<name>_peers`` (the PublicIPs of current peer leases; ``vxlan_peers`` for VXLAN). Full
passes replace the whole table, elements included; a single peer event adds or deletes one element
over netlink (``nftnl``, no process start: it is on the new peer's critical path). The rule before
the drop records each dropped source in the set ``<name>_dropped`` for 10 minutes, so that the
agent can name it: a node of the network whose tunnel leaves from another address than the
PublicIP it publishes is cut off by the allowlist, and without a name the operator would see only
a counter. It is a separate rule because an ``update`` on a full set ends its rule: a flood of
spoofed sources must not turn the drop off.

Periodic passes do not list the table while nothing in nftables changed: the ruleset generation
(``nftnl``, one netlink round trip) is compared with the one read just before the last listing
that matched. A deleted or flushed table, or any other rule change, bumps it and the next pass
lists and repairs as before.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network

from overlayd.base.headerfield import HeaderField
from overlayd.netfilter.iptfwd import ForwardState, IptablesError, IptablesForwardRules, iptables_backend
from overlayd.netfilter.names import LEGACY, LEGACY_TABLE, NetfilterNames, names_for_prefix
from overlayd.netfilter.nftnl import NftNetlink

log = logging.getLogger(__name__)

MULTICAST = IPv4Network("224.0.0.0/4")
KUBE_PROXY_MARK = 0x4000  # kube-proxy's masquerade mark: its packets are masqueraded by its own rules
PEER_SUFFIX = "_peers"  # the allowlist's sets are <name>_peers and <name>_dropped
DROPPED_SUFFIX = "_dropped"
DROPPED_FOR = "10m"  # how long a dropped source stays listed after its last packet
DROPPED_MAX = 256
_FEATURE_NAMES = {
    "fully_random": "'masquerade fully-random'",
    "record_drops": "a dynamic set (dropped sources will not be named)",
}
# Our table holds at most one allowlist, so its sets are found by their suffix.
_DROPPED_ELEMENTS = re.compile(rf"(set \w+{DROPPED_SUFFIX} {{[^{{}}]*?)\s*elements = {{[^}}]*}}")
_PEER_ELEMENTS = re.compile(rf"set \w+{PEER_SUFFIX} {{[^{{}}]*?elements = {{([^}}]*)}}")
_COUNTER_VALUES = re.compile(r"counter packets \d+ bytes \d+")
_COMMENTS = re.compile(r"[ \t]*#[^\n]*")  # newer nft prints "size 256 # count 3"
_ELEMENTS = re.compile(r"elements = \{([^}]*)\}")


class FirewallError(Exception):
    """nft is missing or refused our rules; the message names the command and the fix."""


@dataclass(frozen=True)
class NftFeatures:
    """Parts of the table an older nft or kernel may refuse; each is dropped (once probed and
    found refused) rather than leave the node without masquerading and forward rules."""

    fully_random: bool = True  # ``masquerade fully-random``
    record_drops: bool = True  # the dynamic set of dropped sources


def _probe_table(name: str, table: str) -> str:
    """A throw-away table that uses only the ``NftFeatures`` field ``name``, for ``nft --check``."""
    if name == "fully_random":
        body = _chain("p", "nat hook postrouting priority srcnat", ["masquerade fully-random"])
    else:
        probe_set = f"probe{DROPPED_SUFFIX}"
        rule = f"udp dport 1 update @{probe_set} {{ ip saddr }}"
        body = _dropped_set(probe_set) + _chain("p", "filter hook input priority filter", [rule])
    return f"table ip {table}_probe {{\n{body}}}\n"


@dataclass(frozen=True)
class IngressGuard:
    """What the ingress allowlist guards, as the backend says: the underlay packets that carry
    overlay traffic to this host. ``name`` names the sets ``<name>_peers`` and ``<name>_dropped``."""

    protocol: str  # "udp"
    port: int
    name: str
    network_field: HeaderField | None = None  # only this network's packets on the port (VXLAN's VNI)

    @property
    def peer_set(self) -> str:
        return self.name + PEER_SUFFIX

    @property
    def dropped_set(self) -> str:
        return self.name + DROPPED_SUFFIX


@dataclass(frozen=True)
class FirewallSpec:
    """Inputs of the overlay's rules."""

    network: IPv4Network
    own_subnet: IPv4Network
    ip_masq: bool
    forward_rules: bool
    ingress_allowlist: bool = False
    ingress: IngressGuard | None = None  # None: the allowlist guards nothing
    # PublicIPs allowed to send us overlay traffic; None: not known yet (before the first peer
    # listing), so ``Firewall.ensure`` keeps the live set, or has none yet, rather than drop
    # every peer's traffic meanwhile.
    ingress_sources: frozenset[IPv4Address] | None = frozenset()
    masq_fully_random: bool = True  # False: --ip-masq-fully-random-disable
    # The underlay interface on which new connections into the Network are dropped (the backend's
    # tunnel is the only way in); DNAT'd ones (hostPort, NodePort) and replies pass. None: none.
    sealed_underlay: str | None = None

    @property
    def guarded(self) -> IngressGuard | None:
        """The guard in force: the allowlist on and something to guard."""
        return self.ingress if self.ingress_allowlist else None


def render_table(spec: FirewallSpec, table: str = LEGACY_TABLE, features: NftFeatures = NftFeatures()) -> str:
    """The table definition, laid out as ``nft list table`` prints it."""
    net, sub = spec.network, spec.own_subnet
    fully_random = features.fully_random and spec.masq_fully_random
    masquerade = "masquerade fully-random" if fully_random else "masquerade"
    chains = []
    if (guard := spec.guarded) is not None:
        peers = sorted(spec.ingress_sources or ())
        elements = [f"\t\telements = {{ {', '.join(map(str, peers))} }}"] if peers else []
        chains.append("\n".join([f"\tset {guard.peer_set} {{", "\t\ttype ipv4_addr", *elements, "\t}\n"]))
        ours = f" {guard.network_field.nft()}" if guard.network_field else ""
        not_a_peer = f"{guard.protocol} dport {guard.port}{ours} ip saddr != @{guard.peer_set}"
        rules = [f"{not_a_peer} counter drop"]
        if features.record_drops:
            chains.append(_dropped_set(guard.dropped_set))
            rules.insert(0, f"{not_a_peer} update @{guard.dropped_set} {{ ip saddr }}")
        chains.append(_chain("input", "filter hook input priority filter", rules))
    if spec.ip_masq:
        chains.append(_chain("postrouting", "nat hook postrouting priority srcnat", [
            f"meta mark & {KUBE_PROXY_MARK:#010x} == {KUBE_PROXY_MARK:#010x} return",
            f"ip saddr {net} ip daddr {net} return",
            f"ip saddr {net} ip daddr != {MULTICAST} {masquerade}",
            f"ip saddr != {net} ip daddr {sub} return",
            f"ip saddr != {net} ip daddr {net} {masquerade}",
        ]))
    forward = [f"ip saddr {net} accept", f"ip daddr {net} accept"] if spec.forward_rules else []
    if spec.sealed_underlay is not None:
        forward.insert(0, f'iifname "{spec.sealed_underlay}" ip daddr {net} '
                          "ct state != { established, related } ct status ! dnat counter drop")
    if forward:
        chains.append(_chain("forward", "filter hook forward priority filter", forward))
    return f"table ip {table} {{\n" + "\n".join(chains) + "}\n"


def render_ruleset(
    spec: FirewallSpec, table: str = LEGACY_TABLE, features: NftFeatures = NftFeatures()
) -> str:
    """The nft script that atomically replaces our table (creating it if absent)."""
    return f"table ip {table}\ndelete table ip {table}\n" + render_table(spec, table, features)


def _dropped_set(name: str) -> str:
    return (f"\tset {name} {{\n\t\ttype ipv4_addr\n\t\tsize {DROPPED_MAX}\n"
            f"\t\tflags dynamic,timeout\n\t\ttimeout {DROPPED_FOR}\n\t}}\n")


def _chain(name: str, hook: str, rules: list[str]) -> str:
    lines = [f"\tchain {name} {{", f"\t\ttype {hook}; policy accept;"]
    lines += [f"\t\t{rule}" for rule in rules]
    return "\n".join(lines) + "\n\t}\n"


def _mentions(listing: str, network: IPv4Network) -> bool:
    """Whether a normalised table listing has a rule about ``network`` (as a source or destination)."""
    return any(f"{field} {network} " in line + " " for line in listing.splitlines()
               for field in ("ip saddr", "ip daddr"))


def _addresses(elements: str) -> list[IPv4Address]:
    """The addresses of an ``elements = { ... }`` list's inside; ValueError for anything else."""
    return [IPv4Address(item.strip()) for item in elements.split(",") if item.strip()]


def _sorted_elements(match: re.Match[str]) -> str:
    """Elements in address order; a list of anything but plain addresses is left as it is (it
    then differs from ours, and the pass rewrites the table instead of failing)."""
    try:
        peers = sorted(_addresses(match[1]))
    except ValueError:
        return match[0]
    return f"elements = {{ {', '.join(map(str, peers))} }}"


def _listed_peers(listing: str | None) -> frozenset[IPv4Address]:
    """The allowlist's elements in a normalised listing of our table (none if it has no set)."""
    match = _PEER_ELEMENTS.search(listing or "")
    return frozenset(_addresses(match[1])) if match else frozenset()


def _normalise(listing: str) -> str:
    """Comparable form of a table listing: whitespace, counter values, element order and the
    dropped sources (the kernel's to add) ignored."""
    listing = _DROPPED_ELEMENTS.sub(r"\1", _COUNTER_VALUES.sub("counter", _COMMENTS.sub("", listing)))
    listing = _ELEMENTS.sub(_sorted_elements, listing)
    return "\n".join(line.strip() for line in listing.splitlines() if line.strip())


def network_firewall(prefix: str) -> Firewall:
    """The firewall of the network under etcd ``prefix``: its own table and chain on this host."""
    return Firewall(names_for_prefix(prefix))


class Firewall:
    """Keeps our nftables table equal to the rules of a ``FirewallSpec``."""

    def __init__(self, names: NetfilterNames = LEGACY) -> None:
        self._table = names.table
        self._legacy_checked = names.legacy  # another network's agent looks once for its old table
        self._features = NftFeatures()  # assumed until nft refuses a table with them
        self._probed: set[str] = set()
        # The script we last applied and the kernel's listing right after: recognises our own
        # table even where this nft version prints it differently from ``render_table``.
        self._applied: tuple[str, str] | None = None
        self._warned_drops: frozenset[str] = frozenset()
        self._netlink = NftNetlink()
        # (ruleset generation, script) of the last pass that found the table as wanted.
        self._verified: tuple[int, str] | None = None
        self._generation: int | None = None  # read at the start of the last pass
        self.forward = IptablesForwardRules(names.forward_chain)
        self._forward_off_cleared = False  # forward rules off: a previous run's removed (once)
        self._foreign_checked: int | None = -1  # the generation the foreign drops were looked at in
        self._guard: IngressGuard | None = None  # the allowlist of the last spec ensured

    def ensure(self, spec: FirewallSpec) -> bool:
        """Make our nftables table and, with forward rules, our iptables forward chain what ``spec``
        says; True if either changed."""
        changed = self._ensure_table(spec)
        if not self._legacy_checked:
            self._legacy_checked = True
            changed = self._remove_legacy(spec.network) or changed
        if spec.forward_rules:
            changed = self.forward.ensure(spec.network) or changed
            self._forward_off_cleared = False
        elif not self._forward_off_cleared:  # rules a run with forward rules on left behind
            self._forward_off_cleared = True
            try:
                if self.forward.remove():
                    log.info("removed iptables chain %s: forward rules are off, the forward "
                             "policy is the host's own", self.forward.chain)
                    changed = True
            except IptablesError as exc:
                log.warning("cannot remove iptables forward rules of an earlier run: %s", exc)
        # Only when nftables changed (a process start): a new drop bumps the generation.
        if self._foreign_checked != self._generation or self._generation is None:
            self._foreign_checked = self._generation
            self._warn_about_foreign_drops(spec.forward_rules)
        return changed

    def _remove_legacy(self, network: IPv4Network) -> bool:
        """Delete the single ``ip overlayd`` table and ``OVERLAYD-FWD`` chain that this network's
        agent wrote before names came from the prefix: only where they hold our Network (another
        network's, the default prefix's, stay). True if anything was removed."""
        removed = False
        live = self._live_listing(LEGACY_TABLE)
        if live is not None and _mentions(live, network):
            self._nft(["-f", "-"], f"table ip {LEGACY_TABLE}\ndelete table ip {LEGACY_TABLE}\n")
            log.info("deleted nftables table ip %s for %s, written by an earlier release; this "
                     "network's rules are in table ip %s now", LEGACY_TABLE, network, self._table)
            removed = True
        try:
            if self.forward.remove_legacy(network):
                log.info("deleted iptables chain %s for %s, written by an earlier release; this "
                         "network's is %s now", "OVERLAYD-FWD", network, self.forward.chain)
                removed = True
        except IptablesError as exc:
            log.warning("cannot remove the iptables chain of an earlier release: %s", exc)
        return removed

    def _ensure_table(self, spec: FirewallSpec) -> bool:
        """Replace the table if it differs from ``spec``'s rules; True if it changed anything.

        ``NftFeatures`` are assumed until nft refuses a table with them: probing first cost a
        process start (~30 ms on a slow machine) each on every agent start.
        """
        generation = self._netlink.generation()  # before the listing: a later change bumps it again
        self._generation = generation
        live: str | None = None
        listed = False
        self._guard = spec.guarded
        if spec.guarded is not None and spec.ingress_sources is None:
            live, listed = self._live_listing(), True
            if live is not None and f"set {spec.guarded.peer_set} " in live:
                spec = replace(spec, ingress_sources=_listed_peers(live))
            else:  # none yet (a first start, or flanneld's host taken over): an empty one would
                spec = replace(spec, ingress_allowlist=False)  # drop every peer until the listing
        script = render_ruleset(spec, self._table, self._features)
        if generation is not None and self._verified == (generation, script):
            return False
        if not listed:
            live = self._live_listing()
        unchanged = live is not None and (
            live == _normalise(render_table(spec, self._table, self._features))
            or self._applied == (script, live)
        )
        self._verified = (generation, script) if unchanged and generation is not None else None
        if not unchanged:
            script = self._write(spec, script)
            self._applied = (script, self._live_listing() or "")
            allowlist = f"{len(spec.ingress_sources or ())} peers" if spec.guarded else "off"
            # Named after what it guards, as operators read it ("VXLAN allowlist 3 peers").
            guarded = spec.ingress.name.upper() if spec.ingress is not None else "ingress"
            log.info("%s nftables table ip %s for %s (masquerade %s, forward rules %s, "
                     "%s allowlist %s)", "created" if live is None else "replaced", self._table,
                     spec.network, "on" if spec.ip_masq else "off",
                     "on" if spec.forward_rules else "off", guarded, allowlist)
        return not unchanged

    def allow_peer(self, public_ip: IPv4Address) -> None:
        """Add one PublicIP to the ingress allowlist (the table must exist; a full pass creates it)."""
        peer_set = self._peer_set()
        try:
            self._netlink.set_element(self._table, peer_set, public_ip, add=True)
        except OSError as exc:
            raise FirewallError(f"cannot add {public_ip} to set {peer_set} of table ip {self._table}: "
                                f"{exc.strerror}") from exc

    def disallow_peer(self, public_ip: IPv4Address) -> None:
        """Remove one PublicIP from the ingress allowlist; already absent is fine."""
        peer_set = self._peer_set()
        try:
            self._netlink.set_element(self._table, peer_set, public_ip, add=False)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise FirewallError(f"cannot delete {public_ip} from set {peer_set} of table ip "
                                    f"{self._table}: {exc.strerror}") from exc

    def _peer_set(self) -> str:
        if self._guard is None:
            raise FirewallError(f"table ip {self._table} has no ingress allowlist to change; a full "
                                "pass with the allowlist on creates it")
        return self._guard.peer_set

    def dropped_sources(self) -> frozenset[IPv4Address]:
        """Sources whose packets the allowlist dropped in the last ``DROPPED_FOR`` (none while our
        table has no allowlist)."""
        if self._guard is None:
            return frozenset()
        try:
            return frozenset(self._netlink.set_elements(self._table, self._guard.dropped_set))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return frozenset()
            self._netlink.close()
            raise FirewallError(f"cannot list set {self._guard.dropped_set} of table ip {self._table}: "
                                f"{exc.strerror}") from exc

    def remove(self) -> None:
        """Delete our table and iptables forward chain if present (the agent leaves rules in place
        on SIGTERM)."""
        self._nft(["-f", "-"], f"table ip {self._table}\ndelete table ip {self._table}\n")
        self._applied = None
        self._verified = None
        log.info("deleted nftables table ip %s", self._table)
        try:
            if self.forward.remove():
                log.info("deleted iptables chain %s and its jump from filter FORWARD", self.forward.chain)
        except IptablesError as exc:
            raise FirewallError(f"cannot remove the iptables forward rules: {exc}") from exc

    def _live_listing(self, table: str | None = None) -> str | None:
        table = table or self._table
        proc = self._run_nft(["list", "table", "ip", table])
        if proc.returncode != 0:
            if "No such file or directory" in proc.stderr:
                return None
            raise FirewallError(f"nft list table ip {table} failed: {proc.stderr.strip()}")
        return _normalise(proc.stdout)

    def _write(self, spec: FirewallSpec, script: str) -> str:
        """Apply ``script``; where nft refuses it, drop the features it does not support and
        apply the table without them. Returns the script applied."""
        while True:
            try:
                self._nft(["-f", "-"], script)
                return script
            except FirewallError:
                refused = self._refused_feature()
                if refused is None:
                    raise
                self._features = replace(self._features, **{refused: False})
                script = render_ruleset(spec, self._table, self._features)

    def _refused_feature(self) -> str | None:
        """The first feature still assumed that nft refuses (each probed once), or None."""
        for name in ("fully_random", "record_drops"):
            if name in self._probed or not getattr(self._features, name):
                continue
            self._probed.add(name)
            probe = _probe_table(name, self._table)
            if self._run_nft(["--check", "-f", "-"], probe).returncode != 0:
                log.warning("nftables refuses %s; writing the table without it", _FEATURE_NAMES[name])
                return name
        return None

    def _warn_about_foreign_drops(self, forward_rules: bool) -> None:
        """Warn (once per set) about forward chains that drop by policy where no accept of ours
        runs: any other nftables table, and iptables' own while our chain is not in place."""
        proc = self._run_nft(["-j", "list", "chains"])
        if proc.returncode != 0:
            return
        ours = {f"ip {self._table} forward"}
        if self.forward.state is ForwardState.IN_PLACE and iptables_backend() == "nf_tables":
            ours.add("ip filter FORWARD")  # where OVERLAYD-FWD is jumped from
        drops = frozenset(
            name
            for item in json.loads(proc.stdout).get("nftables", [])
            if (chain := item.get("chain"))
            and chain.get("hook") == "forward"
            and chain.get("policy") == "drop"
            and (name := f"{chain['family']} {chain['table']} {chain['name']}") not in ours
        )
        if drops and drops != self._warned_drops:
            log.warning("forward chain(s) %s drop by policy and no accept of ours runs there%s: "
                        "forwarded overlay traffic is dropped unless the overlay Network is "
                        "accepted in them (iptables -s/-d <Network> -j ACCEPT, or nftables ip "
                        "saddr/daddr <Network> accept)", ", ".join(sorted(drops)),
                        "" if forward_rules else " (--iptables-forward-rules=false)")
        self._warned_drops = drops

    def _nft(self, args: list[str], script: str) -> None:
        proc = self._run_nft(args, script)
        if proc.returncode != 0:
            raise FirewallError(f"nft {' '.join(args)} failed: {proc.stderr.strip()}")

    @staticmethod
    def _run_nft(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        nft = shutil.which("nft")
        if nft is None:
            raise FirewallError("the nft binary is not on PATH; install the nftables package "
                                "(e.g. apt-get install nftables) or turn off ip-masq and "
                                "forward rules")
        return subprocess.run([nft, *args], input=stdin, capture_output=True, text=True,
                              check=False)
