"""The overlay's rules kept in the kernel: one nftables table per network and family, replaced
atomically (its text comes from ``rules``).

Why our own table (``ip overlayd`` for the default network; named after the etcd prefix for any
other, see ``names``; a dual-stack network's ``ip6`` table has the same name) rather than iptables
chains: the whole rule set is replaced in one ``nft -f`` transaction (declare, delete, recreate),
so there is never a moment with half the rules, nothing of anyone else's (another network's agent
included) is edited, and comparing the live table with the desired one is a text comparison. The
limit: an nftables ``accept`` ends evaluation only in its own base chain. Every other table hooked
at ``forward`` still runs, so a ``drop`` there — for example the ``FORWARD`` policy DROP that
Docker sets — still drops overlay traffic. So with forward rules the accept is also written where
iptables users drop, as flanneld's ``FLANNEL-FWD`` was: chain ``OVERLAYD-FWD`` jumped from
``filter FORWARD`` (``iptfwd``). A drop by policy in any other nftables table is named in a
warning. Our ``return`` in ``postrouting`` likewise cannot stop another table's masquerade.

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
import shutil
import subprocess
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address

from overlayd.netfilter.family import IP, IP6, NftFamily
from overlayd.netfilter.iptfwd import ForwardState, IptablesError, IptablesForwardRules, iptables_backend
from overlayd.netfilter.names import LEGACY, LEGACY_TABLE, NetfilterNames, names_for_prefix
from overlayd.netfilter.nftnl import NftNetlink
from overlayd.netfilter.rules import (
    FirewallSpec,
    IngressGuard,
    NftFeatures,
    delete_script,
    listed_peers,
    mentions,
    normalise,
    probe_table,
    render_ruleset,
    render_table,
)

log = logging.getLogger(__name__)

_FEATURE_NAMES = {
    "fully_random": "'masquerade fully-random'",
    "record_drops": "a dynamic set (dropped sources will not be named)",
}


class FirewallError(Exception):
    """nft is missing or refused our rules; the message names the command and the fix."""


def network_firewall(prefix: str) -> Firewall:
    """The firewall of the network under etcd ``prefix``: its own table and chain on this host."""
    return Firewall(names_for_prefix(prefix))


class Firewall:
    """Keeps our nftables table equal to the rules of a ``FirewallSpec``; in a dual-stack
    network, the ``ip6`` table too (kept by a second instance of this class, of family ``IP6``)."""

    def __init__(self, names: NetfilterNames = LEGACY, family: NftFamily = IP) -> None:
        self._names = names
        self._table = names.table
        self._family = family
        self._legacy_checked = names.legacy  # another network's agent looks once for its old table
        self._ipv6: Firewall | None = None  # the ip6 table's keeper, while the network is dual-stack
        self._ipv6_cleared = False  # an ip6 table of an earlier dual-stack run removed (once)
        self._ipv6_pass_seen = False
        self._ipv4_cleared = False  # IPv6-only: the ip table of an earlier run removed (once)
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
        """Make our nftables table(s) and, with forward rules, our iptables forward chain what
        ``spec`` says; True if any changed."""
        if spec.network is None:
            return self._ensure_ipv6_only(spec)
        self._ipv4_cleared = False
        changed = self._ensure_table(spec.family_part(IP))
        changed = self._ensure_ipv6(spec) or changed
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

    def _ensure_ipv6_only(self, spec: FirewallSpec) -> bool:
        """An IPv6-only network's rules: the ``ip6`` table alone. The ``ip`` table and the
        iptables forward chain of an earlier IPv4 or dual-stack run are removed once."""
        changed = self._ensure_ipv6(spec)
        if self._ipv4_cleared:
            return changed
        self._ipv4_cleared = True
        changed = self._delete_table("the network is IPv6-only") or changed
        try:
            if self.forward.remove():
                log.info("removed iptables chain %s: the network is IPv6-only (its forward rules "
                         "are in table ip6 %s)", self.forward.chain, self._table)
                changed = True
        except IptablesError as exc:
            log.warning("cannot remove the IPv4 forward rules of an earlier run: %s", exc)
        return changed

    @property
    def _name(self) -> str:
        """The table as nft names it: ``table ip overlayd``."""
        return f"table {self._family.name} {self._table}"

    def _ensure_ipv6(self, spec: FirewallSpec) -> bool:
        """The ``ip6`` table of a dual-stack ``spec``; removed (once) when it is IPv4-only."""
        if spec.ipv6_network is not None:
            self._ipv6 = self._ipv6 or Firewall(self._names, IP6)
            self._ipv6_cleared = False
            return self._ipv6._ensure_table(spec.family_part(IP6))
        # Looked for once, and not on the first pass: a cold start's time is the data path's,
        # and the look is one more ``nft`` process.
        first, self._ipv6_pass_seen = not self._ipv6_pass_seen, True
        if self._ipv6_cleared or (first and self._ipv6 is None):
            return False
        self._ipv6_cleared = True
        return self._remove_ipv6_table("the network is IPv4-only")

    def _remove_ipv6_table(self, why: str) -> bool:
        """Delete the ``ip6`` table if there is one; True if there was."""
        keeper, self._ipv6 = self._ipv6 or Firewall(self._names, IP6), None
        return keeper._delete_table(why)

    def _delete_table(self, why: str) -> bool:
        """Delete our table of our family if there is one; True if there was."""
        if self._live_listing() is None:
            return False
        self._nft(["-f", "-"], delete_script(self._table, self._family))
        log.info("deleted nftables %s: %s", self._name, why)
        return True

    def _remove_legacy(self, network: IPv4Network) -> bool:
        """Delete the single ``ip overlayd`` table and ``OVERLAYD-FWD`` chain that this network's
        agent wrote before names came from the prefix: only where they hold our Network (another
        network's, the default prefix's, stay). True if anything was removed."""
        removed = False
        live = self._live_listing(LEGACY_TABLE)
        if live is not None and mentions(live, network):
            self._nft(["-f", "-"], delete_script(LEGACY_TABLE))
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
                spec = replace(spec, ingress_sources=listed_peers(live))
            else:  # none yet (a first start, or flanneld's host taken over): an empty one would
                spec = replace(spec, ingress_allowlist=False)  # drop every peer until the listing
        script = render_ruleset(spec, self._table, self._features, self._family)
        if generation is not None and self._verified == (generation, script):
            return False
        if not listed:
            live = self._live_listing()
        unchanged = live is not None and (
            live == normalise(render_table(spec, self._table, self._features, self._family))
            or self._applied == (script, live)
        )
        self._verified = (generation, script) if unchanged and generation is not None else None
        if not unchanged:
            script = self._write(spec, script)
            self._applied = (script, self._live_listing() or "")
            allowlist = f"{len(spec.ingress_sources or ())} peers" if spec.guarded else "off"
            # Named after what it guards, as operators read it ("VXLAN allowlist 3 peers").
            guarded = spec.ingress.name.upper() if spec.ingress is not None else "ingress"
            log.info("%s nftables %s for %s (masquerade %s, forward rules %s, "
                     "%s allowlist %s)", "created" if live is None else "replaced", self._name,
                     spec.network, "on" if spec.ip_masq else "off",
                     "on" if spec.forward_rules else "off", guarded, allowlist)
        return not unchanged

    def allow_peer(self, public_ip: IPv4Address | IPv6Address) -> None:
        """Add one PublicIP (or PublicIPv6) to the ingress allowlist of its family's table (the
        table must exist; a full pass creates it)."""
        if public_ip.version != self._family.version:
            if self._ipv6 is not None:
                self._ipv6.allow_peer(public_ip)
            return
        peer_set = self._peer_set()
        try:
            self._netlink.set_element(self._table, peer_set, public_ip, add=True)
        except OSError as exc:
            raise FirewallError(f"cannot add {public_ip} to set {peer_set} of {self._name}: "
                                f"{exc.strerror}") from exc

    def disallow_peer(self, public_ip: IPv4Address | IPv6Address) -> None:
        """Remove one PublicIP from the ingress allowlist; already absent is fine."""
        if public_ip.version != self._family.version:
            if self._ipv6 is not None:
                self._ipv6.disallow_peer(public_ip)
            return
        peer_set = self._peer_set()
        try:
            self._netlink.set_element(self._table, peer_set, public_ip, add=False)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise FirewallError(f"cannot delete {public_ip} from set {peer_set} of {self._name}: "
                                    f"{exc.strerror}") from exc

    def _peer_set(self) -> str:
        if self._guard is None:
            raise FirewallError(f"{self._name} has no ingress allowlist to change; a full "
                                "pass with the allowlist on creates it")
        return self._guard.peer_set

    def dropped_sources(self) -> frozenset[IPv4Address | IPv6Address]:
        """Sources whose packets the allowlist dropped in the last ``DROPPED_FOR`` (none while our
        table has no allowlist), of both families."""
        if self._ipv6 is not None:
            return self._dropped_sources() | self._ipv6._dropped_sources()
        return self._dropped_sources()

    def _dropped_sources(self) -> frozenset[IPv4Address | IPv6Address]:
        if self._guard is None:
            return frozenset()
        try:
            dropped = self._netlink.set_elements(self._table, self._guard.dropped_set, self._family.version)
            return frozenset(dropped)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return frozenset()
            self._netlink.close()
            raise FirewallError(f"cannot list set {self._guard.dropped_set} of {self._name}: "
                                f"{exc.strerror}") from exc

    def remove(self) -> None:
        """Delete our table and iptables forward chain if present (the agent leaves rules in place
        on SIGTERM)."""
        self._nft(["-f", "-"], delete_script(self._table))
        self._applied = None
        self._verified = None
        log.info("deleted nftables table ip %s", self._table)
        self._remove_ipv6_table("removing the rules")
        try:
            if self.forward.remove():
                log.info("deleted iptables chain %s and its jump from filter FORWARD", self.forward.chain)
        except IptablesError as exc:
            raise FirewallError(f"cannot remove the iptables forward rules: {exc}") from exc

    def _live_listing(self, table: str | None = None) -> str | None:
        """Our table of our family (or ``table`` of it) as ``normalise`` returns it; None if absent."""
        table = table or self._table
        proc = self._run_nft(["list", "table", self._family.name, table])
        if proc.returncode != 0:
            if "No such file or directory" in proc.stderr:
                return None
            raise FirewallError(f"nft list table {self._family.name} {table} failed: {proc.stderr.strip()}")
        return normalise(proc.stdout)

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
                script = render_ruleset(spec, self._table, self._features, self._family)

    def _refused_feature(self) -> str | None:
        """The first feature still assumed that nft refuses (each probed once), or None."""
        for name in ("fully_random", "record_drops"):
            if name in self._probed or not getattr(self._features, name):
                continue
            self._probed.add(name)
            probe = probe_table(name, self._table)
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
