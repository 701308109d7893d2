"""Run a real etcd member for the integration tests and the namespace lab.

The tests need an etcd they can stop, restart and compact at will, on ports nobody else uses;
the lab needs the same inside a network namespace on a lab address. Both get one generic class:
it starts ``etcd`` with its own data dir, logs to a file there (so a failed start is explained
by the log tail, not by silence), and waits until ``etcdctl endpoint health`` says yes. The lab
also builds a three-member cluster from it (``initial_cluster``), to test endpoint fail-over.
The security tests serve clients over mutual TLS (``EtcdTLS``) and turn on ``--auth``
(``enable_auth``); peers always talk plain http, as there is only one member then.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

DEFAULT_CLIENT_PORT = 2379
DEFAULT_PEER_PORT = 2380
LOG_NAME = "etcd.log"


class EtcdServerError(RuntimeError):
    """etcd could not be started or queried; the message carries the log tail."""


@dataclass(frozen=True)
class EtcdTLS:
    """PEM files for serving clients over TLS, and the client pair etcdctl presents.

    With ``client_cert_auth`` etcd demands a client certificate signed by ``trusted_ca``.
    """

    cert: Path
    key: Path
    trusted_ca: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    client_cert_auth: bool = True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on host that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EtcdServer:
    """One etcd member: ``start()``, ``stop()``, ``restart()``, ``compact()``, ``endpoint``.

    Ports default to free ones chosen at runtime on the host; inside a network namespace
    (``netns``) they default to etcd's standard 2379/2380, because a free port cannot be probed
    from here on an address that only exists in the namespace.
    """

    def __init__(
        self,
        data_dir: Path | str,
        host: str = "127.0.0.1",
        client_port: int | None = None,
        peer_port: int | None = None,
        netns: str | None = None,
        name: str = "overlayd-etcd",
        etcd_binary: str = "etcd",
        etcdctl_binary: str = "etcdctl",
        start_timeout: float = 20.0,
        initial_cluster: str | None = None,
        tls: EtcdTLS | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """``extra_args`` go to etcd as they are (e.g. ``--auth-token-ttl=1``)."""
        self.data_dir = Path(data_dir)
        self.host = host
        self.netns = netns
        self.name = name
        self.etcd_binary = etcd_binary
        self.etcdctl_binary = etcdctl_binary
        self.start_timeout = start_timeout
        self.initial_cluster = initial_cluster
        self.tls = tls
        self.extra_args = extra_args
        self._auth: str | None = None  # "root:<password>" once enable_auth() ran
        default_client = DEFAULT_CLIENT_PORT if netns else None
        default_peer = DEFAULT_PEER_PORT if netns else None
        self.client_port = client_port or default_client or free_port(host)
        self.peer_port = peer_port or default_peer or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The client URL, e.g. ``http://127.0.0.1:40123`` (``https://`` with TLS)."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def pid(self) -> int:
        """The running etcd's process id (0 when stopped), for callers that outlive this object."""
        return self._process.pid if self.running and self._process else 0

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _netns_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def _command(self) -> list[str]:
        return [
            *self._netns_prefix(),
            self.etcd_binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir / "member-data"),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster or f"{self.name}={self.peer_url}",
            "--initial-cluster-state", "new",
            # History is kept until someone compacts: tests compact on purpose.
            "--auto-compaction-retention", "0",
            "--logger", "zap",
            "--log-outputs", "stderr",
            *self._tls_flags(),
            *self.extra_args,
        ]

    def _tls_flags(self) -> list[str]:
        tls = self.tls
        if tls is None:
            return []
        flags = [
            "--cert-file", str(tls.cert), "--key-file", str(tls.key), "--trusted-ca-file", str(tls.trusted_ca)
        ]  # fmt: skip
        return [*flags, "--client-cert-auth"] if tls.client_cert_auth else flags

    def _etcdctl_security_flags(self) -> list[str]:
        """What etcdctl needs to pass this member's TLS and auth checks."""
        flags = []
        if self.tls:
            flags.append(f"--cacert={self.tls.trusted_ca}")
            if self.tls.client_cert and self.tls.client_key:
                flags += [f"--cert={self.tls.client_cert}", f"--key={self.tls.client_key}"]
        if self._auth:
            flags.append(f"--user={self._auth}")
        return flags

    def start(self) -> None:
        """Start etcd and return once it answers health checks; raise EtcdServerError otherwise."""
        self.launch()
        self.wait_healthy()

    def launch(self) -> None:
        """Start the etcd process without waiting: a cluster member is healthy only once a quorum runs."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                self._command(), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        log.info("etcd %s starting at %s (pid %d)", self.name, self.endpoint, self._process.pid)

    def wait_healthy(self) -> None:
        """Return once the member answers health checks; stop it and raise EtcdServerError if not."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise EtcdServerError(f"etcd at {self.endpoint} exited during start\n{self.log_tail()}")
            if self.healthy():
                log.info("etcd %s healthy at %s", self.name, self.endpoint)
                return
            time.sleep(0.1)
        self.stop()
        raise EtcdServerError(
            f"etcd at {self.endpoint} not healthy after {self.start_timeout:.0f}s\n{self.log_tail()}"
        )

    def healthy(self) -> bool:
        """True if the member answers a health check within a second."""
        try:
            self.etcdctl("endpoint", "health", "--command-timeout=1s")
        except EtcdServerError:
            return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate etcd (SIGTERM, then SIGKILL after ``timeout``); safe to call when stopped."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.info("etcd %s stopped", self.name)

    def restart(self) -> None:
        """Stop and start again with the same data dir and ports (data survives)."""
        self.stop()
        self.start()

    def etcdctl(self, *args: str, timeout: float = 10.0) -> str:
        """Run ``etcdctl <args>`` (v3 API) against this member; returns stdout."""
        binary = shutil.which(self.etcdctl_binary) or self.etcdctl_binary
        security = self._etcdctl_security_flags()
        command = [*self._netns_prefix(), binary, f"--endpoints={self.endpoint}", *security, *args]
        env = {**os.environ, "ETCDCTL_API": "3"}
        try:
            done = subprocess.run(command, env=env, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EtcdServerError(f"etcdctl {' '.join(args)} at {self.endpoint}: {exc}") from None
        if done.returncode != 0:
            raise EtcdServerError(
                f"etcdctl {' '.join(args)} at {self.endpoint} failed: {done.stderr.decode().strip()}"
            )
        return done.stdout.decode()

    def enable_auth(self, root_password: str) -> None:
        """Turn on etcd's ``--auth``: create ``root`` with ``root_password`` (root may do anything).

        From then on this object's etcdctl calls log in as root; clients without the password
        are refused.
        """
        self.etcdctl("user", "add", f"root:{root_password}", "--interactive=false")
        self.etcdctl("auth", "enable")
        self._auth = f"root:{root_password}"
        log.info("etcd %s: authentication enabled", self.name)

    def revision(self) -> int:
        """The store's current revision."""
        out = self.etcdctl("endpoint", "status", "--write-out=fields")
        for line in out.splitlines():
            if line.startswith('"Revision"'):
                return int(line.split(":", 1)[1])
        raise EtcdServerError(f"etcdctl endpoint status at {self.endpoint}: no Revision in {out!r}")

    def compact(self, revision: int | None = None) -> int:
        """Compact history up to ``revision`` (default: the current one); returns it."""
        target = revision if revision is not None else self.revision()
        self.etcdctl("compact", str(target), "--physical")
        log.info("etcd %s compacted at revision %d", self.name, target)
        return target

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of etcd's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> EtcdServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
