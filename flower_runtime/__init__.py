"""Running unmodified Flower Apps: the app's manifest, and (in process-side modules) the
ServerApp host and the device's ClientApp worker."""

import importlib.util
import re
import sys
from collections.abc import Sequence

CLIENT_WORKER_MODULE = "flower_runtime.client_worker"
SERVER_HOST_MODULE = "flower_runtime.server_host"
RUN_CREDENTIAL_ENV = "AGATA_RUN_CREDENTIAL"
"""How a ServerApp host started for one run alone gets the run's credential."""
TRAFFIC_LINE = "model bytes moved: {sent} to the devices, {received} from them"
"""The ServerApp host's last line about its run: the array bytes of the whole messages it sent
and received (``moved_bytes`` reads it back)."""
_TRAFFIC = re.compile(r"model bytes moved: (\d+) to the devices, (\d+) from them")
DEFAULT_PRELOAD = ("numpy", "torch")
"""What a warm worker or host imports before its job comes (what apps commonly need)."""


def flower_installed() -> bool:
    """Whether Flower Apps can run here at all (checked without importing Flower)."""
    return importlib.util.find_spec("flwr") is not None


def warm_argv(module: str, modules: Sequence[str] = DEFAULT_PRELOAD) -> list[str]:
    """The command line of a warm ``module`` process, which imports ``modules`` and waits for
    its job on stdin."""
    return [sys.executable, "-u", "-m", module, "--warm", "--preload", ",".join(modules)]


def preload(modules: Sequence[str]) -> list[str]:
    """Import what apps commonly need now, so a run does not wait for it; return what loaded."""
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        loaded.append(name)
    return loaded


def moved_bytes(output: str) -> int | None:
    """The bytes both ways in the last ``TRAFFIC_LINE`` of a host's output, or None."""
    found = _TRAFFIC.findall(output)
    return int(found[-1][0]) + int(found[-1][1]) if found else None
