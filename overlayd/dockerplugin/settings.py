"""What the plugin shares with the CNI plugin, read from the same conflist and ``subnet.env``.

The conflist gives the network name and host-local's ``dataDir`` (the address store), the
``subnet.env`` path and the bridge (name, hairpin, MTU override); ``subnet.env`` gives the subnet,
gateway and MTU. Reading the CNI plugin's own configuration, not a second copy of it, is what keeps
Docker's containers on the same bridge, gateway and address pool as CNI's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from cni_shim.errors import CniError
from cni_shim.netconf import parse_conf
from overlayd.subnet.subnetenv import parse_keys

HOST_LOCAL_DATA_DIR = Path("/var/lib/cni/networks")  # host-local's default dataDir
DEFAULT_BRIDGE = "cni0"


class SettingsError(Exception):
    """The conflist or subnet.env cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class SharedSettings:
    """The CNI network's settings the plugin follows."""

    network_name: str
    subnet_file: Path
    store_dir: Path  # host-local's directory for this network: <dataDir>/<name>
    bridge: str
    hairpin: bool
    mtu: int | None  # the delegate's own "mtu", which wins over FLANNEL_MTU as in the CNI plugin


@dataclass(frozen=True)
class HostPool:
    """This host's subnet as a container sees it."""

    subnet: IPv4Network
    gateway: IPv4Address
    mtu: int
    overlay: IPv4Network  # FLANNEL_NETWORK: routed through the gateway, as the CNI plugin routes it

    @property
    def gateway_cidr(self) -> str:
        return f"{self.gateway}/{self.subnet.prefixlen}"


def read_shared_settings(conflist_path: Path) -> SharedSettings:
    """The first ``"type": "flannel"`` entry of the conflist, read as the CNI plugin reads it."""
    try:
        conflist = json.loads(conflist_path.read_text())
    except (OSError, ValueError) as err:
        raise SettingsError(f"cannot read conflist {conflist_path}: {err}; pass --conflist PATH") from None
    plugins = conflist.get("plugins") if isinstance(conflist, dict) else None
    name = conflist.get("name") if isinstance(conflist, dict) else None
    entries = [p for p in plugins or [] if isinstance(p, dict) and p.get("type") == "flannel"]
    if not isinstance(name, str) or not entries:
        raise SettingsError(
            f'{conflist_path}: needs a "name" and a plugin of "type": "flannel" '
            "(as deploy/10-flannel.conflist); pass --conflist PATH"
        )
    try:
        conf = parse_conf({**entries[0], "name": name}, str(conflist.get("cniVersion", "1.0.0")))
    except CniError as err:
        raise SettingsError(f"{conflist_path}: {err.msg}") from None
    delegate = conf.delegate
    mtu = delegate.get("mtu")
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int) or mtu < 68):
        raise SettingsError(
            f'{conflist_path}: "delegate.mtu" {mtu!r} is not an MTU; use e.g. 1450 or leave it out'
        )
    data_dir = conf.ipam.get("dataDir", str(HOST_LOCAL_DATA_DIR))
    return SharedSettings(
        network_name=name,
        subnet_file=Path(conf.subnet_file),
        store_dir=Path(str(data_dir)) / name,
        bridge=str(delegate.get("bridge", DEFAULT_BRIDGE)),
        hairpin=bool(delegate.get("hairpinMode", False)),
        mtu=mtu,
    )


def parse_host_pool(text: str, source: str, mtu_override: int | None = None) -> HostPool:
    """FLANNEL_SUBNET, FLANNEL_NETWORK and FLANNEL_MTU; SettingsError naming ``source`` and the key.

    The gateway is FLANNEL_SUBNET's own address (flannel writes ``.1``), or the subnet's first
    address when the file names the bare network: the CNI plugin's rule, so both agree.
    """
    values = parse_keys(text)
    if "FLANNEL_SUBNET" not in values and "FLANNEL_NETWORK" not in values and "FLANNEL_IPV6_SUBNET" in values:
        raise SettingsError(
            f"{source} is an IPv6-only network's (FLANNEL_IPV6_SUBNET {values['FLANNEL_IPV6_SUBNET']}, no "
            "FLANNEL_SUBNET): the Docker network plugin gives containers IPv4 addresses only; attach "
            "them with the CNI plugin (overlayd cni), which gives them IPv6 ones"
        )
    try:
        subnet = IPv4Interface(values["FLANNEL_SUBNET"])
        overlay = IPv4Network(values["FLANNEL_NETWORK"], strict=False)
        mtu = int(values["FLANNEL_MTU"])
    except KeyError as err:
        raise SettingsError(f"{source} has no {err.args[0]}; is the agent running on this host?") from None
    except ValueError as err:
        raise SettingsError(f"{source}: {err}; the agent rewrites it on its next start") from None
    gateway = subnet.ip if subnet.ip != subnet.network.network_address else subnet.network.network_address + 1
    return HostPool(subnet.network, gateway, mtu_override or mtu, overlay)


def read_host_pool(settings: SharedSettings) -> HostPool:
    try:
        text = settings.subnet_file.read_text()
    except OSError as err:
        raise SettingsError(
            f"cannot read {settings.subnet_file} ({err.strerror}); the agent writes it once it "
            "holds a lease: start `overlayd run` on this host"
        ) from None
    return parse_host_pool(text, str(settings.subnet_file), settings.mtu)
