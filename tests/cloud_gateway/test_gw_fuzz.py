"""Schemathesis against the gateway's own ``/openapi.json`` (real services behind it), with an
operator's token and with an enrolled device's own credential: no request it generates may get
a server error. Bounded and seeded, so a run is repeatable and short."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from experiments.stack import Api, Stack

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(SCHEMATHESIS is None,
                                reason="schemathesis is not installed (pip install -e .[dev])")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, str]]:
    """The cloud services, and an enrolled device's token."""
    stack = Stack(tmp_path_factory.mktemp("fuzz") / "stack", client_count=0)
    api = stack.start_cloud()
    try:
        token = api.enroll("fuzz-device")["join_token"]
        joined = api._request("POST", "/api/client/join", auth=False,
                              content_type="application/json",
                              data=json.dumps({"join_token": token,
                                               "client_id": "fuzz-device"}).encode())
        yield api, f"fuzz-device:{joined['secret']}"
    finally:
        stack.stop()


@pytest.mark.parametrize("who", ["operator", "device"])
def test_no_generated_request_gets_a_server_error(cloud: tuple[Api, str], who: str,
                                                  tmp_path: Path) -> None:
    api, device_token = cloud
    token = api.token if who == "operator" else device_token
    assert SCHEMATHESIS is not None
    result = subprocess.run(
        [SCHEMATHESIS, "run", f"{api.url}/openapi.json", "--checks", "not_a_server_error",
         "--phases", "coverage,fuzzing", "--max-examples", "12", "--seed", "7",
         "--workers", "1", "--request-timeout", "20", "--no-color",
         "-H", f"Authorization: Bearer {token}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary  # a 5xx fails the run (and is printed)
    generated = re.search(r"(\d+) generated", summary)
    assert generated is not None and int(generated.group(1)) > 0, summary
