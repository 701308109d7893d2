"""Pure parts of the shim, no root: subnet.env, delegate config, result formats, state, install."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cni_shim import spawn
from cni_shim.commands import _interface_taken
from cni_shim.errors import CniError, UnsupportedField
from cni_shim.main import run
from cni_shim.netconf import build_delegate, parse_conf
from cni_shim.result import convert
from cni_shim.state import Attachment, StateStore
from cni_shim.subnetenv import SubnetEnvError, parse_subnet_env
from overlayd.ops.install_cni import install_cni, render_plugin

V4 = "FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.5.1/24\nFLANNEL_MTU=1450\n"
V6 = "FLANNEL_IPV6_NETWORK=2001:db8::/48\nFLANNEL_IPV6_SUBNET=2001:db8:0:5::1/64\n"


def _env(text: str = V4 + "FLANNEL_IPMASQ=false\n"):
    return parse_subnet_env(text, "/run/flannel/subnet.env")


# --- subnet.env -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (V4, "FLANNEL_IPMASQ missing"),
        (V4.replace("1450", "big") + "FLANNEL_IPMASQ=true", "FLANNEL_MTU 'big'"),
        (V4 + "FLANNEL_IPMASQ=maybe", "FLANNEL_IPMASQ 'maybe'"),
        (V4.replace("198.18.5.1/24", "198.19.5.1/24") + "FLANNEL_IPMASQ=1", "not inside"),
        (V4.replace("FLANNEL_SUBNET", "#") + "FLANNEL_IPMASQ=1", "FLANNEL_SUBNET missing"),
        ("FLANNEL_MTU=1450\nFLANNEL_IPMASQ=1\n", "FLANNEL_NETWORK and FLANNEL_SUBNET missing"),
        (V4 + "FLANNEL_IPMASQ=1\nFLANNEL_IPV6_NETWORK=2001:db8::/48\n", "FLANNEL_IPV6_SUBNET"),
        (V4 + "garbage\n", "line 4"),
    ],
)
def test_broken_subnet_env_names_the_key(text: str, named: str) -> None:
    with pytest.raises(SubnetEnvError, match=r"subnet\.env") as raised:
        parse_subnet_env(text, "/run/flannel/subnet.env")
    assert named in str(raised.value)


def test_several_networks_each_get_a_route() -> None:
    """flanneld writes a comma-separated FLANNEL_NETWORK for a config with several networks."""
    text = V4.replace("198.18.0.0/16", "198.19.0.0/16,198.18.0.0/16") + "FLANNEL_IPMASQ=true\n"
    ipam = build_delegate(_conf(), _env(text))["ipam"]
    assert ipam["routes"] == [
        {"dst": "198.19.0.0/16", "gw": "198.18.5.1"},
        {"dst": "198.18.0.0/16", "gw": "198.18.5.1"},
    ]
    outside = V4.replace("198.18.0.0/16", "198.19.0.0/16,198.20.0.0/16") + "FLANNEL_IPMASQ=true\n"
    with pytest.raises(SubnetEnvError, match="not inside"):
        _env(outside)
    with pytest.raises(SubnetEnvError, match="is not a network"):
        _env(V4.replace("198.18.0.0/16", "198.18.0.0/16,") + "FLANNEL_IPMASQ=true\n")


# --- delegate config --------------------------------------------------------------------------


def _conf(**extra):
    return parse_conf({"name": "cbr0", "type": "flannel", **extra}, "1.1.0")


def test_delegate_defaults_are_flannels() -> None:
    delegate = build_delegate(_conf(runtimeConfig={"portMappings": []}), _env())
    assert delegate == {
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": True,
        "ipMasq": True,  # FLANNEL_IPMASQ=false: nobody else masquerades
        "mtu": 1450,
        "name": "cbr0",
        "cniVersion": "1.0.0",  # capped: the reference plugins stop at 1.0.0
        "runtimeConfig": {"portMappings": []},
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "198.18.5.0/24", "gateway": "198.18.5.1"}]],
            "routes": [{"dst": "198.18.0.0/16", "gw": "198.18.5.1"}],
        },
    }


def test_user_keys_win_and_ipam_keys_are_kept() -> None:
    conf = _conf(
        delegate={"bridge": "br9", "isGateway": False, "ipMasq": False, "hairpinMode": True},
        ipam={"dataDir": "/x", "ranges": "ignored", "routes": [{"dst": "198.19.7.0/24"}]},
    )
    delegate = build_delegate(conf, _env(V4 + V6 + "FLANNEL_IPMASQ=true"))
    assert (delegate["bridge"], delegate["isGateway"], delegate["hairpinMode"]) == ("br9", False, True)
    assert delegate["ipam"]["dataDir"] == "/x"
    assert delegate["ipam"]["ranges"] == [
        [{"subnet": "198.18.5.0/24", "gateway": "198.18.5.1"}],
        [{"subnet": "2001:db8:0:5::/64", "gateway": "2001:db8:0:5::1"}],
    ]
    assert [route["dst"] for route in delegate["ipam"]["routes"]] == [
        "198.19.7.0/24",
        "198.18.0.0/16",
        "2001:db8::/48",
    ]


def test_other_delegate_types_get_no_bridge_keys() -> None:
    delegate = build_delegate(_conf(delegate={"type": "ptp"}), _env())
    assert "bridge" not in delegate and "isGateway" not in delegate


def test_delegate_name_is_an_unsupported_field() -> None:
    with pytest.raises(UnsupportedField, match=r"delegate\.name"):
        _conf(delegate={"name": "x"})


# --- result formats ---------------------------------------------------------------------------

CURRENT = {
    "cniVersion": "1.1.0",
    "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/ns", "mtu": 1450}],
    "ips": [
        {"interface": 0, "address": "198.18.5.2/24", "gateway": "198.18.5.1"},
        {"interface": 0, "address": "2001:db8:0:5::2/64", "gateway": "2001:db8:0:5::1"},
    ],
    "routes": [
        {"dst": "198.18.0.0/16", "gw": "198.18.5.1", "priority": 5},
        {"dst": "2001:db8::/48"},
    ],
    "dns": {"nameservers": ["198.18.0.53"]},
}


def test_down_to_1_0_drops_the_new_fields() -> None:
    lowered = convert(CURRENT, "1.0.0")
    assert lowered["interfaces"][0] == {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/ns"}
    assert lowered["routes"][0] == {"dst": "198.18.0.0/16", "gw": "198.18.5.1"}
    assert "version" not in lowered["ips"][0]


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_down_to_0_3_adds_ip_versions(version: str) -> None:
    lowered = convert(CURRENT, version)
    assert [ip["version"] for ip in lowered["ips"]] == ["4", "6"]
    assert lowered["cniVersion"] == version


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_down_to_0_2_keeps_one_address_per_family(version: str) -> None:
    assert convert(CURRENT, version) == {
        "cniVersion": version,
        "ip4": {
            "ip": "198.18.5.2/24",
            "gateway": "198.18.5.1",
            "routes": [{"dst": "198.18.0.0/16", "gw": "198.18.5.1"}],
        },
        "ip6": {
            "ip": "2001:db8:0:5::2/64",
            "gateway": "2001:db8:0:5::1",
            "routes": [{"dst": "2001:db8::/48"}],
        },
        "dns": {"nameservers": ["198.18.0.53"]},
    }


def test_up_from_0_2_and_round_trip() -> None:
    legacy = convert(CURRENT, "0.2.0")
    lifted = convert(legacy, "1.1.0")
    assert [ip["address"] for ip in lifted["ips"]] == ["198.18.5.2/24", "2001:db8:0:5::2/64"]
    assert "interfaces" not in lifted
    assert convert(convert(CURRENT, "0.4.0"), "1.1.0")["ips"] == CURRENT["ips"]


def test_no_address_cannot_become_0_2() -> None:
    with pytest.raises(CniError, match="without IP addresses"):
        convert({"cniVersion": "1.0.0", "interfaces": []}, "0.2.0")


# --- protocol with injected environment and stdin ---------------------------------------------


def test_version_does_not_read_stdin() -> None:
    class Unreadable(io.StringIO):
        def read(self, *args: object) -> str:
            raise AssertionError("VERSION must not block on stdin")

    code, out = run({"CNI_COMMAND": "VERSION"}, Unreadable())
    assert code == 0 and json.loads(out)["supportedVersions"][-1] == "1.1.0"


def test_status_from_a_dict_and_a_string(tmp_path: Path) -> None:
    conf = {"cniVersion": "1.1.0", "name": "n", "type": "flannel", "subnetFile": str(tmp_path / "s")}
    code, out = run({"CNI_COMMAND": "STATUS"}, io.StringIO(json.dumps(conf)))
    assert code == 1 and json.loads(out)["code"] == 50


# --- state ------------------------------------------------------------------------------------


def test_state_is_exclusive_private_and_keyed_by_network_container_and_ifname(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    attachment = Attachment("cbr0", "abc-1", "net+1")
    store.save(attachment, {"name": "cbr0"})
    with pytest.raises(FileExistsError):
        store.save(attachment, {"name": "other"})
    assert store.load(attachment) == {"name": "cbr0"}
    assert (tmp_path / "state" / "cbr0+abc-1+net+1").stat().st_mode & 0o777 == 0o600
    assert store.attachments("cbr0") == [attachment]
    assert store.attachments("cbr") == []
    store.remove(attachment)
    assert store.load(attachment) is None
    assert list((tmp_path / "state").iterdir()) == []


def test_state_is_also_saved_under_flannels_name_for_the_containers_first_attachment(tmp_path: Path) -> None:
    """flannel's plugin reads ``<dataDir>/<containerID>`` at DEL: a node switched back to it
    must still release what was attached here. The twin is a hard link and not a second
    state: another interface of the container is neither refused nor released with it."""
    store = StateStore(tmp_path)
    eth0, net1 = Attachment("cbr0", "abc", "eth0"), Attachment("cbr0", "abc", "net1")
    store.save(eth0, {"name": "cbr0", "type": "bridge", "for": "eth0"})
    twin = tmp_path / "abc"
    assert json.loads(twin.read_text()) == {"name": "cbr0", "type": "bridge", "for": "eth0"}
    assert twin.stat().st_ino == (tmp_path / eth0.filename).stat().st_ino
    assert store.load(net1) is None  # not attached: ADD goes ahead, CHECK says unknown
    store.save(net1, {"name": "cbr0", "type": "bridge", "for": "net1"})
    assert json.loads(twin.read_text())["for"] == "eth0"
    store.remove(net1)
    assert twin.exists() and store.load(eth0) == {"name": "cbr0", "type": "bridge", "for": "eth0"}
    store.remove(eth0)
    assert list(tmp_path.iterdir()) == []


def test_a_twin_whose_file_was_lost_still_releases_its_attachment(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    eth0 = Attachment("cbr0", "abc", "eth0")
    store.save(eth0, {"name": "cbr0", "type": "bridge"})
    (tmp_path / eth0.filename).unlink()
    assert store.load(eth0) == {"name": "cbr0", "type": "bridge"}
    store.remove(eth0)
    assert list(tmp_path.iterdir()) == []


def test_a_state_file_torn_by_a_power_cut_does_not_block_the_next_add(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    attachment = Attachment("cbr0", "abc-1", "eth0")
    for torn in (b"", b'{"name": "cb'):
        (tmp_path / attachment.filename).write_bytes(torn)
        assert store.load(attachment) is None
        store.save(attachment, {"name": "cbr0"})
        assert store.load(attachment) == {"name": "cbr0"}
        with pytest.raises(FileExistsError):  # a whole one still means: already attached
            store.save(attachment, {"name": "cbr0"})
        store.remove(attachment)


def test_flannels_own_state_file_is_used_for_the_same_network(tmp_path: Path) -> None:
    (tmp_path / "abc").write_text(json.dumps({"name": "cbr0", "type": "bridge"}))
    store = StateStore(tmp_path)
    assert store.load(Attachment("other", "abc", "eth0")) is None
    assert store.load(Attachment("cbr0", "abc", "eth0")) == {"name": "cbr0", "type": "bridge"}
    store.remove(Attachment("cbr0", "abc", "eth0"))
    assert not (tmp_path / "abc").exists()


# --- spawning the delegate --------------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> str:
    script = tmp_path / "child"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_spawn_feeds_stdin_while_draining_outputs_larger_than_a_pipe(tmp_path: Path) -> None:
    # The child fills both output pipes before reading its input: a write-then-read would deadlock.
    child = _script(tmp_path, "head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2; cat; echo $X")
    done = spawn.run(child, b"x" * 500_000, {"X": "from-env"})
    assert done.returncode == 0
    assert done.stdout == b"\0" * 300_000 + b"x" * 500_000 + b"from-env\n"
    assert done.stderr == b"\0" * 300_000


def test_spawn_survives_a_child_that_exits_without_reading_its_input(tmp_path: Path) -> None:
    done = spawn.run(_script(tmp_path, "echo bye; exit 3"), b"x" * 1_000_000, {})
    assert (done.returncode, done.stdout, done.stderr) == (3, b"bye\n", b"")


def test_spawn_restores_the_default_sigpipe_for_the_child(tmp_path: Path) -> None:
    # Python ignores SIGPIPE; a delegate must not inherit that (it would loop on EPIPE instead of dying).
    done = spawn.run(_script(tmp_path, "grep SigIgn /proc/self/status"), b"", {})
    assert done.returncode == 0
    ignored = int(done.stdout.split()[-1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)), done.stdout


def test_spawn_reports_a_program_that_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(PermissionError):
        spawn.run(str(tmp_path), b"{}", {})


# --- install-cni ------------------------------------------------------------------------------


def test_installed_plugin_ignores_the_callers_python_environment(tmp_path: Path) -> None:
    plugin = install_cni(tmp_path / "bin")
    assert plugin.name == "flannel" and os.access(plugin, os.X_OK)
    env = {"CNI_COMMAND": "VERSION", "PYTHONPATH": "/nonexistent", "PYTHONHOME": "/nonexistent"}
    out = subprocess.run([plugin], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["cniVersion"] == "1.1.0"


def test_long_interpreter_paths_get_a_shell_trampoline(tmp_path: Path) -> None:
    python = tmp_path / ("v" * 120) / "python"
    python.parent.mkdir()
    python.symlink_to(os.path.realpath(sys.executable))
    script = tmp_path / "flannel"
    script.write_text(render_plugin(str(python), str(Path(__file__).parents[2] / "cni-shim")))
    script.chmod(0o755)
    assert script.read_text().startswith("#!/bin/sh\n")
    out = subprocess.run([script], env={"CNI_COMMAND": "VERSION"}, capture_output=True, text=True)
    assert json.loads(out.stdout)["cniVersion"] == "1.1.0"


def test_the_shims_start_up_imports_no_heavy_standard_modules(tmp_path: Path) -> None:
    """Each of these cost ~0.3-10 ms of every container start (docs/benchmarks.md)."""
    plugin = install_cni(tmp_path)
    package_parent = plugin.read_text().split("sys.path.insert(0, ")[1].split(")")[0]
    probe = (
        f"import sys; sys.path.insert(0, {package_parent}); "
        "import cni_shim.main, cni_shim.commands; print(' '.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-IS", "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "cni_shim.commands" in loaded
    heavy = {"os", "typing", "subprocess", "json", "re", "ipaddress", "pathlib", "dataclasses", "_socket"}
    assert heavy.isdisjoint(loaded), sorted(heavy.intersection(loaded))


def _modules_after(tmp_path: Path, command: str, delegate_output: str) -> list[str]:
    """The shim's modules loaded by one ``command`` whose delegate (a stub) prints ``delegate_output``."""
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    stub = plugins / "bridge"
    stub.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{delegate_output}'\n")
    stub.chmod(0o755)
    subnet_env = tmp_path / "subnet.env"
    subnet_env.write_text(
        "FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "flannel", "subnetFile": str(subnet_env)}
    conf["dataDir"] = str(tmp_path / "state")
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
    env["CNI_PATH"] = str(plugins)
    probe = (
        f"import io, sys; sys.path.insert(0, {str(Path(__file__).parents[2] / 'cni-shim')!r}); "
        "from cni_shim.main import run; "
        f"code, out = run({env!r}, io.StringIO({json.dumps(conf)!r})); assert code == 0, out; "
        "print(' '.join(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-IS", "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_add_and_del_import_only_what_they_use(tmp_path: Path) -> None:
    """Each module costs ~0.1-0.3 ms of every call (docs/benchmarks.md): DEL replaying its saved
    config parses no subnet.env, and a result already in the config's version is not converted."""
    result = '{"cniVersion": "1.0.0", "ips": [{"address": "198.18.5.2/24"}]}'
    added = _modules_after(tmp_path, "ADD", result)
    assert "cni_shim.subnetenv" in added and "cni_shim.result" not in added
    deleted = _modules_after(tmp_path, "DEL", "")
    assert "cni_shim.commands" in deleted
    assert {"cni_shim.subnetenv", "cni_shim.prefix", "cni_shim.result"}.isdisjoint(deleted)


@pytest.mark.parametrize(
    ("error", "taken"),
    [
        (CniError("container veth name provided (eth0) already exists"), True),
        (CniError('container veth name ("eth0") peer provided ("veth1") already exists'), True),
        (CniError("failed to allocate for range 0: no IP addresses available in range set"), False),
        (CniError("failed to set bridge addr: could not add IP address: file exists"), False),
        (OSError("already exists"), False),
    ],
)
def test_only_a_taken_interface_name_skips_the_cleanup(error: BaseException, taken: bool) -> None:
    assert _interface_taken(error) is taken
