"""extension behind the backend seam (``overlayd.backend.api.Backend``), as flanneld's extension
backend: ``PreStartupCommand``'s output is this host's BackendData, ``PostStartupCommand`` runs once
the subnet is held, and each peer lease gets ``SubnetAddCommand`` and, when it goes,
``SubnetRemoveCommand`` (``runner``). What the commands build is theirs: no device is ours.

The inputs are flanneld's (its source, which its Documentation/extension.md leaves partly out):
every command runs as ``sh -c`` in the agent's environment; ``PreStartupCommand`` gets nothing more
and a newline on stdin, and its trimmed combined stdout and stderr, as a JSON string, is the
lease's BackendData (none at all without the command); ``PostStartupCommand`` gets ``NETWORK``,
``SUBNET`` and ``PUBLIC_IP`` of this host; the peer commands get the peer's ``SUBNET`` and
``PUBLIC_IP``, and its BackendData string and a newline on stdin.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

from overlayd.backend.api import NO_DEVICE, BackendError, DeviceState, HostFacts, Ipv6Support, PeerActions
from overlayd.backend.deviceless import NoDevice
from overlayd.backend.extension.command import run_command, shown
from overlayd.backend.extension.config import TYPE, ExtensionConfig, config_fields, parse_extension_config
from overlayd.backend.extension.runner import OWN, CommandRunner, OwnStart
from overlayd.backend.section import section_of
from overlayd.base.gojson import go_string, go_trimmed_output
from overlayd.subnet.config import BackendSettings, NetworkConfig
from overlayd.subnet.lease import MAX_VALUE_BYTES, Lease, LeaseAttrs, encode_attrs

log = logging.getLogger(__name__)

RECORD = "extension-peers.json"  # in the state directory: the peers SubnetAddCommand ran for


def settings(config: NetworkConfig) -> ExtensionConfig:
    return section_of(config, ExtensionConfig, TYPE)


def record_path(state_dir: Path) -> Path:
    return state_dir / RECORD


class Extension(NoDevice):
    """The extension backend; its commands run on the runner's threads once ``ensure`` made it."""

    type: ClassVar[str] = TYPE
    data_codec: ClassVar[None] = None  # its BackendData is a JSON string, kept whole
    parse_config = staticmethod(parse_extension_config)
    routes_traffic: ClassVar[bool] = False  # only if its commands make routes
    ipv6_support: ClassVar[Ipv6Support] = Ipv6Support.NONE  # its commands get flanneld's IPv4 leases

    def __init__(self) -> None:
        self._runner: CommandRunner | None = None

    def config_fields(self, config: BackendSettings) -> dict[str, object]:
        assert isinstance(config, ExtensionConfig)
        return config_fields(config)

    def lease_data(self, config: NetworkConfig, host: HostFacts) -> LeaseAttrs:
        """Our PublicIP and, with a ``PreStartupCommand``, its output as BackendData; raises
        BackendError (the agent retries) if it fails, where flanneld exits."""
        section = settings(config)
        if not section.pre_startup:
            log.info("no PreStartupCommand: the lease carries no BackendData")
            return LeaseAttrs(public_ip=host.public_ip, backend_type=TYPE)
        try:
            result = run_command(section.pre_startup, {}, "", section.timeout, combined=True)
        except OSError as exc:
            raise BackendError(f"PreStartupCommand could not be started: {exc}") from None
        if not result.ok:
            raise BackendError(
                f"PreStartupCommand {result.failure(section.timeout)}; the lease waits for it to succeed"
            )
        data = go_string(go_trimmed_output(result.stdout))
        attrs = LeaseAttrs(public_ip=host.public_ip, backend_type=TYPE, extra_backend_data=data)
        if (size := len(encode_attrs(attrs).encode())) > MAX_VALUE_BYTES:
            raise BackendError(
                f"PreStartupCommand printed {len(result.stdout)} bytes, a lease of {size} bytes, and peers "
                f"read leases of at most {MAX_VALUE_BYTES}; have it print only what peers need (a MAC, "
                "an address) and send the rest to a file or /dev/null"
            )
        log.info("PreStartupCommand done; its output is this lease's BackendData: %s", shown(result.stdout))
        return attrs

    def ensure(self, config: NetworkConfig, own: Lease, host: HostFacts) -> tuple[DeviceState, list[str]]:
        """No device: start the runner (once) and have it run ``PostStartupCommand`` for ``own``;
        raises BackendError while that command fails, so the pass, and readiness, say so."""
        if self._runner is None:
            self._runner = CommandRunner(settings(config), record_path(host.state_dir))
        self._runner.start(OwnStart(str(config.network), str(own.subnet), str(host.public_ip)))
        if why := self._runner.failing().get(OWN):
            raise BackendError(f"PostStartupCommand {why}; it is retried, and peers' commands wait for it")
        return NO_DEVICE, []

    def peer_actions(self) -> PeerActions | None:
        return self._runner

    def drift_probe(self, config: NetworkConfig) -> None:
        return None  # netlink reports every change of its state, or it has none

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None
