"""A warm ClientApp worker or ServerApp host imports what ``warm_preload`` names, and only that."""

from __future__ import annotations

import subprocess

import pytest

from flower_runtime import CLIENT_WORKER_MODULE, SERVER_HOST_MODULE, warm_argv


@pytest.mark.parametrize("module", [CLIENT_WORKER_MODULE, SERVER_HOST_MODULE])
@pytest.mark.parametrize(("preload", "said"), [(("json", "numpy"), "warm (json, numpy)"),
                                               ((), "warm (nothing")])
def test_a_warm_process_preloads_what_it_is_told(module: str, preload: tuple[str, ...],
                                                 said: str) -> None:
    done = subprocess.run(warm_argv(module, preload), input="", capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert said in done.stderr
    assert "torch" not in done.stderr.split("warm (", 1)[1].split(")", 1)[0]
    assert "no job came" in done.stderr
