"""What every backend's ``Backend`` section shares: the typed section out of a network config,
and the section of a backend that has no keys of its own (alloc, host-gw)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from overlayd.subnet.config import BackendSettings, NetworkConfig

Section = TypeVar("Section", bound=BackendSettings)


def section_of(config: NetworkConfig, kind: type[Section], backend_type: str) -> Section:
    """``config``'s Backend section, which must be a ``kind``: a backend handed another backend's
    config is a bug in the caller, not an operator's mistake."""
    backend = config.backend
    if not isinstance(backend, kind):
        raise TypeError(f"a {backend.type} network config was handed to the {backend_type} backend")
    return backend


def type_change(previous: BackendSettings, current: BackendSettings) -> str:
    """The restart reason of a change of backend: ``Backend vxlan -> udp``."""
    return f"Backend {previous.type} -> {current.type}"


@dataclass(frozen=True)
class KeylessSection:
    """A section with no keys of its own; any key is ignored, as flanneld ignores it. Only a change
    of type restarts anything."""

    type: str
    summary: str

    @property
    def restart_key(self) -> tuple[object, ...]:
        return (self.type,)

    def restart_reason(self, previous: BackendSettings) -> str:
        return type_change(previous, self)
