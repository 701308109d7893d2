"""Forward rules in iptables' ``filter FORWARD``: the overlay accepted where Docker drops.

A forwarded packet must be accepted by every base chain on the hook: our nftables table's accept
cannot override the ``FORWARD`` policy DROP that dockerd sets on a fresh host (or any other
iptables user's drop). Like flanneld's ``FLANNEL-FWD``, chain ``OVERLAYD-FWD`` accepts traffic
from and to the Network (nothing else) and is jumped from ``FORWARD``, so it is evaluated in the
very chain that drops.

Why the ``iptables`` binary and not the ``ip filter`` nftables table directly: dockerd writes its
rules with ``iptables``, which Debian's alternatives point at either the nf_tables or the legacy
backend. Only the same binary is sure to reach the ruleset that holds Docker's policy; a legacy
``FORWARD`` chain is invisible to nftables. iptables-legacy takes ``/run/xtables.lock``, hence
``-w``.

Level-triggered: each full pass lists the filter table (``iptables -S``, one process start of
about 1.5 ms) and rewrites the chain and the jump in one ``iptables-restore --noflush``
transaction when anything differs, e.g. after a firewall reload flushed ``FORWARD``. Each
state change is logged once: written, restored, iptables missing, iptables failing.
"""

from __future__ import annotations

import enum
import logging
import shutil
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Network

from overlayd.netfilter.names import LEGACY_CHAIN

log = logging.getLogger(__name__)

CHAIN = LEGACY_CHAIN  # the default network's; another network's is named after its prefix (``names``)
LOCK_WAIT = "5"  # seconds to wait for /run/xtables.lock (iptables-legacy) held by dockerd


class ForwardState(enum.Enum):
    UNKNOWN = "unknown"  # not looked yet
    IN_PLACE = "in place"
    ABSENT = "absent"  # removed, or never written (forward rules off)
    NO_IPTABLES = "no iptables"
    FAILING = "failing"


@dataclass(frozen=True)
class FilterListing:
    """What ``iptables -t filter -S`` shows of ours: the jumps to our chain and its rules."""

    jumps: tuple[str, ...]
    chain_rules: tuple[str, ...] | None  # None: the chain does not exist


def jump(chain: str = CHAIN) -> str:
    """The jump to ``chain`` from ``FORWARD``, as ``iptables -S`` prints it."""
    return f"-A FORWARD -j {chain}"


def parse_listing(text: str, chain: str = CHAIN) -> FilterListing:
    """Our jumps and chain from an ``iptables -S`` listing (other chains and comments ignored)."""
    jumps: list[str] = []
    rules: list[str] = []
    chain_exists = False
    for line in (raw.strip() for raw in text.splitlines()):
        if line == f"-N {chain}":
            chain_exists = True
        elif line.startswith("-A FORWARD ") and line.endswith(f"-j {chain}"):
            jumps.append(line)
        elif line.startswith(f"-A {chain} "):
            rules.append(line)
    return FilterListing(tuple(jumps), tuple(rules) if chain_exists else None)


def wanted_rules(network: IPv4Network, chain: str = CHAIN) -> tuple[str, ...]:
    """Our chain's rules, as ``iptables -S`` prints them: from and to the Network, nothing else."""
    return (f"-A {chain} -s {network} -j ACCEPT", f"-A {chain} -d {network} -j ACCEPT")


def in_place(listing: FilterListing, network: IPv4Network, chain: str = CHAIN) -> bool:
    return listing.jumps == (jump(chain),) and listing.chain_rules == wanted_rules(network, chain)


def restore_script(listing: FilterListing, network: IPv4Network, chain: str = CHAIN) -> str:
    """An ``iptables-restore --noflush`` script that makes our rules exactly the wanted ones.

    Declaring the chain creates or empties it; every existing jump is deleted before one is put
    first in ``FORWARD``, ahead of whatever drops, so the whole change is one transaction.
    """
    lines = ["*filter", f":{chain} - [0:0]"]
    lines += ["-D" + found.removeprefix("-A") for found in listing.jumps]
    lines += [f"-I FORWARD 1 -j {chain}", *wanted_rules(network, chain), "COMMIT", ""]
    return "\n".join(lines)


def removal_script(listing: FilterListing, chain: str = CHAIN) -> str | None:
    """A script deleting our jumps and chain; None when there is nothing of ours."""
    if not listing.jumps and listing.chain_rules is None:
        return None
    lines = ["*filter", *("-D" + found.removeprefix("-A") for found in listing.jumps)]
    if listing.chain_rules is not None:
        lines += [f"-F {chain}", f"-X {chain}"]
    return "\n".join([*lines, "COMMIT", ""])


class IptablesError(Exception):
    """iptables is missing or failed; the message names the command and its error."""


class IptablesForwardRules:
    """Keeps our chain (``OVERLAYD-FWD`` for the default network) and its jump from ``FORWARD``
    equal to the wanted rules."""

    def __init__(self, chain: str = CHAIN) -> None:
        self.chain = chain
        self.state = ForwardState.UNKNOWN
        self._problem = ""  # the last error logged, so that a persisting one is logged once

    def ensure(self, network: IPv4Network) -> bool:
        """Write or repair the rules if they differ; True if it wrote. Never raises: a failure is
        logged once and retried on the next pass (the nftables table still accepts in its own
        chain, which is all a host without an iptables DROP needs)."""
        try:
            listing = parse_listing(self._iptables("-t", "filter", "-S"), self.chain)
            if in_place(listing, network, self.chain):
                self._now(ForwardState.IN_PLACE)
                return False
            self._restore(restore_script(listing, network, self.chain))
            written = parse_listing(self._iptables("-t", "filter", "-S"), self.chain)
            if not in_place(written, network, self.chain):
                raise IptablesError(f"chain {self.chain} is not as written right after iptables-restore; "
                                    "is another program rewriting filter FORWARD?")
        except IptablesError as exc:
            self._failed(exc)
            return False
        if self.state is ForwardState.IN_PLACE:
            log.warning("iptables forward rules for %s were missing or changed (a firewall reload, or "
                        "a service flushing filter FORWARD); restored chain %s and its jump from FORWARD",
                        network, self.chain)
        else:
            log.info("iptables: accepting forwarded traffic from and to %s (chain %s, jumped from "
                     "filter FORWARD), so a FORWARD policy DROP such as Docker's spares the overlay",
                     network, self.chain)
        self._now(ForwardState.IN_PLACE)
        return True

    def remove(self) -> bool:
        """Delete our chain and jump if present; True if there was anything. Raises IptablesError."""
        if shutil.which("iptables") is None:
            return False  # nothing can have been written through it
        script = removal_script(parse_listing(self._iptables("-t", "filter", "-S"), self.chain), self.chain)
        if script is not None:
            self._restore(script)
        self._now(ForwardState.ABSENT)
        return script is not None

    def remove_legacy(self, network: IPv4Network) -> bool:
        """Delete ``OVERLAYD-FWD`` if it holds exactly ``network``'s rules: written by this
        network's agent before chains were named per network. True if it was. Raises IptablesError."""
        if self.chain == LEGACY_CHAIN or shutil.which("iptables") is None:
            return False
        listing = parse_listing(self._iptables("-t", "filter", "-S"), LEGACY_CHAIN)
        if listing.chain_rules != wanted_rules(network, LEGACY_CHAIN):
            return False  # absent, or another network's: not ours to touch
        script = removal_script(listing, LEGACY_CHAIN)
        assert script is not None
        self._restore(script)
        return True

    def _now(self, state: ForwardState) -> None:
        if self.state is ForwardState.FAILING and state is ForwardState.IN_PLACE:
            log.info("iptables forward rules in place again")
        self.state, self._problem = state, ""

    def _failed(self, exc: IptablesError) -> None:
        missing = shutil.which("iptables") is None
        problem = "missing" if missing else str(exc)
        if problem != self._problem:
            if missing:
                log.error("the iptables binary is not on PATH: forwarded overlay traffic is dropped "
                          "wherever a filter FORWARD policy drops it (Docker sets one). Install the "
                          "iptables package, or run with --iptables-forward-rules=false to leave the "
                          "forward policy to the host's own firewall")
            else:
                log.error("iptables forward rules not written: %s; retrying every pass", exc)
        self.state = ForwardState.NO_IPTABLES if missing else ForwardState.FAILING
        self._problem = problem

    def _iptables(self, *args: str) -> str:
        return _run(["iptables", "-w", LOCK_WAIT, *args])

    def _restore(self, script: str) -> None:
        _run(["iptables-restore", "-w", LOCK_WAIT, "--noflush"], script)


def iptables_backend() -> str | None:
    """``nf_tables`` or ``legacy``, as ``iptables -V`` says; None without iptables."""
    try:
        version = _run(["iptables", "-V"])
    except IptablesError:
        return None
    return "nf_tables" if "nf_tables" in version else "legacy"


def _run(argv: list[str], stdin: str | None = None) -> str:
    binary = shutil.which(argv[0])
    if binary is None:
        raise IptablesError(f"{argv[0]} is not on PATH; install the iptables package")
    try:
        done = subprocess.run([binary, *argv[1:]], input=stdin, capture_output=True, text=True,
                              check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IptablesError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise IptablesError(f"{' '.join(argv)} failed (status {done.returncode}): "
                            f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout
