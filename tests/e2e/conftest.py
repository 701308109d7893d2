"""The namespace lab as a fixture: real etcd, real agents, torn down even when a test fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labtools import running_lab

from overlayd.lab.namespaces import Lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Three converged hosts, shared by a test module."""
    with running_lab(tmp_path_factory, hosts=3) as lab:
        yield lab
