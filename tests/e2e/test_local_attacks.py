"""A local user or a careless operator against a running agent: the metrics port held open by
idle half-sent requests, a second agent started beside the first, stray signals, and a state
directory others can write or with a planted link. Each attack runs against the lab's real agents;
each test shows the refusal or that the agent kept doing its job."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from labtools import needs_lab, wait_for

from overlayd.lab.namespaces import METRICS_PORT, Lab, LabHost, sh

pytestmark = [needs_lab, pytest.mark.root]

IDLE_CONNECTIONS = 600  # over the server's 256 per address
# Slowloris: keep IDLE_CONNECTIONS half-sent requests open, re-opening twice a second those the
# server closed; "ready" once all are open.
SLOWLORIS = """
import selectors, socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
selector = selectors.DefaultSelector()
def connect():
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        sock.sendall(b"GET /metrics HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nX-a: b\\r\\n")
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    except OSError:
        pass
for _ in range(count):
    connect()
print("ready", flush=True)
while True:
    time.sleep(0.5)
    for key, _ in selector.select(0):
        selector.unregister(key.fileobj)
        key.fileobj.close()
    for _ in range(count - len(selector.get_map())):
        connect()
"""


def proc_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no thread count for pid {pid}")


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def slowloris(host: LabHost) -> Iterator[subprocess.Popen[str]]:
    """The attack on ``host``'s metrics port, from inside its namespace; always stopped."""
    attacker = subprocess.Popen(
        ["ip", "netns", "exec", host.netns, sys.executable, "-c", SLOWLORIS, str(METRICS_PORT),
         str(IDLE_CONNECTIONS)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert attacker.stdout is not None and attacker.stdout.readline() == "ready\n"
        yield attacker
    finally:
        attacker.kill()
        attacker.wait()


def test_idle_connections_on_the_metrics_port_neither_stall_nor_blind_the_agent(lab: Lab) -> None:
    h1 = lab.hosts[0]
    threads, fds = proc_threads(h1.pid), proc_fds(h1.pid)
    with slowloris(h1):
        # A peer joins during the attack: h1 programs its route, from the watch, at once.
        h4 = lab.add_host()
        wait_for(lambda: h4.subnet_env().get("FLANNEL_SUBNET"), 30, "h4's lease")
        h4_net = h4.subnet_env()["FLANNEL_SUBNET"].replace(".1/", ".0/")
        wait_for(lambda: h4_net in sh("ip", "-4", "route", "show", "dev", "flannel.1", netns=h1.netns),
                 30, "h1 to program the route to h4 while its metrics port is under attack")  # fmt: skip
        assert lab.ping(h1, h4.flannel_address() or "", count=2)
        # Probes and scrapes still answer; the agent holds one thread per listener, at most 256
        # of the attacker's connections, and has descriptors to spare.
        assert lab.http_get(h1, "/healthz") == (200, "ok\n")
        assert lab.metric(h1, "overlayd_peers_programmed") == 3
        assert proc_threads(h1.pid) <= threads + 4, "the HTTP side started threads per connection"
        assert proc_fds(h1.pid) <= fds + 256 + 16
        assert "Too many open files" not in h1.log_file.read_text()
    # The connections the attacker left are closed by their deadline; no descriptor is kept.
    wait_for(lambda: proc_fds(h1.pid) <= fds + 8, 30, "h1 to release the attacker's connections")
    log = h1.log_file.read_text()
    assert "connections open, the most allowed" in log and "Traceback" not in log


def second_agent(lab: Lab, host: LabHost, tmp_path: Path, *args: str) -> list[str]:
    """The command of another agent in ``host``'s namespace, with its own state and files."""
    return [
        "ip", "netns", "exec", host.netns, *lab.agent_command(host),
        f"--state-dir={tmp_path / 'state2'}", f"--subnet-file={tmp_path / 'subnet2.env'}",
        "--metrics-address=off", *args,
    ]  # fmt: skip


def test_a_second_agent_beside_the_first_is_refused_unless_it_serves_another_network(
    lab: Lab, tmp_path: Path
) -> None:
    h2 = lab.hosts[1]
    subnet_env = h2.subnet_file.read_text()
    second = subprocess.run(second_agent(lab, h2, tmp_path), capture_output=True, text=True, timeout=30,
                            check=False)  # fmt: skip
    output = second.stdout + second.stderr
    assert second.returncode == 2, output
    assert f"another overlayd (pid {h2.pid}) serves --etcd-prefix /coreos.com/network on this host" in output
    assert "or give this one the --etcd-prefix of another network" in output and "Traceback" not in output
    assert not (tmp_path / "subnet2.env").exists(), "the refused agent leased nothing"
    assert h2.subnet_file.read_text() == subnet_env and os.path.exists(f"/proc/{h2.pid}")

    log = tmp_path / "other.log"
    with log.open("wb") as out:
        other = subprocess.Popen(second_agent(lab, h2, tmp_path, "--etcd-prefix=/other.example/network"),
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: "is missing; waiting for it" in log.read_text(), 30,
                 "the agent for another network to run (and wait for its config)")  # fmt: skip
        assert other.poll() is None, log.read_text()
    finally:
        other.terminate()
        other.wait(timeout=15)
    assert h2.subnet_file.read_text() == subnet_env and os.path.exists(f"/proc/{h2.pid}")


def test_stray_signals_do_not_end_the_agent_and_sigusr1_logs_its_state(lab: Lab) -> None:
    h2 = lab.hosts[1]
    subnet = h2.subnet_env()["FLANNEL_SUBNET"].replace(".1/", ".0/")
    for signum in (signal.SIGUSR2, signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2):
        os.kill(h2.pid, signum)
    wait_for(lambda: "state: lease" in h2.log_file.read_text(), 15, "the state line of SIGUSR1")
    log = h2.log_file.read_text()
    [line] = [line for line in log.splitlines() if "state: lease" in line]
    assert f"state: lease {subnet} (public IP {h2.ip}" in line and "peers programmed; ready: ready" in line
    assert "Network 198.18.0.0/16" in line
    assert log.count("ignoring SIGUSR2") == 1 and log.count("ignoring SIGALRM") == 1
    assert os.path.exists(f"/proc/{h2.pid}") and lab.http_get(h2, "/healthz")[0] == 200
    assert lab.ping(h2, lab.hosts[0].flannel_address() or "", count=2)


def run_refused(lab: Lab, host: LabHost, state_dir: Path) -> str:
    """Run another agent on ``state_dir``; it must exit 2 at once. Returns what it printed."""
    command = ["ip", "netns", "exec", host.netns, *lab.agent_command(host), f"--state-dir={state_dir}",
               "--metrics-address=off", "--etcd-prefix=/unsafe-state/network"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output and "stopped (no lease was held)" in output
    return output


def test_a_state_dir_others_can_write_or_with_a_planted_link_is_refused(lab: Lab, tmp_path: Path) -> None:
    h3 = lab.hosts[2]
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    output = run_refused(lab, h3, shared)
    assert f"--state-dir {shared}: {shared} is writable by its group or by everyone (mode 0777)" in output
    assert f"chmod 700 {shared}" in output
    assert list(shared.iterdir()) == []

    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    precious = tmp_path / "precious.conf"
    precious.write_text("do not truncate\n")
    (planted / "lock").symlink_to(precious)
    output = run_refused(lab, h3, planted)
    assert f"{planted}/lock is a symbolic link (to {precious})" in output and f"rm {planted}/lock" in output
    assert precious.read_text() == "do not truncate\n"
