"""One agent per network per network namespace: the abstract socket claim, its holder's pid, its
release when the holder dies, and a non-agent squatting on the name."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from overlayd.agent.hostguard import MAX_ABSTRACT_NAME, NetworkClaimed, claim_name, claim_network

# Bind, say so, and hold until stdin closes (or the process is killed).
HOLD = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\\0" + sys.argv[1]); s.listen(1)
print("bound", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def prefix() -> str:
    """A prefix no real agent on this machine serves."""
    return f"/test-{secrets.token_hex(6)}/network"


def test_a_second_claim_names_the_holder_and_another_prefix_is_free(prefix: str) -> None:
    claim = claim_network(prefix, os.geteuid())
    try:
        with pytest.raises(NetworkClaimed) as refused:
            claim_network(prefix, os.geteuid())
        assert refused.value.holder.pid == os.getpid()
        other = claim_network(prefix + "-other", os.geteuid())
        other.close()
    finally:
        claim.close()
    claim_network(prefix, os.geteuid()).close()  # free again once closed


def test_the_claim_goes_with_its_process(prefix: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, claim_name(prefix)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "bound\n"
        with pytest.raises(NetworkClaimed) as refused:
            claim_network(prefix, os.geteuid())
        assert refused.value.holder.pid == holder.pid
        assert f"another overlayd (pid {holder.pid}) serves --etcd-prefix {prefix}" == str(refused.value)
    finally:
        holder.kill()
        holder.wait()
    claim_network(prefix, os.geteuid()).close()


def test_a_name_held_by_another_user_is_reported_not_obeyed(prefix: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the squatter as another user")
    squatter = subprocess.Popen([sys.executable, "-c", HOLD, claim_name(prefix)], user=65534, group=65534,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert squatter.stdout is not None and squatter.stdout.readline() == "bound\n"
        claim = claim_network(prefix, os.geteuid())
        assert claim.squatter is not None
        assert (claim.squatter.pid, claim.squatter.uid) == (squatter.pid, 65534)
        assert claim.sock is None
    finally:
        squatter.kill()
        squatter.wait()


def test_claim_names() -> None:
    assert claim_name("/coreos.com/network") == "overlayd-agent:/coreos.com/network"
    long = claim_name("/x" * 100)
    assert len(long.encode()) <= MAX_ABSTRACT_NAME and long.startswith("overlayd-agent:sha256:")
    assert long != claim_name("/x" * 99 + "/y")
