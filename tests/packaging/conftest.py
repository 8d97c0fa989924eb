"""The project's wheel, built once for the packaging tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``agata_flmngr-*.whl`` built from this source tree (no dependencies)."""
    root = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(root), str(REPO_ROOT)],
                   capture_output=True, text=True, timeout=120, check=True)
    return next(root.glob("agata_flmngr-*.whl"))

