"""This host's WireGuard key pair: X25519 from ``cryptography``, the private key in a 0600 file.

flanneld keeps the key in ``/run/flannel/wgkey`` (``WIREGUARD_KEY_FILE`` overrides it), which a
reboot loses, and every peer then needs our new lease before traffic flows again. We keep it in
the state directory unless ``WIREGUARD_KEY_FILE`` names another file. The private key is read
into memory only to derive the public key; the device reads it from the file itself.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from overlayd.backend.api import BackendError
from overlayd.base.atomicfile import write_atomic

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

log = logging.getLogger(__name__)

KEY_FILE_ENV = "WIREGUARD_KEY_FILE"
KEY_FILE_NAME = "wireguard-key"
KEY_BYTES = 32


class BadKey(BackendError):
    """A WireGuard key that is not 32 bytes of base64; the message never holds the value."""


def parse_key(raw: object) -> str:
    """``raw`` as a canonical base64 WireGuard key (public, private or preshared); BadKey else."""
    if not isinstance(raw, str):
        raise BadKey("not a string")
    try:
        decoded = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadKey("not base64") from None
    if len(decoded) != KEY_BYTES:
        raise BadKey(f"{len(decoded)} bytes, not {KEY_BYTES}")
    return base64.b64encode(decoded).decode("ascii")


@dataclass(frozen=True)
class KeyPair:
    """Where the private key lives and the public key derived from it (what the lease carries)."""

    private_key_file: Path
    public_key: str


def key_file(state_dir: Path) -> Path:
    """``WIREGUARD_KEY_FILE`` if set, as flanneld reads it; else the state directory's key file."""
    override = os.environ.get(KEY_FILE_ENV)
    return Path(override) if override else state_dir / KEY_FILE_NAME


def load_or_create_key(path: Path) -> KeyPair:
    """The key pair whose private half is in ``path``; a new one if ``path`` does not exist.

    A file that exists but holds no key is an error, not replaced: replacing it would change our
    public key under every peer's feet, and an operator may have put it there.
    """
    # Imported here: ~30 ms and several MB that an agent on any other backend never needs.
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        private = X25519PrivateKey.generate()
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, base64.b64encode(raw).decode("ascii") + "\n", mode=0o600)
        log.info("generated a new WireGuard key pair (private key in %s)", path)
        return KeyPair(path, _public(private))
    except (OSError, UnicodeDecodeError) as err:
        raise BadKey(f"WireGuard private key file {path} is unreadable ({err}); fix its "
                        f"permissions, or remove it to have a new key generated") from None
    try:
        raw = base64.b64decode(parse_key(text))
    except BadKey as err:
        raise BadKey(f"WireGuard private key file {path} holds no key ({err}); write one with "
                        f"`wg genkey > {path}`, or remove it to have a new key generated") from None
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
        log.warning("WireGuard private key file %s was readable by others; made it 0600", path)
    return KeyPair(path, _public(X25519PrivateKey.from_private_bytes(raw)))


def _public(private: X25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")
