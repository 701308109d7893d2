"""The plugin's HTTP layer on a real unix socket: dockerd's requests, and broken ones that must get
an ``{"Err": ...}`` (or a plain 400) without taking the server down; the command's start errors."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerplugin_fixtures import make_env, plugin_for

from overlayd.dockerplugin.driver import CONTENT_TYPE
from overlayd.dockerplugin.server import MAX_BODY, PluginServer, call

JOIN = b"POST /NetworkDriver.Join HTTP/1.1\r\n"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Path]:
    plugin = plugin_for(*make_env(tmp_path))
    path = tmp_path / "plugins" / "overlayd.sock"
    server = PluginServer(path, plugin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()


def raw(path: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_dockers_requests_on_one_kept_alive_connection(served: Path) -> None:
    body = json.dumps({"AddressSpace": "overlayd", "Pool": "", "V6": False}).encode()
    one = (f"POST /IpamDriver.RequestPool HTTP/1.1\r\nHost: \r\nContent-Length: {len(body)}\r\n"
           f"Accept: {CONTENT_TYPE}\r\n\r\n").encode() + body  # fmt: skip
    replies = raw(served, one + b"POST /Plugin.Activate HTTP/1.1\r\nHost: \r\nContent-Length: 0\r\n\r\n")
    assert replies.count(b"HTTP/1.1 200 OK") == 2, replies
    assert f"Content-Type: {CONTENT_TYPE}".encode() in replies
    assert b'"Pool": "198.18.7.0/28"' in replies and b'"Implements"' in replies
    assert oct(served.stat().st_mode & 0o777) == "0o660"


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (JOIN + b"Content-Length: 5\r\n\r\n{nope", b"the request body is not JSON"),
        (JOIN + b"Content-Length: x\r\n\r\n", b"Content-Length 'x' is not a number"),
        (JOIN + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode(), b"is refused"),
        (JOIN + b"Content-Length: 4\r\n\r\n\xff\xfe\x00\x01", b"not JSON"),
        (b"GARBAGE\r\n\r\n", b"400"),
    ],
)
def test_a_broken_request_is_answered_and_the_server_serves_on(served: Path, request_bytes: bytes,
                                                                 expected: bytes) -> None:  # fmt: skip
    assert expected in raw(served, request_bytes)
    assert call(served, "Plugin.Activate", None) == (200, {"Implements": ["NetworkDriver", "IpamDriver"]})


def test_the_command_refuses_a_bad_conflist_and_an_unusable_socket_with_exit_2(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "overlayd", "docker-plugin", "--state-file", str(tmp_path / "s.json")]
    done = subprocess.run([*command, "--conflist", str(tmp_path / "missing.conflist")],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2 and "cannot read conflist" in done.stderr and "--conflist PATH" in done.stderr
    conflist = tmp_path / "net.conflist"
    conflist.write_text(json.dumps({"name": "cbr0", "plugins": [{"type": "portmap"}]}))
    done = subprocess.run([*command, "--conflist", str(conflist)], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 2 and '"type": "flannel"' in done.stderr, done.stderr
    conflist.write_text(json.dumps({"name": "cbr0", "plugins": [
        {"type": "flannel", "subnetFile": str(tmp_path / "subnet.env")}]}))  # fmt: skip
    done = subprocess.run([*command, "--conflist", str(conflist), "--socket", "/proc/self/no/overlayd.sock"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2 and "cannot listen on /proc/self/no/overlayd.sock" in done.stderr, done.stderr
    assert "is the agent running" not in done.stderr and "start `overlayd run`" in done.stderr  # a warning


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate")
def test_under_socket_activation_it_serves_the_socket_it_is_given_and_leaves_it(tmp_path: Path) -> None:
    """As systemd runs it with overlayd-docker-plugin.socket: the first call starts it on the passed
    socket, and a stopped plugin leaves the socket (and the calls queued on it) to systemd."""
    sock = tmp_path / "overlayd.sock"
    settings, _ = make_env(tmp_path)
    conflist = tmp_path / "net.conflist"
    conflist.write_text(json.dumps({"name": "cbr0", "plugins": [
        {"type": "flannel", "subnetFile": str(settings.subnet_file)}]}))  # fmt: skip
    activator = subprocess.Popen(
        ["systemd-socket-activate", "-l", str(sock), sys.executable, "-m", "overlayd", "docker-plugin",
         "--socket", str(sock), "--conflist", str(conflist), "--state-file", str(tmp_path / "state.json")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert call(sock, "IpamDriver.RequestPool", {"Pool": ""}, timeout=20)[1]["Pool"] == "198.18.7.0/28"
    finally:
        activator.terminate()
        out, _ = activator.communicate(timeout=20)
    assert activator.returncode == 0, out
    assert sock.is_socket(), "the plugin removed the socket it was given"
