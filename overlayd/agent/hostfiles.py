"""subnet.env, the file the CNI plugin and Docker read our subnet and MTU from."""

from __future__ import annotations

import logging
from pathlib import Path

from overlayd.base.atomicfile import write_atomic
from overlayd.base.outage import Outage
from overlayd.subnet.subnetenv import SubnetEnv

log = logging.getLogger(__name__)


class SubnetFileError(OSError):
    """subnet.env cannot be written; the message names --subnet-file and the fix."""


class SubnetFile:
    """Keeps ``--subnet-file`` what it should be; a failure is logged when it starts and ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.check = Outage(log, "could not write subnet.env", logging.ERROR)

    def write(self, env: SubnetEnv) -> bool:
        """Replace the file if its content differs (atomically); True if it was written."""
        try:
            written = write_atomic(self.path, env.render())
        except OSError as exc:
            raise SubnetFileError(
                f"--subnet-file {self.path}: cannot write it ({exc.strerror}: {exc.filename}); give a "
                "writable path (the systemd unit allows /run/flannel); the CNI plugin needs it to attach "
                "containers"
            ) from None
        self.check.succeeded()
        if written:
            log.info("wrote %s (subnet %s)", self.path, env.own_subnet)
        return written

    def failed(self, exc: SubnetFileError) -> None:
        self.check.failed(exc)
