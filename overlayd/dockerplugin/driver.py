"""libnetwork's remote NetworkDriver and IpamDriver: one request body in, one response object out.

Protocol (moby/libnetwork docs/remote.md, ipams/remote/api): dockerd POSTs JSON to
``/<Interface>.<Method>`` and reads JSON back; a failure is ``{"Err": "..."}``. Everything here
is decided from the request, the saved state, ``subnet.env`` and the address store; the kernel
work goes through the ``Links`` given in, so the decisions are tested without root.

The pool is this host's subnet only: ``RequestPool`` hands it out (with its gateway, so dockerd
asks for no gateway address of its own), ``RequestAddress`` reserves in host-local's store,
``Join`` makes the veth pair on the CNI bridge and names the gateway and the overlay route a
CNI-attached container gets.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, Protocol

from overlayd.dockerplugin.hoststore import HostLocalStore, StoreError
from overlayd.dockerplugin.settings import HostPool, SettingsError, SharedSettings
from overlayd.dockerplugin.state import EndpointRecord, NetworkRecord, PluginState, StateFile

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
GATEWAY_LABEL = "com.docker.network.gateway"  # libnetwork netlabel.Gateway
REQUEST_ADDRESS_TYPE = "RequestAddressType"  # libnetwork ipamapi.RequestAddressType
ADDRESS_SPACE = "overlayd"
_ID = re.compile(r"^[0-9A-Za-z]{12,128}$")
NAME_LENGTH = 12  # of the endpoint ID in the veth names: "ovd"/"ovc" + 12 = 15, the kernel's limit


class RequestError(Exception):
    """A request that cannot be served; its message goes back to dockerd as ``{"Err": ...}``."""


class LinkPort(Protocol):
    def ensure_bridge(self, name: str, gateway: str, prefixlen: int, mtu: int) -> int: ...

    def add_veth(
        self, host_end: str, container_end: str, bridge_index: int, mtu: int, hairpin: bool
    ) -> None: ...

    def remove(self, name: str) -> bool: ...


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]


def veth_names(endpoint_id: str) -> tuple[str, str]:
    """(host end, container end) of an endpoint's veth pair, derived from its ID alone, so a
    restarted plugin finds them without any record."""
    return f"ovd{endpoint_id[:NAME_LENGTH]}", f"ovc{endpoint_id[:NAME_LENGTH]}"


def _text(body: dict[str, Any], key: str, required: bool = True) -> str:
    value = body.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise RequestError(f"{key} {value!r} is not a string")
    if required and not value:
        raise RequestError(f"{key} is missing from the request")
    return value


def _id(body: dict[str, Any], key: str) -> str:
    value = _text(body, key)
    if not _ID.match(value):
        raise RequestError(f"{key} {value!r} is not a Docker ID (12 to 128 letters and digits)")
    return value


def _object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key) or {}
    if not isinstance(value, dict):
        raise RequestError(f"{key} {value!r} is not an object")
    return value


class DockerPlugin:
    """The request handlers; one request at a time (dockerd sends few, and state stays simple)."""

    def __init__(
        self,
        settings: SharedSettings,
        read_pool: Callable[[], HostPool],
        store: HostLocalStore,
        links: LinkPort,
        state_file: StateFile,
    ) -> None:
        self.settings = settings
        self.read_pool = read_pool
        self.store = store
        self.links = links
        self.state_file = state_file
        self.state: PluginState = state_file.load()
        self.lock = threading.Lock()
        self.bridge_index: int | None = None
        self.pools_out = 0  # RequestPool answers not yet released (since this start)
        self.handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "Plugin.Activate": lambda _: {"Implements": ["NetworkDriver", "IpamDriver"]},
            "NetworkDriver.GetCapabilities": lambda _: {"Scope": "local", "ConnectivityScope": "local"},
            "NetworkDriver.CreateNetwork": self.create_network,
            "NetworkDriver.DeleteNetwork": self.delete_network,
            "NetworkDriver.CreateEndpoint": self.create_endpoint,
            "NetworkDriver.EndpointOperInfo": self.endpoint_info,
            "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.leave,
            "NetworkDriver.DiscoverNew": lambda _: {},
            "NetworkDriver.DiscoverDelete": lambda _: {},
            "NetworkDriver.ProgramExternalConnectivity": self.known_endpoint,
            "NetworkDriver.RevokeExternalConnectivity": lambda _: {},
            "IpamDriver.GetCapabilities": lambda _: {
                "RequiresMACAddress": False, "RequiresRequestReplay": False},
            "IpamDriver.GetDefaultAddressSpaces": lambda _: {
                "LocalDefaultAddressSpace": ADDRESS_SPACE, "GlobalDefaultAddressSpace": ADDRESS_SPACE},
            "IpamDriver.RequestPool": self.request_pool,
            "IpamDriver.ReleasePool": self.release_pool,
            "IpamDriver.RequestAddress": self.request_address,
            "IpamDriver.ReleaseAddress": self.release_address,
        }  # fmt: skip

    def handle(self, method: str, body: Any) -> Reply:
        """The reply to POST ``/<method>`` with JSON ``body`` (None for an empty one). Never raises
        for a bad request: every problem becomes ``{"Err": ...}`` naming it."""
        handler = self.handlers.get(method)
        if handler is None:
            return Reply(
                404, {"Err": f"unknown method {method!r}: this plugin serves {', '.join(self.handlers)}"}
            )
        if body is None:
            body = {}
        if not isinstance(body, dict):
            return Reply(
                400, {"Err": f"{method}: the request body must be a JSON object, not {body!r}"[:300]}
            )
        with self.lock:
            started = time.perf_counter()
            try:
                return Reply(200, handler(body))
            except (RequestError, StoreError, SettingsError) as err:
                log.warning("%s refused: %s", method, err)
                return Reply(500, {"Err": f"{method}: {err}"})
            except Exception as err:  # a kernel or disk failure must not take the plugin down
                log.exception("%s failed", method)
                return Reply(500, {"Err": f"{method}: {type(err).__name__}: {err}"})
            finally:  # read by `overlayd bench --only docker`
                log.debug("served %s in %.3f ms", method, (time.perf_counter() - started) * 1000)

    # ---- IPAM --------------------------------------------------------------------------------

    def request_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        pool = self.read_pool()
        if body.get("V6"):
            raise RequestError("IPv6 pools are not served; create the network without --ipv6")
        wanted = _text(body, "Pool", required=False)
        if wanted and _network(wanted, "Pool") != pool.subnet:
            raise RequestError(
                f"Pool {wanted} is not this host's subnet {pool.subnet} (from "
                f"{self.settings.subnet_file}); give --subnet {pool.subnet} or leave it out"
            )
        if _text(body, "SubPool", required=False):
            raise RequestError(
                f"SubPool {body['SubPool']} (--ip-range) is not supported: Docker and CNI "
                f"containers share the whole of {pool.subnet}; leave --ip-range out"
            )
        if not wanted and self.pools_out:
            # dockerd (20.10 at least) asks again, holding the first answer, when the pool overlaps a
            # link route of the host: ours always would, so it would ask for ever.
            raise RequestError(
                f"this host's subnet {pool.subnet} is routed here already (the bridge {self.settings.bridge} "
                f"carries it once a CNI container or another overlayd network runs), which dockerd refuses "
                f"for a pool it did not name; name it: docker network create -d overlayd --ipam-driver "
                f"overlayd --subnet {pool.subnet} NAME"
            )
        self.pools_out += 1
        return {
            "PoolID": str(pool.subnet),
            "Pool": str(pool.subnet),
            "Data": {GATEWAY_LABEL: pool.gateway_cidr},
        }

    def release_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        _text(body, "PoolID")
        self.pools_out = max(0, self.pools_out - 1)
        return {}

    def request_address(self, body: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool_of(_text(body, "PoolID"))
        options = _object(body, "Options")
        wanted_text = _text(body, "Address", required=False)
        wanted = _address(wanted_text, "Address") if wanted_text else None
        if options.get(REQUEST_ADDRESS_TYPE) == GATEWAY_LABEL:
            if wanted not in (None, pool.gateway):
                raise RequestError(
                    f"gateway {wanted} is not this host's gateway {pool.gateway}; leave --gateway out"
                )
            return {"Address": pool.gateway_cidr, "Data": {}}
        address = self.store.reserve(pool.subnet, pool.gateway, wanted, "docker")
        log.info("reserved %s in %s for a Docker container", address, pool.subnet)
        return {"Address": f"{address}/{pool.subnet.prefixlen}", "Data": {}}

    def release_address(self, body: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool_of(_text(body, "PoolID"))
        address = _address(_text(body, "Address"), "Address")
        if address != pool.gateway and self.store.release(address):
            log.info("released %s in %s", address, pool.subnet)
        return {}

    def _pool_of(self, pool_id: str) -> HostPool:
        pool = self.read_pool()
        if _network(pool_id, "PoolID") != pool.subnet:
            raise RequestError(
                f"PoolID {pool_id} is no longer this host's subnet {pool.subnet} (the agent took "
                "another lease); remove the network and create it again"
            )
        return pool

    # ---- networks and endpoints ---------------------------------------------------------------

    def create_network(self, body: dict[str, Any]) -> dict[str, Any]:
        network_id = _id(body, "NetworkID")
        pool = self.read_pool()
        if body.get("IPv6Data"):
            raise RequestError("IPv6 is not served; create the network without --ipv6")
        data = body.get("IPv4Data") or []
        if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
            raise RequestError(
                f"IPv4Data {data!r} must hold exactly one pool; create the network with "
                "--ipam-driver overlayd"
            )
        given = _text(data[0], "Pool")
        if _network(given, "IPv4Data.Pool") != pool.subnet:
            raise RequestError(
                f"pool {given} is not this host's subnet {pool.subnet}; create the network with "
                "--ipam-driver overlayd (docker network create -d overlayd --ipam-driver overlayd NAME)"
            )
        self.bridge_index = None
        self._bridge(pool)
        self.state.networks[network_id] = NetworkRecord(network_id, str(pool.subnet), str(pool.gateway))
        self._save()
        log.info("network %s: %s on bridge %s", network_id[:12], pool.subnet, self.settings.bridge)
        return {}

    def delete_network(self, body: dict[str, Any]) -> dict[str, Any]:
        network_id = _id(body, "NetworkID")
        if self.state.networks.pop(network_id, None) is not None:
            self._save()
            log.info("network %s removed (the bridge stays: CNI containers share it)", network_id[:12])
        return {}

    def create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        network = self._network(_id(body, "NetworkID"))
        endpoint_id = _id(body, "EndpointID")
        interface = _object(body, "Interface")
        if _text(interface, "AddressIPv6", required=False):
            raise RequestError("IPv6 addresses are not served")
        address_text = _text(interface, "Address", required=False)
        if not address_text:
            raise RequestError(
                "Interface.Address is missing: the network's addresses come from the IPAM "
                "driver; create the network with --ipam-driver overlayd"
            )
        try:
            address = IPv4Interface(address_text)
        except ValueError:
            raise RequestError(f"Interface.Address {address_text!r} is not an IPv4 address/length") from None
        if address.network != IPv4Network(network.pool):
            raise RequestError(
                f"Interface.Address {address_text} is outside the network's pool {network.pool}"
            )
        host_end, _ = veth_names(endpoint_id)
        self.state.endpoints[endpoint_id] = EndpointRecord(
            endpoint_id, network.network_id, address_text, host_end
        )
        self._save()
        return {}  # an Interface was given, so the reply's must stay empty (remote.md)

    def endpoint_info(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._endpoint(body)
        return {"Value": {"address": endpoint.address, "host_veth": endpoint.host_veth}}

    def known_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        self._endpoint(body)
        return {}

    def delete_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        _id(body, "NetworkID")
        endpoint_id = _id(body, "EndpointID")
        for name in veth_names(endpoint_id):
            self.links.remove(name)
        if self.state.endpoints.pop(endpoint_id, None) is not None:
            self._save()
        return {}

    def join(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._endpoint(body)
        network = self._network(endpoint.network_id)
        pool = self.read_pool()
        if str(pool.subnet) != network.pool:
            raise RequestError(
                f"network {network.network_id[:12]} was made for {network.pool}, but this host's "
                f"subnet is now {pool.subnet}; remove the network and create it again"
            )
        host_end, container_end = veth_names(endpoint.endpoint_id)
        try:
            self.links.add_veth(host_end, container_end, self._bridge(pool), pool.mtu, self.settings.hairpin)
        except Exception:  # the bridge deleted or changed since it was checked: check it, then once more
            self.bridge_index = None
            self.links.add_veth(host_end, container_end, self._bridge(pool), pool.mtu, self.settings.hairpin)
        log.info(
            "endpoint %s: %s on %s via %s",
            endpoint.endpoint_id[:12],
            endpoint.address,
            host_end,
            self.settings.bridge,
        )
        return {
            "InterfaceName": {"SrcName": container_end, "DstPrefix": "eth"},
            "Gateway": network.gateway,
            "StaticRoutes": [{"Destination": str(pool.overlay), "RouteType": 0, "NextHop": network.gateway}],
        }

    def _bridge(self, pool: HostPool) -> int:
        """The bridge's index, checked (and made if need be) on the first Join after a start or a
        failure, and when a network is created: a check on every Join is half its cost."""
        if self.bridge_index is None:
            self.bridge_index = self.links.ensure_bridge(
                self.settings.bridge, str(pool.gateway), pool.subnet.prefixlen, pool.mtu
            )
        return self.bridge_index

    def leave(self, body: dict[str, Any]) -> dict[str, Any]:
        """Nothing to undo (the veth goes with DeleteEndpoint, which follows); like it, no error
        for an endpoint already gone, so dockerd can always take a container down."""
        _id(body, "NetworkID")
        _id(body, "EndpointID")
        return {}

    def _network(self, network_id: str) -> NetworkRecord:
        network = self.state.networks.get(network_id)
        if network is None:
            raise RequestError(
                f"network {network_id[:12]} is unknown to this plugin (created with another "
                "driver, or before its state file was lost); create it again"
            )
        return network

    def _endpoint(self, body: dict[str, Any]) -> EndpointRecord:
        _id(body, "NetworkID")
        endpoint_id = _id(body, "EndpointID")
        endpoint = self.state.endpoints.get(endpoint_id)
        if endpoint is None:
            raise RequestError(f"endpoint {endpoint_id[:12]} is unknown to this plugin")
        return endpoint

    def _save(self) -> None:
        self.state_file.save(self.state)


def _network(text: str, key: str) -> IPv4Network:
    try:
        return IPv4Network(text, strict=False)
    except ValueError:
        raise RequestError(f"{key} {text!r} is not an IPv4 network in CIDR form") from None


def _address(text: str, key: str) -> IPv4Address:
    try:
        return IPv4Interface(text).ip
    except ValueError:
        raise RequestError(f"{key} {text!r} is not an IPv4 address") from None
