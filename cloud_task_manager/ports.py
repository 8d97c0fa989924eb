"""Ports for task servers: a task may have a port of its own, or none (issue 21: devices reach
its runs through the cloud). A task server that still listens on a TCP port of its own (a
legacy ``server.py``) gets a free one when its run starts."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port that is free on every interface of this machine at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        port: int = probe.getsockname()[1]
    return port


def server_port(own: int | None) -> int:
    """The port a task's server listens on for a run: the task's own, else a free one."""
    return own if own is not None else free_port()
