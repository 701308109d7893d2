"""The backends without a device (extension, alloc) without a lab: config, lease bytes, and the
command runner with a real ``sh`` (commands write what they were given into files)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from overlayd.backend.alloc.backend import Alloc
from overlayd.backend.api import NO_DEVICE, BackendError, HostFacts
from overlayd.backend.extension.backend import Extension
from overlayd.backend.extension.config import ExtensionConfig
from overlayd.backend.extension.runner import CommandRunner, OwnStart
from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.config import ConfigError, parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs, decode_lease, encode_attrs

WHERE = "network config at /coreos.com/network/config"


def config(backend: dict[str, object]):  # type: ignore[no-untyped-def]
    raw = json.dumps({"Network": "198.18.0.0/16", "Backend": backend})
    return parse_network_config(raw, where=WHERE, backends=CONFIG_PARSERS)


def host(tmp_path: Path) -> HostFacts:
    ip = IPv4Address("192.0.2.11")
    return HostFacts(ip, "eth0", ip, 1500, (IPv4Network("192.0.2.0/24"),), tmp_path)


def wait_for(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# ---- config --------------------------------------------------------------------------------------


def test_the_four_commands_are_read_case_insensitively_with_a_timeout() -> None:
    section = config({"type": "Extension", "subnetaddcommand": "true", "PreStartupCommand": None}).backend
    assert section == ExtensionConfig(subnet_add="true")
    assert section.summary == "commands SubnetAddCommand, timeout 60 s"
    other = ExtensionConfig(subnet_add="false", timeout=5)
    assert other.restart_reason(section) == "SubnetAddCommand, CommandTimeout changed"
    assert other.restart_key != section.restart_key


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"SubnetAddCommand": 42}, "Backend.SubnetAddCommand 42 is invalid; use a shell command as a JSON "
         'string, such as "ip route replace $SUBNET via $PUBLIC_IP"'),
        ({"PreStartupCommand": ["ip", "link"]}, "Backend.PreStartupCommand ['ip', 'link'] is invalid"),
        ({"CommandTimeout": 0}, "Backend.CommandTimeout 0 is invalid; use a whole number between 1 and 3600"),
    ],
)
def test_a_bad_command_is_named_with_the_fix(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config({"Type": "extension", **section})
    assert str(caught.value).startswith(f"{WHERE}: {message}")


# ---- leases --------------------------------------------------------------------------------------


def test_alloc_publishes_only_the_public_ip_and_has_no_device(tmp_path: Path) -> None:
    backend, cfg = Alloc(), config({"Type": "alloc"})
    attrs = backend.lease_data(cfg, host(tmp_path))
    assert encode_attrs(attrs) == '{"PublicIP":"192.0.2.11","PublicIPv6":null}'
    own = Lease(IPv4Network("198.18.1.0/24"), attrs)
    assert backend.ensure(cfg, own, host(tmp_path)) == (NO_DEVICE, [])
    assert backend.device_names(cfg) == () and backend.container_mtu(cfg, 1500) == 1500
    peer = decode_lease("198.18.2.0-24", '{"PublicIP":"192.0.2.12","PublicIPv6":null}')
    assert not backend.wants_peer(peer, own, cfg) and backend.peer_actions() is None


def test_extension_without_pre_startup_publishes_no_backend_data(tmp_path: Path) -> None:
    attrs = Extension().lease_data(config({"Type": "extension"}), host(tmp_path))
    assert encode_attrs(attrs) == '{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"extension"}'


def test_pre_startup_output_is_the_backend_data_as_flanneld_marshals_it(tmp_path: Path) -> None:
    command = "printf '  <mac>&\"x\"\\n'; echo to-stderr >&2; printf '\\n\\n'"
    section = config({"Type": "extension", "PreStartupCommand": command})
    attrs = Extension().lease_data(section, host(tmp_path))
    text = encode_attrs(attrs)
    assert text == ('{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"extension",'
                    '"BackendData":"\\u003cmac\\u003e\\u0026\\"x\\"\\nto-stderr"}')  # fmt: skip
    assert decode_lease("198.18.1.0-24", text).attrs == attrs  # reads back to the same bytes


def test_empty_pre_startup_output_is_an_empty_string_not_nothing(tmp_path: Path) -> None:
    attrs = Extension().lease_data(config({"Type": "extension", "PreStartupCommand": "true"}), host(tmp_path))
    assert encode_attrs(attrs).endswith('"BackendType":"extension","BackendData":""}')


def test_a_pre_startup_output_too_long_for_a_lease_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    section = {"Type": "extension", "PreStartupCommand": "head -c 5000 /dev/zero | tr '\\0' x"}
    with pytest.raises(BackendError) as caught:
        Extension().lease_data(config(section), host(tmp_path))
    assert str(caught.value).startswith(
        "PreStartupCommand printed 5000 bytes, a lease of 5086 bytes, and peers read leases of at most 4096; "
        "have it print only what peers need"
    )


def test_a_failing_pre_startup_is_an_error_with_its_status_and_output(tmp_path: Path) -> None:
    section = {"Type": "extension", "PreStartupCommand": "echo no vxlan module >&2; exit 4"}
    with pytest.raises(BackendError, match="PreStartupCommand failed with exit status 4: no vxlan module"):
        Extension().lease_data(config(section), host(tmp_path))


# ---- the runner ----------------------------------------------------------------------------------


def peer(subnet: str, ip: str, data: str | None, revision: int = 5, backend: str = "extension") -> Lease:
    extra = json.dumps(data) if data is not None else ""
    attrs = LeaseAttrs(IPv4Address(ip), backend, extra_backend_data=extra)
    return Lease(IPv4Network(subnet), attrs, mod_revision=revision, create_revision=2)


def key(lease: Lease) -> str:
    return lease.key


def runner_for(tmp_path: Path, timeout: int = 60, post: str = "") -> CommandRunner:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    # Each run appends a line: what it was given (env), and its stdin to a file of its own.
    section = ExtensionConfig(
        post_startup=post,
        subnet_add=f'test -e {out}/fail-"${{SUBNET%/*}}" && {{ echo refused "$SUBNET" >&2; exit 3; }}; '
        f'test -e {out}/hang-"${{SUBNET%/*}}" && sleep 100; '
        f'cat > {out}/add-stdin-"${{SUBNET%/*}}"; echo "add $SUBNET $PUBLIC_IP ${{NETWORK:-}}" >> {out}/log',
        subnet_remove=f'test -e {out}/fail-remove-"${{SUBNET%/*}}" && {{ echo busy >&2; exit 4; }}; '
        f'cat > {out}/remove-stdin-"${{SUBNET%/*}}"; '
        f'echo "remove $SUBNET $PUBLIC_IP" >> {out}/log',
        timeout=timeout,
    )
    return CommandRunner(section, tmp_path / "record.json")


def log_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "out" / "log"
    return path.read_text().splitlines() if path.exists() else []


ADD_A = "add 198.18.2.0/24 192.0.2.12 "  # NETWORK is PostStartupCommand's alone: empty here
START = OwnStart("198.18.0.0/16", "198.18.1.0/24", "192.0.2.11")


def test_each_peer_gets_add_with_its_env_and_data_and_a_removal_its_last_data(tmp_path: Path) -> None:
    runner = runner_for(tmp_path)
    try:
        a, b = peer("198.18.2.0/24", "192.0.2.12", "aa:bb"), peer("198.18.3.0/24", "192.0.2.13", None)
        other = peer("198.18.4.0/24", "192.0.2.14", "x", backend="vxlan")
        runner.start(START)
        runner.sync({key(a): a, key(b): b, key(other): other})
        wait_for(lambda: len(log_lines(tmp_path)) == 2, "two adds")
        assert sorted(log_lines(tmp_path)) == [ADD_A, "add 198.18.3.0/24 192.0.2.13 "]
        assert (tmp_path / "out/add-stdin-198.18.2.0").read_bytes() == b"aa:bb\n"
        assert (tmp_path / "out/add-stdin-198.18.3.0").read_bytes() == b"\n"  # no BackendData: ""
        runner.sync({key(a): a, key(b): b})  # the same leases again: nothing runs
        renewed = peer("198.18.2.0/24", "192.0.2.12", "aa:bb", revision=9)
        changed = peer("198.18.2.0/24", "192.0.2.12", "cc:dd", revision=10)
        runner.sync({key(renewed): renewed, key(b): b})  # a renewal's re-put runs it again, as flanneld
        wait_for(lambda: len(log_lines(tmp_path)) == 3, "the add after a renewal")
        runner.sync({key(changed): changed, key(b): b})
        wait_for(lambda: (tmp_path / "out/add-stdin-198.18.2.0").read_bytes() == b"cc:dd\n", "the new data")
        runner.sync({key(b): b})
        wait_for(lambda: log_lines(tmp_path)[-1:] == ["remove 198.18.2.0/24 192.0.2.12"], "the removal")
        assert (tmp_path / "out/remove-stdin-198.18.2.0").read_bytes() == b"cc:dd\n"  # the departed peer's
        wait_for(lambda: list(json.loads((tmp_path / "record.json").read_text())) == [key(b)], "the record")
    finally:
        runner.close()


def test_a_failing_add_is_retried_until_it_succeeds_and_named_with_status_and_stderr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    runner = runner_for(tmp_path)
    try:
        a = peer("198.18.2.0/24", "192.0.2.12", "aa")
        (tmp_path / "out/fail-198.18.2.0").touch()
        runner.start(START)
        runner.sync({key(a): a})
        wait_for(lambda: key(a) in runner.failing(), "the failure")
        assert runner.failing()[key(a)] == "failed with exit status 3: refused 198.18.2.0/24"
        assert "SubnetAddCommand for peer 198.18.2.0/24 (PublicIP 192.0.2.12) failed with exit status 3: " \
               "refused 198.18.2.0/24; retrying in" in caplog.text
        (tmp_path / "out/fail-198.18.2.0").unlink()
        wait_for(lambda: not runner.failing(), "the retry", timeout=15)
        assert log_lines(tmp_path) == ["add 198.18.2.0/24 192.0.2.12 "]
        done = "SubnetAddCommand for peer 198.18.2.0/24 (PublicIP 192.0.2.12) done after 1 failed attempt(s)"
        assert done in caplog.text
    finally:
        runner.close()


def test_a_hung_command_is_killed_at_its_timeout_and_holds_up_no_other_peer(tmp_path: Path) -> None:
    runner = runner_for(tmp_path, timeout=4)
    try:
        hung, fine = peer("198.18.2.0/24", "192.0.2.12", "a"), peer("198.18.3.0/24", "192.0.2.13", "b")
        (tmp_path / "out/hang-198.18.2.0").touch()
        runner.start(START)
        runner.sync({key(hung): hung, key(fine): fine})
        other = ["add 198.18.3.0/24 192.0.2.13 "]
        wait_for(lambda: log_lines(tmp_path) == other, "the other peer")
        assert key(hung) not in runner.failing()  # still running: the other did not wait for it
        wait_for(lambda: key(hung) in runner.failing(), "the timeout")
        assert runner.failing()[key(hung)].startswith("timed out after 4 s and was killed (CommandTimeout)")
    finally:
        runner.close()


def test_peers_wait_for_post_startup_which_gets_this_hosts_network_subnet_and_ip(tmp_path: Path) -> None:
    out = tmp_path / "out"
    post = f'test -e {out}/post-ok || exit 1; echo "post $NETWORK $SUBNET $PUBLIC_IP" >> {out}/log'
    runner = runner_for(tmp_path, post=post)
    try:
        a = peer("198.18.2.0/24", "192.0.2.12", "aa")
        runner.start(START)
        runner.sync({key(a): a})
        wait_for(lambda: "" in runner.failing(), "PostStartupCommand failing")
        assert log_lines(tmp_path) == []  # the peer waits
        (out / "post-ok").touch()
        wait_for(lambda: len(log_lines(tmp_path)) == 2, "post then add", timeout=15)
        assert log_lines(tmp_path) == ["post 198.18.0.0/16 198.18.1.0/24 192.0.2.11", ADD_A]
    finally:
        runner.close()


def test_a_restart_adds_the_present_peers_again_and_removes_only_those_gone(tmp_path: Path) -> None:
    a, b = peer("198.18.2.0/24", "192.0.2.12", "aa"), peer("198.18.3.0/24", "192.0.2.13", "bb")
    first = runner_for(tmp_path)
    try:
        first.start(START)
        first.sync({key(a): a, key(b): b})
        wait_for(lambda: len(log_lines(tmp_path)) == 2, "two adds")
    finally:
        first.close()
    second = runner_for(tmp_path)  # b's lease went while no agent ran
    try:
        second.start(START)
        second.sync({key(a): a})
        wait_for(lambda: len(log_lines(tmp_path)) == 4, "add again and a removal")
        assert sorted(log_lines(tmp_path)[2:]) == [ADD_A, "remove 198.18.3.0/24 192.0.2.13"]
        assert (tmp_path / "out/remove-stdin-198.18.3.0").read_bytes() == b"bb\n"
    finally:
        second.close()


def test_a_lease_whose_backend_data_is_not_a_string_gets_no_command(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner = runner_for(tmp_path)
    try:
        bad = Lease(IPv4Network("198.18.2.0/24"), LeaseAttrs(IPv4Address("192.0.2.12"), "extension",
                    extra_backend_data='{"VNI":1}'), mod_revision=3)  # fmt: skip
        good = peer("198.18.3.0/24", "192.0.2.13", "b")
        runner.start(START)
        runner.sync({key(bad): bad, key(good): good})
        wait_for(lambda: len(log_lines(tmp_path)) == 1, "the good peer's add")
        assert 'lease 198.18.2.0-24: its BackendData {"VNI":1} is not a JSON string' in caplog.text
    finally:
        runner.close()


def test_a_peer_back_while_its_removal_fails_is_added_again_without_waiting(tmp_path: Path) -> None:
    runner = runner_for(tmp_path)
    try:
        a = peer("198.18.2.0/24", "192.0.2.12", "aa")
        (tmp_path / "out/fail-remove-198.18.2.0").touch()
        runner.start(START)
        runner.sync({key(a): a})
        wait_for(lambda: log_lines(tmp_path) == [ADD_A], "the add")
        runner.sync({})
        busy = "failed with exit status 4: busy"
        wait_for(lambda: runner.failing().get(key(a)) == busy, "the failed removal")
        back = peer("198.18.2.0/24", "192.0.2.12", "aa", revision=8)
        runner.sync({key(back): back})
        assert key(a) not in runner.failing()  # its removal no longer decides
        wait_for(lambda: log_lines(tmp_path) == [ADD_A, ADD_A], "the add for the returned lease")
    finally:
        runner.close()


def test_with_only_a_remove_command_a_peer_gone_meanwhile_is_still_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    section = ExtensionConfig(subnet_remove=f'echo "remove $SUBNET" >> {out}/log')
    a, b = peer("198.18.2.0/24", "192.0.2.12", "aa"), peer("198.18.3.0/24", "192.0.2.13", "bb")
    first = CommandRunner(section, tmp_path / "record.json")
    try:
        first.start(START)
        first.sync({key(a): a, key(b): b})
        wait_for(lambda: (tmp_path / "record.json").exists() and len(json.loads((tmp_path / "record.json")
                          .read_text())) == 2, "both kept")  # fmt: skip
    finally:
        first.close()
    second = CommandRunner(section, tmp_path / "record.json")
    try:
        second.start(START)
        second.sync({key(a): a})
        wait_for(lambda: log_lines(tmp_path) == ["remove 198.18.3.0/24"], "the removal of the one gone")
    finally:
        second.close()
