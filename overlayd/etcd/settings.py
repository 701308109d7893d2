"""How to reach etcd: the endpoints, key prefix, TLS files and login, and which combinations fail.

Built from the command line by ``AgentOptions.etcd_settings()``; the registry takes it, so nothing
in ``overlayd.etcd`` reads the agent's options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EtcdSettings:
    """How to reach etcd, as flanneld's ``--etcd-*`` flags say it."""

    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    prefix: str = "/coreos.com/network"
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 5.0


def etcd_security_problem(
    endpoints: Sequence[str],
    cafile: str | None,
    certfile: str | None,
    keyfile: str | None,
    username: str | None,
    password: str | None,
) -> str | None:
    """Why these etcd TLS and auth options cannot work together, or None; never quotes the password.

    The endpoint's scheme decides TLS, as for etcdctl: https needs a CA file (the client library
    reads no system trust store by itself; ``resolve_options`` names the system's bundle), and
    TLS files next to some plain http endpoints would be silently unused for those.
    """
    if bool(certfile) != bool(keyfile):
        return "--etcd-certfile and --etcd-keyfile go together: give a client certificate and its key"
    if bool(username) != bool(password):
        return "--etcd-username and --etcd-password go together: give both or neither"
    for endpoint in endpoints:
        https = endpoint.lower().startswith("https://")
        if https and not cafile:
            return (
                f"etcd endpoint {endpoint} is https but --etcd-cafile is not given and this host has "
                "no system CA bundle: give the CA certificate that signed etcd's server certificate"
            )
        if not https and (cafile or certfile):
            return (
                f"--etcd-cafile/--etcd-certfile are given but etcd endpoint {endpoint} is plain http: "
                "use https:// endpoints"
            )
    return None
