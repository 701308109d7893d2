"""``overlayd docker-plugin``: serve the driver on a unix socket in dockerd's plugin directory.

dockerd finds the plugin by its socket's name (``/run/docker/plugins/overlayd.sock`` makes the
driver ``overlayd``). A plugin restart drops no traffic: the veths and the bridge stay in the
kernel, and dockerd retries a call while the socket is gone. Under systemd the socket may come
from ``overlayd-docker-plugin.socket`` (socket activation): then it is never gone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import FrameType
from typing import Any

from overlayd.dockerplugin.driver import CONTENT_TYPE, DockerPlugin, Reply
from overlayd.dockerplugin.hoststore import HostLocalStore
from overlayd.dockerplugin.settings import SettingsError, read_host_pool, read_shared_settings
from overlayd.dockerplugin.state import StateFile

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/run/docker/plugins/overlayd.sock")
DEFAULT_CONFLIST = Path("/etc/cni/net.d/10-flannel.conflist")
DEFAULT_STATE_FILE = Path("/var/lib/overlayd/docker-plugin.json")
MAX_BODY = 1 << 20  # dockerd's requests are a few hundred bytes


class _Handler(BaseHTTPRequestHandler):
    server: PluginServer
    protocol_version = "HTTP/1.1"  # keep-alive: dockerd's client reuses its connection

    def do_POST(self) -> None:
        reply = self._reply()
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reply(self) -> Reply:
        method = self.path.lstrip("/")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return Reply(
                400, {"Err": f"Content-Length {self.headers.get('Content-Length')!r} is not a number"}
            )
        if length < 0 or length > MAX_BODY:
            return Reply(400, {"Err": f"a request body of {length} bytes is refused (at most {MAX_BODY})"})
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError as err:
            return Reply(400, {"Err": f"{method}: the request body is not JSON ({err})"})
        return self.server.plugin.handle(method, body)

    def address_string(self) -> str:
        return "dockerd"  # a unix socket peer has no address to log

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s", format % args)


class PluginServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, plugin: DockerPlugin, inherited: socket.socket | None = None) -> None:
        """Listen on ``path``, or serve ``inherited``, a socket systemd already listens on."""
        self.plugin = plugin
        self.inherited = inherited is not None
        if inherited is not None:
            super().__init__(str(path), _Handler, bind_and_activate=False)
            self.socket.close()
            self.socket = inherited
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()  # a previous run's; a live one would still have its listener bound
        super().__init__(str(path), _Handler)
        os.chmod(path, 0o660)


def systemd_socket(environ: Mapping[str, str]) -> socket.socket | None:
    """The listening socket systemd passed (socket activation: ``LISTEN_FDS`` 1 for this pid, fd 3),
    or None. With it, dockerd's calls during a restart of the plugin wait in its backlog."""
    if environ.get("LISTEN_PID") != str(os.getpid()) or environ.get("LISTEN_FDS") != "1":
        return None
    return socket.socket(fileno=3)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="overlayd docker-plugin",
        description="Serve libnetwork's remote NetworkDriver and IpamDriver for dockerd: "
        "`docker network create -d overlayd --ipam-driver overlayd NAME` then gives containers addresses "
        "of this host's subnet, on the CNI plugin's bridge and address store.",
    )
    parser.add_argument(
        "--socket",
        type=Path,
        default=DEFAULT_SOCKET,
        help=f"unix socket to serve; its name is the driver's (default {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--conflist",
        type=Path,
        default=DEFAULT_CONFLIST,
        help="the CNI conflist whose subnet.env, bridge and host-local store are shared "
        f"(default {DEFAULT_CONFLIST})",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=DEFAULT_STATE_FILE,
        help=f"networks and endpoints, kept across restarts (default {DEFAULT_STATE_FILE})",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser  # fmt: skip


def run_docker_plugin(argv: list[str]) -> int:
    """Entry point for ``overlayd docker-plugin``; serves until SIGTERM or SIGINT."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = read_shared_settings(args.conflist)
    except SettingsError as err:
        print(f"overlayd docker-plugin: {err}", file=sys.stderr)
        return 2
    try:
        read_host_pool(settings)
    except SettingsError as err:  # the agent may still be starting: every call names it until then
        log.warning("%s", err)
    from overlayd.dockerplugin.links import Links  # pyroute2: only in the serving process

    links = Links()
    plugin = DockerPlugin(
        settings,
        lambda: read_host_pool(settings),
        HostLocalStore(settings.store_dir),
        links,
        StateFile(args.state_file),
    )
    try:
        server = PluginServer(args.socket, plugin, systemd_socket(os.environ))
    except OSError as err:
        print(f"overlayd docker-plugin: cannot listen on {args.socket}: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    thread = threading.Thread(target=server.serve_forever, name="docker-plugin", daemon=True)
    thread.start()
    log.info(
        "serving on %s: %d networks, %d endpoints known; addresses in %s, bridge %s",
        args.socket,
        len(plugin.state.networks),
        len(plugin.state.endpoints),
        settings.store_dir,
        settings.bridge,
    )
    stop.wait()
    server.shutdown()
    server.server_close()
    if not server.inherited:  # systemd's socket stays, and keeps dockerd's calls for the next start
        with contextlib.suppress(OSError):
            args.socket.unlink()
    links.close()
    log.info("stopped; containers keep their interfaces and addresses")
    return 0


def call(socket_path: Path, method: str, body: Any, timeout: float = 10.0) -> tuple[int, Any]:
    """POST ``body`` to ``/<method>`` on the plugin's socket, as dockerd does; (status, JSON reply)."""
    data = b"" if body is None else json.dumps(body).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(
            f"POST /{method} HTTP/1.1\r\nHost: plugin\r\nAccept: {CONTENT_TYPE}\r\n"
            f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + data
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(payload)
