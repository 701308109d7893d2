"""Convert CNI results between the spec's formats (pure).

Every result is first lifted to the newest shape (1.1.0) and then lowered to the target
version, so N formats need 2N small functions instead of N² pairwise ones:

* 0.1.0/0.2.0: ``ip4``/``ip6`` objects, each with ``ip``, ``gateway`` and its own ``routes``;
* 0.3.x/0.4.0: ``interfaces``, ``ips`` (with ``version`` "4"/"6"), ``routes``, ``dns``;
* 1.0.0: as 0.4.0 without ``ips[].version``;
* 1.1.0: interfaces may carry ``mtu``/``socketPath``/``pciID``; routes ``mtu``/``advmss``/
  ``priority``/``table``/``scope``.
"""

from __future__ import annotations

from .errors import CniError
from .version import at_least

TYPE_CHECKING = False  # `typing` would add ~10 ms to every CNI call (docs/benchmarks.md)
if TYPE_CHECKING:
    from typing import Any

    Result = dict[str, Any]

_NEW_INTERFACE_KEYS = ("mtu", "socketPath", "pciID")
_NEW_ROUTE_KEYS = ("mtu", "advmss", "priority", "table", "scope")


def convert(result: Result, to_version: str) -> Result:
    """Return ``result`` (in the format its own ``cniVersion`` names) in ``to_version``'s."""
    return _lower(_lift(result), to_version)


def _lift(result: Result) -> Result:
    """Any supported format → the 1.1.0 shape (a new dict; the input is not modified)."""
    version = result.get("cniVersion", "0.1.0")
    if at_least(version, "0.3.0"):
        lifted = dict(result)
        lifted["ips"] = [
            {key: value for key, value in ip.items() if key != "version"} for ip in result.get("ips", [])
        ]
        return lifted
    lifted = {"ips": [], "routes": []}
    for family in ("ip4", "ip6"):
        legacy = result.get(family)
        if legacy is None:
            continue
        ip: dict[str, Any] = {"address": legacy["ip"]}
        if legacy.get("gateway"):
            ip["gateway"] = legacy["gateway"]
        lifted["ips"].append(ip)
        lifted["routes"].extend(legacy.get("routes", []))
    if "dns" in result:
        lifted["dns"] = result["dns"]
    return lifted


def _lower(current: Result, version: str) -> Result:
    """The 1.1.0 shape → ``version``'s format."""
    if not at_least(version, "0.3.0"):
        return _to_legacy(current, version)
    lowered = dict(current)
    if not at_least(version, "1.1.0"):
        lowered["interfaces"] = [
            _without(interface, _NEW_INTERFACE_KEYS) for interface in current.get("interfaces", [])
        ]
        lowered["routes"] = [_without(route, _NEW_ROUTE_KEYS) for route in current.get("routes", [])]
    if not at_least(version, "1.0.0"):
        lowered["ips"] = [{"version": _ip_version(ip["address"]), **ip} for ip in current["ips"]]
    for key in ("interfaces", "ips", "routes"):
        if not lowered.get(key):
            lowered.pop(key, None)
    lowered["cniVersion"] = version
    return lowered


def _to_legacy(current: Result, version: str) -> Result:
    """0.1.0/0.2.0 hold one address per family and no interfaces; routes split by family."""
    legacy: Result = {"cniVersion": version}
    for family, ip_version in (("ip4", "4"), ("ip6", "6")):
        ip = next((ip for ip in current.get("ips", []) if _ip_version(ip["address"]) == ip_version), None)
        if ip is None:
            continue
        entry: dict[str, Any] = {"ip": ip["address"]}
        if ip.get("gateway"):
            entry["gateway"] = ip["gateway"]
        routes = [
            _without(route, _NEW_ROUTE_KEYS)
            for route in current.get("routes", [])
            if _ip_version(route["dst"]) == ip_version
        ]
        if routes:
            entry["routes"] = routes
        legacy[family] = entry
    if "ip4" not in legacy and "ip6" not in legacy:
        raise CniError(f"cannot convert a result without IP addresses to version {version}")
    if "dns" in current:
        legacy["dns"] = current["dns"]
    return legacy


def _ip_version(address: str) -> str:
    """ "4" or "6" for an address or prefix, by its notation (cheaper than ipaddress)."""
    return "6" if ":" in address else "4"


def _without(entry: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key not in keys}
