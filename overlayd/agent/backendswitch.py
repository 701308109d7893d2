"""The network config the previous run programmed, kept in the state directory, so that a switch
to another backend removes what the old one left on this host (its device, its routes).

A running agent switches in place when the config names another backend (``switch_live``); one
that was stopped meanwhile reads the config kept here at its next start and, when its backend
differs, asks that backend to ``remove`` what it set up for it (``switch_backend``). Either way
the config in force is then kept for the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from overlayd.backend.api import Backend, BackendError, HostFacts
from overlayd.backend.select import CONFIG_PARSERS, backend_for
from overlayd.base.atomicfile import write_atomic
from overlayd.subnet.config import BackendParsers, ConfigError, NetworkConfig, parse_network_config
from overlayd.subnet.lease import LeaseAttrs

log = logging.getLogger(__name__)


def record_path(state_dir: Path) -> Path:
    return state_dir / "network-config.json"


def previous_config(path: Path, parsers: BackendParsers = CONFIG_PARSERS) -> NetworkConfig | None:
    """The config the previous run kept at ``path``; None if there is none or it cannot be read
    (named in a warning: what an earlier backend left is then not removed)."""
    try:
        return parse_network_config(path.read_bytes(), where=str(path), backends=parsers)
    except FileNotFoundError:
        return None
    except (OSError, ConfigError) as exc:
        log.warning("cannot read the previous run's config (%s); if it used another backend, remove "
                    "its device by hand", exc)  # fmt: skip
        return None


def switch_backend(
    state_dir: Path,
    config: NetworkConfig,
    raw: bytes,
    parsers: BackendParsers = CONFIG_PARSERS,
    make: Callable[[str, str], Backend] = backend_for,
) -> list[str]:
    """Remove what the previous run's backend left if ``config`` names another, then keep
    ``raw`` (``config`` as stored) for the next run. Returns the removals. A removal that fails is
    logged and the old config kept, so the next start tries again; raises OSError if the state
    directory cannot keep the record."""
    path = record_path(state_dir)
    previous = previous_config(path, parsers)
    actions: list[str] = []
    if previous is not None and previous.backend.type != config.backend.type:
        old = make(previous.backend.type, str(path))
        log.warning("the network config switched backend from %s to %s; removing what %s left",
                    previous.backend.type, config.backend.type, previous.backend.type)  # fmt: skip
        try:
            actions = old.remove(previous)
        except Exception as exc:  # the new backend can still run; the next start retries
            log.error("could not remove what backend %s left (%s); the next start tries again",
                      previous.backend.type, exc)  # fmt: skip
            return actions
        finally:
            old.close()
        for action in actions:
            log.info("backend %s: %s", previous.backend.type, action)
    write_atomic(path, raw.decode(), 0o600)
    return actions


@dataclass(frozen=True)
class Switched:
    """The backend a live switch brought in, and what this host's lease publishes under it."""

    backend: Backend
    attrs: LeaseAttrs


def switch_live(
    old: Backend,
    old_config: NetworkConfig,
    config: NetworkConfig,
    raw: bytes,
    host: HostFacts,
    make: Callable[[str, str], Backend] = backend_for,
) -> Switched | None:
    """Bring in ``config``'s backend while running: asked first whether this host can run it
    (None, logged, if not: the old one keeps serving), then the old backend's kernel state is
    removed and ``raw`` kept as the config in force for the next start. The caller programs the
    new backend (device, entries, firewall) with a fresh lease value and a full pass."""
    new = make(config.backend.type, str(record_path(host.state_dir)))
    try:
        attrs = new.lease_data(config, host)
    except (BackendError, OSError) as exc:
        new.close()
        log.error("cannot switch to backend %s (%s); backend %s keeps running", config.backend.type, exc,
                  old_config.backend.type)  # fmt: skip
        return None
    try:
        for action in old.remove(old_config):
            log.info("backend %s: %s", old_config.backend.type, action)
    except Exception as exc:  # the new backend can still run; a later start retries the removal
        log.error("could not remove what backend %s left (%s)", old_config.backend.type, exc)
    else:
        try:
            write_atomic(record_path(host.state_dir), raw.decode(), 0o600)
        except OSError as exc:
            log.error("cannot keep the network config in force in %s (%s); a restart removes what "
                      "backend %s left again", host.state_dir, exc, old_config.backend.type)  # fmt: skip
    old.close()
    log.info("switched backend %s -> %s", old_config.backend.type, config.backend.type)
    return Switched(new, attrs)
