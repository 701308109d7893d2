"""Two networks' agents on one host: each must write its own subnet.env, or the second one stops
at start naming the file and the fix (flanneld's one daemon per -etcd-prefix and -subnet-file)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from overlayd.agent.startup import StartError, claim_this_network


def test_a_second_network_s_agent_on_the_same_subnet_file_is_refused(tmp_path: Path) -> None:
    red, blue = f"/test-{secrets.token_hex(6)}/red", f"/test-{secrets.token_hex(6)}/blue"
    shared = tmp_path / "subnet.env"
    first = claim_this_network(red, shared)
    try:
        with pytest.raises(StartError, match=rf"writes --subnet-file {shared}, for another network .*"
                           "give each network's agent its own --subnet-file"):
            claim_this_network(blue, shared)
        # Refused without keeping a claim: blue's prefix is free for the corrected start.
        claim_this_network(blue, tmp_path / "blue" / "subnet.env").close()
        with pytest.raises(StartError, match=rf"serves --etcd-prefix {red}"):
            claim_this_network(red, tmp_path / "other.env")
    finally:
        first.close()
    claim_this_network(blue, shared).close()  # free once the first agent is gone
