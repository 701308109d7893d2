"""The backends overlayd has, by the ``Type`` a network config names them with.

A new backend is a folder under ``overlayd/backend/`` whose class satisfies
``overlayd.backend.api.Backend``, added to ``BACKENDS`` here. Whoever parses a network config
passes ``CONFIG_PARSERS``; ``install`` hands the backends' lease codecs down to ``overlayd.subnet``,
which decodes leases below this layer (for ``overlayd.etcd``) and cannot import them; the command
line calls it at start.
"""

from __future__ import annotations

from overlayd.backend.api import Backend
from overlayd.backend.vxlan.backend import Vxlan
from overlayd.backend.wireguard.backend import Wireguard
from overlayd.subnet.config import BackendParsers, ConfigError
from overlayd.subnet.lease import install_backend_data

BACKENDS: dict[str, type[Backend]] = {Vxlan.type: Vxlan, Wireguard.type: Wireguard}
# What a config without Backend.Type means: overlayd's one backend, before there were others.
DEFAULT_TYPE = Vxlan.type
CONFIG_PARSERS = BackendParsers(
    parsers={name: backend.parse_config for name, backend in BACKENDS.items()}, default_type=DEFAULT_TYPE
)


def backend_for(backend_type: str, where: str = "network config") -> Backend:
    """A new instance of the backend ``backend_type``; ConfigError, as the config parser words
    it, for a type overlayd does not have."""
    backend = BACKENDS.get(backend_type.lower())
    if backend is None:
        raise ConfigError(
            f"{where}: Backend.Type {backend_type!r} is invalid; overlayd supports {', '.join(BACKENDS)}"
        )
    return backend()


def install() -> None:
    """Hand the backends' lease codecs down to ``overlayd.subnet``."""
    for name, backend in BACKENDS.items():
        install_backend_data(name, backend.data_codec)
