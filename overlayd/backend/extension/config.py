"""The extension backend's ``Backend`` section: flannel's four commands, and overlayd's timeout."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from overlayd.subnet.config import BackendSettings, ConfigFields

TYPE = "extension"
# flanneld waits for a command forever; a hung one then stops every later peer's. Ours is killed.
DEFAULT_TIMEOUT = 60
MAX_TIMEOUT = 3600
EXAMPLE = "ip route replace $SUBNET via $PUBLIC_IP"


@dataclass(frozen=True)
class ExtensionConfig:
    type: str = TYPE
    pre_startup: str = ""  # PreStartupCommand: its output is this host's BackendData
    post_startup: str = ""  # PostStartupCommand: once this host holds its subnet
    subnet_add: str = ""  # SubnetAddCommand: per peer lease added (or written again)
    subnet_remove: str = ""  # SubnetRemoveCommand: per peer lease removed
    timeout: int = DEFAULT_TIMEOUT  # CommandTimeout (seconds): overlayd's key; flanneld ignores it

    @property
    def restart_key(self) -> tuple[object, ...]:
        """Any change: the data path the commands built is theirs to rebuild, from the start."""
        return tuple(getattr(self, item.name) for item in fields(self))

    @property
    def summary(self) -> str:
        named = [key for key, attr in KEYS.items() if getattr(self, attr)]
        return f"commands {', '.join(named) or 'none'}, timeout {self.timeout} s"

    def restart_reason(self, previous: BackendSettings) -> str:
        if not isinstance(previous, ExtensionConfig):
            return f"Backend {previous.type} -> {self.type}"
        changed = [key for key, attr in (*KEYS.items(), ("CommandTimeout", "timeout"))
                   if getattr(previous, attr) != getattr(self, attr)]  # fmt: skip
        return f"{', '.join(changed)} changed"


# flannel's keys, and the field each fills.
KEYS = {
    "PreStartupCommand": "pre_startup",
    "PostStartupCommand": "post_startup",
    "SubnetAddCommand": "subnet_add",
    "SubnetRemoveCommand": "subnet_remove",
}


def parse_extension_config(fields: ConfigFields) -> ExtensionConfig:
    """The section (keys case-insensitive, as Go reads them); a command that is not a string is
    an error naming it, as flanneld's "error decoding backend config" is (null is no command)."""
    commands: dict[str, str] = {}
    for key, attr in KEYS.items():
        raw = fields.value.get(key.lower())
        if raw is not None and not isinstance(raw, str):
            fix = f"use a shell command as a JSON string, such as {json.dumps(EXAMPLE)}"
            raise fields.fail(key, raw, fix)
        commands[attr] = raw or ""
    timeout = fields.get_int("CommandTimeout", DEFAULT_TIMEOUT, 1, MAX_TIMEOUT)
    return ExtensionConfig(timeout=timeout, **commands)


def config_fields(config: ExtensionConfig) -> dict[str, object]:
    """The section as the config command shows it: flannel's keys, every default filled in."""
    shown: dict[str, object] = {"Type": config.type}
    shown.update({key: getattr(config, attr) for key, attr in KEYS.items()})
    shown["CommandTimeout"] = config.timeout
    return shown
