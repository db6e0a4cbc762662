"""Cluster DNS for the kubelet harness' pods: a headless Service's pod names resolve to this host.

In a cluster, an Indexed Job's pod `<job>-<index>` with `subdomain: <service>` is reachable as
`<job>-<index>.<service>.<namespace>.svc[.cluster.local]`. The harness cannot change the resolver of the processes
it starts, so it rewrites those names where the pod spec puts them (command arguments and env values) to
127.0.0.1, and a declared containerPort after such a name to a free local port of that Job: every local pod shares
the host's network, where two Jobs' pods cannot both listen on 29400.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resolver(job: str, namespace: str, subdomain: str | None, ports: dict[int, int]) -> Callable[[str], str]:
    """A function rewriting the pod names of `job` under `subdomain` in a string (identity without a subdomain)."""
    if not subdomain:
        return lambda value: value
    ns = re.escape(namespace)
    name = re.compile(
        rf"\b{re.escape(job)}-\d+\.{re.escape(subdomain)}(?:\.{ns}(?:\.svc(?:\.cluster\.local)?)?)?(?::(\d+))?\b"
    )

    def resolve(m: re.Match[str]) -> str:
        if m[1] is None:
            return "127.0.0.1"
        return f"127.0.0.1:{ports.get(int(m[1]), int(m[1]))}"

    return lambda value: name.sub(resolve, value)
