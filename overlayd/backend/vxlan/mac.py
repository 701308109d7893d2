"""A VTEP MAC that stays the same across agent restarts and device re-creation.

Peers program our MAC into their neighbour and FDB tables from our lease. If the MAC changed each
time ``flannel.<VNI>`` is recreated, every peer would have to see a lease update before traffic to
us flows again; keeping it in a small state file avoids that window entirely.
"""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path

from overlayd.base.atomicfile import write_atomic

log = logging.getLogger(__name__)

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def is_valid_vtep_mac(mac: str) -> bool:
    """True for a lowercase colon-separated unicast MAC other than all zeros."""
    if not _MAC_RE.match(mac):
        return False
    first_octet = int(mac[:2], 16)
    return not first_octet & 0x01 and mac != "00:00:00:00:00:00"


def random_vtep_mac() -> str:
    """A random locally administered unicast MAC (like the kernel's random device MACs)."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{octet:02x}" for octet in octets)


def mac_path(state_dir: Path, vni: int, ipv6: bool = False) -> Path:
    """Where the VTEP MAC of one VNI is kept (``ipv6``: the IPv6 device's, a MAC of its own)."""
    return state_dir / (f"vtep-mac-v6-{vni}" if ipv6 else f"vtep-mac-{vni}")


def load_or_create_mac(state_dir: Path, vni: int, adopt: str | None = None, ipv6: bool = False) -> str:
    """Return the VTEP MAC for ``vni``, persisted in ``<state_dir>/vtep-mac-<vni>`` (``ipv6``:
    ``vtep-mac-v6-<vni>``, for ``flannel-v6.<VNI>``).

    ``adopt`` (the MAC of a compatible device left by flanneld or an earlier run) wins over the
    file, so peers that already know that MAC keep working; otherwise the file's MAC is used, and
    a missing or corrupt file gets a fresh random MAC.
    """
    path = mac_path(state_dir, vni, ipv6)
    stored = _read_mac(path)
    if adopt is not None:
        mac = adopt.lower()
        if not is_valid_vtep_mac(mac):
            raise ValueError(f"cannot adopt VTEP MAC {adopt!r}: not a unicast MAC address")
        if mac != stored:
            _save(path, mac)
            log.info("adopted VTEP MAC %s of the existing device for VNI %d (saved in %s)",
                     mac, vni, path)
        return mac
    if stored is not None:
        return stored
    mac = random_vtep_mac()
    _save(path, mac)
    log.info("generated VTEP MAC %s for VNI %d (saved in %s)", mac, vni, path)
    return mac


def _read_mac(path: Path) -> str | None:
    """The MAC stored at ``path``; None if the file is missing or does not hold a valid MAC."""
    try:
        content = path.read_text(encoding="ascii").strip().lower()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        log.warning("VTEP MAC file %s is unreadable (%s); replacing it", path, err)
        return None
    if not is_valid_vtep_mac(content):
        log.warning("VTEP MAC file %s holds %r, not a unicast MAC; replacing it", path, content[:40])
        return None
    return content


def _save(path: Path, mac: str) -> None:
    """Write the MAC file 0600 in a 0700 state directory: agent state is nobody else's business."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    write_atomic(path, mac + "\n", mode=0o600)
