"""The network config the previous run programmed, kept in the state directory, so that a switch
to another backend removes what the old one left on this host (its device, its routes).

A running agent restarts when the config names another backend (its ``restart_key``); the new
run reads the config kept here and, when its backend differs, asks that backend to ``remove``
what it set up for it. Then the config in force is kept for the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from overlayd.backend.api import Backend
from overlayd.backend.select import CONFIG_PARSERS, backend_for
from overlayd.base.atomicfile import write_atomic
from overlayd.subnet.config import BackendParsers, ConfigError, NetworkConfig, parse_network_config

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
