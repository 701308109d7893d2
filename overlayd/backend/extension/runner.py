"""extension's per-peer commands kept in line with the peer leases, off the reconciler's thread.

Level-triggered where flanneld is edge-triggered: the runner is handed every peer lease on each
change (``sync``) and compares them with the ones it ran ``SubnetAddCommand`` for (kept in the
state directory). A new lease, or a lease written again (a renewal re-puts it, and flanneld runs
the command again for that too), gets ``SubnetAddCommand``; a lease gone gets
``SubnetRemoveCommand`` with the data that lease last had. A failed command is retried with
backoff until it succeeds or the lease it was for changes (flanneld logs it and never retries).
Commands run on a few worker threads, one at a time per peer and each with a timeout, so a hung
command holds up only its own peer. Peers wait for ``PostStartupCommand`` (which may make the
device their commands use), as in flanneld, where it runs before the peer watch starts.

After a restart every present peer's ``SubnetAddCommand`` runs again, as flanneld's does (it sees
every lease as added at start); a peer whose lease went while the agent was down gets its
``SubnetRemoveCommand`` from the kept record, which flanneld never runs.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from overlayd.backend.extension.command import CommandResult, kill_group, run_command, shown
from overlayd.backend.extension.config import TYPE, ExtensionConfig
from overlayd.base.atomicfile import write_atomic
from overlayd.base.backoff import Backoff
from overlayd.subnet.lease import Lease

log = logging.getLogger(__name__)

WORKERS = 4  # commands running at once: one hung command leaves three for the other peers
RETRY_START, RETRY_CAP = 1.0, 60.0  # seconds between attempts of a failing command
OWN = ""  # the key PostStartupCommand's job runs under (no lease key is empty)


class Job(Enum):
    """Which command, as flannel's config names it."""

    POST_STARTUP = "PostStartupCommand"
    ADD = "SubnetAddCommand"
    REMOVE = "SubnetRemoveCommand"


@dataclass(frozen=True)
class PeerData:
    """What a peer's commands are given: ``SUBNET`` and ``PUBLIC_IP`` in their environment, the
    BackendData string on standard input; ``revision``: the lease's etcd revision (another one
    runs ``SubnetAddCommand`` again; -1: read from the record at start)."""

    subnet: str
    public_ip: str
    data: str
    revision: int = 0

    def env(self) -> dict[str, str]:
        return {"SUBNET": self.subnet, "PUBLIC_IP": self.public_ip}

    def describe(self) -> str:
        return f"peer {self.subnet} (PublicIP {self.public_ip})"


@dataclass(frozen=True)
class OwnStart:
    """What ``PostStartupCommand`` is given: this host's Network, subnet and PublicIP."""

    network: str
    subnet: str
    public_ip: str

    def env(self) -> dict[str, str]:
        return {"NETWORK": self.network, "SUBNET": self.subnet, "PUBLIC_IP": self.public_ip}

    def describe(self) -> str:
        return f"subnet {self.subnet}"


@dataclass
class Failing:
    """A command that failed: for which input, how often, and when it is tried again."""

    job: Job
    data: PeerData | OwnStart
    due: float
    attempts: int = 1
    why: str = ""
    backoff: Backoff = field(default_factory=lambda: Backoff(start=RETRY_START, cap=RETRY_CAP))


def peer_data(lease: Lease) -> PeerData | str:
    """The inputs of ``lease``'s commands, or why it has none: flanneld hands the commands the
    BackendData only as a JSON string, and skips a lease whose BackendData is anything else."""
    raw = lease.attrs.extra_backend_data
    data = json.loads(raw) if raw else ""
    if not isinstance(data, str):
        return f"its BackendData {raw} is not a JSON string (the output of a PreStartupCommand)"
    return PeerData(str(lease.subnet), str(lease.attrs.public_ip), data, lease.mod_revision)


def load_record(path: Path) -> dict[str, PeerData]:
    """The peers the previous run ran ``SubnetAddCommand`` for ({} if none were kept)."""
    try:
        kept = json.loads(path.read_text())
        return {key: PeerData(item["Subnet"], item["PublicIP"], item["BackendData"], -1)
                for key, item in kept.items()}  # fmt: skip
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("cannot read %s (%s): peers that left while the agent was down do not get their "
                    "SubnetRemoveCommand", path, exc)  # fmt: skip
        return {}


class CommandRunner:
    """Runs one config's commands; its threads stop at ``close``, which kills running commands."""

    def __init__(
        self, config: ExtensionConfig, record: Path, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config, self._record, self._clock = config, record, clock
        self._cond = threading.Condition()
        self._wanted: dict[str, PeerData] | None = None  # None until the first sync
        self._done = load_record(record)  # the peers SubnetAddCommand ran for (ok or not), by key
        self._failing: dict[str, Failing] = {}
        self._running: set[str] = set()
        self._start: OwnStart | None = None  # PostStartupCommand's input wanted
        self._started: OwnStart | None = None  # ... and the one it succeeded with
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._reported: set[tuple[str, int]] = set()  # bad leases named, by (key, revision)
        self._stopping = False
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="extension-command")
        self._thread = threading.Thread(target=self._dispatch, name="extension-dispatch", daemon=True)
        self._thread.start()

    # ---- inputs (the reconciler's thread) ----------------------------------------------------------

    def start(self, own: OwnStart) -> None:
        """Run ``PostStartupCommand`` for ``own`` unless it already ran for it."""
        with self._cond:
            if own != self._start:
                self._start = own
                self._failing.pop(OWN, None)
                self._cond.notify_all()

    def sync(self, peers: Mapping[str, Lease]) -> None:
        """Make the extension leases among ``peers`` the ones commands are run for."""
        wanted: dict[str, PeerData] = {}
        for key, lease in peers.items():
            if lease.attrs.backend_type != TYPE:
                continue  # flanneld ignores other backends' leases too
            data = peer_data(lease)
            if isinstance(data, str):
                if (key, lease.mod_revision) not in self._reported:
                    self._reported.add((key, lease.mod_revision))
                    log.error("lease %s: %s; its commands are not run until it is written again", key, data)
                continue
            wanted[key] = data
        with self._cond:
            for key, failing in list(self._failing.items()):
                stale = wanted.get(key) != failing.data if failing.job is Job.ADD else key in wanted
                if key != OWN and stale:
                    del self._failing[key]  # its lease changed, went or came back: that decides now
            if wanted != self._wanted:
                self._wanted = wanted
                self._cond.notify_all()

    def failing(self) -> dict[str, str]:
        """The commands failing now, by key ("" for PostStartupCommand): why."""
        with self._cond:
            return {key: failing.why for key, failing in self._failing.items()}

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            for process in self._processes:
                kill_group(process)
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._thread.join(timeout=5)

    # ---- the dispatcher's thread ---------------------------------------------------------------------

    def _dispatch(self) -> None:
        with self._cond:
            while not self._stopping:
                now = self._clock()
                for job in self._due(now):
                    self._running.add(job[0])
                    self._pool.submit(self._run, *job)
                waits = [f.due - now for key, f in self._failing.items() if key not in self._running]
                self._cond.wait(max(0.0, min(waits)) if waits else None)

    def _due(self, now: float) -> list[tuple[str, Job, PeerData | OwnStart]]:
        """The commands to start now (the lock held)."""
        jobs: list[tuple[str, Job, PeerData | OwnStart]] = []
        start = self._start
        if start is not None and start != self._started and self._ready(OWN, now):
            if self._config.post_startup:
                jobs.append((OWN, Job.POST_STARTUP, start))
            else:
                self._started = start
        if self._started is None or self._wanted is None:
            return jobs  # peers wait for PostStartupCommand and for the first listing
        for key in self._wanted.keys() | self._done.keys():
            if not self._ready(key, now):
                continue
            want, done = self._wanted.get(key), self._done.get(key)
            if want is not None and (want != done or key in self._failing):
                jobs.append((key, Job.ADD, want))
            elif want is None and done is not None:
                jobs.append((key, Job.REMOVE, done))
        due = [job for job in jobs if not self._skipped(*job)]
        if len(due) < len(jobs):
            self._save()
        return due

    def _ready(self, key: str, now: float) -> bool:
        failing = self._failing.get(key)
        return key not in self._running and (failing is None or failing.due <= now)

    def _skipped(self, key: str, job: Job, data: PeerData | OwnStart) -> bool:
        """Settle a job whose command is not configured as done at once (the lock held)."""
        if job is Job.ADD and not self._config.subnet_add:
            self._done[key] = data  # type: ignore[assignment]
        elif job is Job.REMOVE and not self._config.subnet_remove:
            self._done.pop(key, None)
        else:
            return False
        return True

    def _run(self, key: str, job: Job, data: PeerData | OwnStart) -> None:
        script = {Job.POST_STARTUP: self._config.post_startup, Job.ADD: self._config.subnet_add,
                  Job.REMOVE: self._config.subnet_remove}[job]  # fmt: skip
        stdin = data.data if isinstance(data, PeerData) else ""
        try:
            result = run_command(script, data.env(), stdin, self._config.timeout, started=self._track)
        except OSError as exc:  # sh itself could not be started
            result = CommandResult(127, b"", str(exc).encode(), 0.0)
        with self._cond:
            self._running.discard(key)
            # A PostStartupCommand for a subnet no longer held says nothing about the current one.
            if not self._stopping and (job is not Job.POST_STARTUP or data == self._start):
                self._settle(key, job, data, result)
            self._cond.notify_all()

    def _track(self, process: subprocess.Popen[bytes]) -> None:
        with self._cond:
            self._processes.add(process)
            if self._stopping:
                kill_group(process)

    def _settle(self, key: str, job: Job, data: PeerData | OwnStart, result: CommandResult) -> None:
        """Record how a command went, and log it (the lock held)."""
        self._processes = {p for p in self._processes if p.returncode is None}
        if job is Job.ADD:
            assert isinstance(data, PeerData)
            self._done[key] = data  # also when it failed: a removal still runs the remove command
        elif job is Job.REMOVE and result.ok and self._done.get(key) == data:
            del self._done[key]
        elif job is Job.POST_STARTUP and result.ok:
            assert isinstance(data, OwnStart)
            self._started = data
        if job is not Job.POST_STARTUP:
            self._save()
        what = f"{job.value} for {data.describe()}"
        if result.ok:
            earlier = self._failing.pop(key, None)
            output = shown(result.stdout)
            after = f" after {earlier.attempts} failed attempt(s)" if earlier else ""
            log.info("%s done%s%s", what, after, f": {output}" if output else "")
            return
        why = result.failure(self._config.timeout)
        failing = self._failing.get(key)
        if failing is None or failing.data != data or failing.job is not job:
            failing = self._failing[key] = Failing(job, data, 0.0, 0)
        failing.attempts += 1
        delay = failing.backoff.next()
        failing.due = self._clock() + delay
        level = logging.ERROR if why != failing.why else logging.DEBUG
        failing.why = why
        log.log(level, "%s %s; retrying in %.0f s and with backoff until it succeeds", what, why, delay)

    def _save(self) -> None:
        """Keep the peers SubnetAddCommand ran for, so the next run can remove those that left."""
        kept = {key: {"Subnet": p.subnet, "PublicIP": p.public_ip, "BackendData": p.data}
                for key, p in sorted(self._done.items())}  # fmt: skip
        try:
            write_atomic(self._record, json.dumps(kept, indent=1), 0o600)
        except OSError as exc:
            log.warning("cannot keep %s (%s)", self._record, exc)
