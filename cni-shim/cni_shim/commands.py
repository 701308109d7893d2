"""ADD, DEL, CHECK, STATUS and GC: what the shim does once the protocol layer accepted a call."""

from __future__ import annotations

import sys
import time

from . import jsonio
from .delegate import find_plugin, invoke
from .errors import (
    CannotServiceAdd,
    CniError,
    ExistingMayBeAffected,
    InvalidConfig,
    InvalidEnvironment,
    TryAgainLater,
    UnsupportedField,
)
from .netconf import ShimConf, build_delegate, parse_conf
from .state import Attachment, StateStore
from .version import at_least, delegate_version

# `typing`, `collections.abc` and `dataclasses` would add ~10 ms each to every CNI call
# (docs/benchmarks.md); annotations stay strings and records are plain classes. `subnetenv`
# (with `prefix`) and `result` are imported where they are used: a DEL replaying its saved
# config needs neither, and each module costs ~0.1 ms of every call.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from .subnetenv import SubnetEnv

_POLL_INTERVAL = 0.1


class Invocation:
    """One call: the shim's config, the runtime's environment, and any ``prevResult``."""

    def __init__(self, conf: ShimConf, env: Mapping[str, str], prev_result: dict[str, Any] | None) -> None:
        self.conf = conf
        self.env = env
        self.prev_result = prev_result

    @property
    def attachment(self) -> Attachment:
        return Attachment(self.conf.name, self.env["CNI_CONTAINERID"], self.env["CNI_IFNAME"])

    @property
    def store(self) -> StateStore:
        return StateStore(self.conf.data_dir)


def dispatch(command: str, env: Mapping[str, str], config: dict[str, Any], cni_version: str) -> str:
    """Run ``command``; return what goes to stdout (a result for ADD, else nothing)."""
    prev_result = config.get("prevResult")
    if prev_result is not None and not isinstance(prev_result, dict):
        raise InvalidConfig(f'"prevResult" must be a JSON object, not {prev_result!r}')
    try:
        conf = parse_conf(config, cni_version)
    except (InvalidConfig, UnsupportedField) as err:
        if command != "DEL":
            raise
        # Refusing DEL would leave the runtime unable to tear down the sandbox (its ADD failed
        # on this very config) until someone fixes the conflist. A plugin type that is a path
        # is one such error: its default stands in, so the named file is never run.
        sys.stderr.write(f"flannel: DEL with an invalid config ({err.msg}); defaults stand in for it\n")
        conf = parse_conf(config, cni_version, lenient=True)
    invocation = Invocation(conf, env, prev_result)
    if command == "GC":
        return gc(invocation, *_valid_attachments(config))
    return {"ADD": add, "DEL": delete, "CHECK": check, "STATUS": status}[command](invocation)


def add(inv: Invocation) -> str:
    """Save the delegate config, then delegate ADD; undo both if anything fails."""
    attachment, store = inv.attachment, inv.store
    if store.load(attachment) is not None:
        raise _already_attached(inv)
    delegate_config = build_delegate(inv.conf, wait_for_subnet_env(inv.conf))
    try:
        store.save(attachment, delegate_config)
    except FileExistsError:  # a concurrent ADD for the same attachment won the race
        raise _already_attached(inv) from None
    try:
        result = _call_delegate("ADD", delegate_config, inv)
        if result is None:
            raise CniError(f"{delegate_config['type']} ADD succeeded but printed no result")
        if result.get("cniVersion") != inv.conf.cni_version:  # else already in the config's format
            from .result import convert

            result = convert(result, inv.conf.cni_version)
        return jsonio.dumps(result) + "\n"
    except BaseException as exc:
        # bridge releases its address on failure but leaves the veth pair behind, so DEL undoes
        # it. Not when the container already has the interface: its saved state was lost (say,
        # a wiped dataDir) and this is a second ADD. bridge then stopped before creating
        # anything, and DEL would remove the live interface and free its address.
        if not _interface_taken(exc):
            _release_quietly(delegate_config, inv)
        store.remove(attachment)
        raise


def delete(inv: Invocation) -> str:
    """Release the attachment; succeed when there is nothing (left) to release."""
    try:
        delegate_config = _delegate_config(inv)
    except CniError as err:
        sys.stderr.write(f"flannel: {err.msg}; nothing to release\n")
        return ""
    _call_delegate("DEL", delegate_config, inv)
    inv.store.remove(inv.attachment)
    return ""


def check(inv: Invocation) -> str:
    """Delegate CHECK with the saved config and the runtime's ``prevResult``."""
    if inv.prev_result is None:
        raise InvalidConfig('CHECK needs "prevResult" (the cached result of ADD) in the config')
    _call_delegate("CHECK", _delegate_config(inv), inv)
    return ""


def _delegate_config(inv: Invocation) -> dict[str, Any]:
    """The delegate config ADD saved, else one rebuilt from the current ``subnet.env``.

    Lost state (a wiped dataDir) is no proof that the container is gone: host-local and bridge
    find an attachment by container ID and ifname, so a rebuilt config releases or checks it
    just as well. (CHECK's "container unknown", code 3, would tell the runtime to skip its DEL.)
    """
    saved = inv.store.load(inv.attachment)
    if saved is not None:
        return saved
    from .subnetenv import SubnetEnvError, read_subnet_env

    try:
        return build_delegate(inv.conf, read_subnet_env(inv.conf.subnet_file))
    except (FileNotFoundError, SubnetEnvError) as err:
        raise CniError(
            f"no saved config for {inv.attachment.filename} in {inv.conf.data_dir} and none can be "
            f"built ({err})"
        ) from None


def status(inv: Invocation) -> str:
    """Report whether ADD can work now (50) and whether DEL can (51); print nothing if so."""
    cni_path = inv.env.get("CNI_PATH", "")
    if cni_path:  # the runtime may leave it empty for STATUS; then there is nothing to check
        for plugin_type in (
            inv.conf.delegate.get("type", "bridge"),
            inv.conf.ipam.get("type", "host-local"),
        ):
            try:
                find_plugin(plugin_type, cni_path)
            except InvalidEnvironment as err:
                raise ExistingMayBeAffected(err.msg) from None
    from .subnetenv import SubnetEnvError, read_subnet_env

    try:
        read_subnet_env(inv.conf.subnet_file)
    except FileNotFoundError:
        raise CannotServiceAdd(_agent_not_ready(inv.conf, waited=False)) from None
    except SubnetEnvError as err:
        raise CannotServiceAdd(str(err)) from None
    return ""


def _valid_attachments(config: dict[str, Any]) -> tuple[Any, str]:
    """The attachments GC must keep, and the key they came under. libcni sends them under both
    the final name and the one of the spec's earlier draft; a runtime may send only either. Sent
    under neither, they are not "none": releasing every attachment would free addresses that
    running containers still use."""
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in config:
            return config[key], key
    raise InvalidConfig(
        'GC needs "cni.dev/valid-attachments", the attachments still in use (an empty list if '
        "there are none); without it nothing is released"
    )


def gc(inv: Invocation, valid_attachments: Any, key: str = "cni.dev/valid-attachments") -> str:
    """Release every saved attachment of this network the runtime no longer lists as valid."""
    if valid_attachments is None:  # libcni's empty Go slice: no attachment is valid
        valid_attachments = []
    if not isinstance(valid_attachments, list) or not all(
        isinstance(item, dict) for item in valid_attachments
    ):
        raise InvalidConfig(f'"{key}" must be a list of objects')
    valid = {(item.get("containerID"), item.get("ifname")) for item in valid_attachments}
    failures = []
    for attachment in inv.store.attachments(inv.conf.name):
        if (attachment.container_id, attachment.ifname) in valid:
            continue
        env = {key: value for key, value in inv.env.items() if key != "CNI_NETNS"}
        env.update(CNI_CONTAINERID=attachment.container_id, CNI_IFNAME=attachment.ifname)
        try:
            delete(Invocation(inv.conf, env, None))
        except CniError as err:
            failures.append(f"{attachment.filename}: {err.msg}")
    if failures:
        raise CniError(f"GC could not release {len(failures)} attachment(s)", "; ".join(failures))
    return ""


def wait_for_subnet_env(conf: ShimConf) -> SubnetEnv:
    """Read subnet.env, waiting up to ``subnetFileTimeout`` for the agent to write it.

    Pods are often scheduled while the agent is still starting; a short wait turns that race
    into a slightly slower ADD instead of a failed sandbox (flannel failed at once).
    """
    from .subnetenv import SubnetEnvError, read_subnet_env

    deadline = time.monotonic() + conf.subnet_file_timeout
    while True:
        try:
            return read_subnet_env(conf.subnet_file)
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise TryAgainLater(_agent_not_ready(conf, waited=True)) from None
            time.sleep(_POLL_INTERVAL)
        except SubnetEnvError as err:
            raise InvalidConfig(str(err)) from None


def _agent_not_ready(conf: ShimConf, waited: bool) -> str:
    """Why ADD cannot work yet; ``waited``: ADD waited ``subnetFileTimeout`` (STATUS does not)."""
    wait = f" (waited {conf.subnet_file_timeout:g}s)" if waited else ""
    return (
        f"{conf.subnet_file} does not exist{wait}: the overlayd agent on this host is not ready; "
        "it writes the file once it holds a subnet lease. Check that it runs and can reach etcd"
    )


def _already_attached(inv: Invocation) -> CniError:
    attachment = inv.attachment
    return CniError(
        f"container {attachment.container_id} already has {attachment.ifname} on network "
        f"{attachment.network} (saved in {inv.conf.data_dir}); DEL it before adding it again"
    )


def _call_delegate(command: str, delegate_config: dict[str, Any], inv: Invocation) -> dict[str, Any] | None:
    """Run the delegate at a version it speaks, with prevResult converted to that version."""
    config = dict(delegate_config)
    config["cniVersion"] = delegate_version(config.get("cniVersion") or inv.conf.cni_version)
    prev_result_since = "0.3.0" if command == "ADD" else "0.4.0"
    if inv.prev_result is not None and at_least(config["cniVersion"], prev_result_since):
        from .result import convert

        config["prevResult"] = convert(
            {**inv.prev_result, "cniVersion": inv.conf.cni_version}, config["cniVersion"]
        )
    return invoke(command, config, inv.env)


def _interface_taken(error: BaseException) -> bool:
    """The reference plugins' refusal to create a container interface whose name is taken
    ("container veth name provided (eth0) already exists"; newer: "container veth name
    ("eth0") peer provided ("veth1") already exists")."""
    msg = error.msg if isinstance(error, CniError) else ""
    return "container veth name" in msg and "already exists" in msg


def _release_quietly(delegate_config: dict[str, Any], inv: Invocation) -> None:
    """Best-effort DEL while another error is already on its way to the runtime."""
    try:
        _call_delegate("DEL", delegate_config, inv)
    except CniError as err:
        sys.stderr.write(f"flannel: cleanup after failed ADD: {err.msg}\n")
