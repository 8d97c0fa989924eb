"""What the next warm spares import follows what the last runs' apps use (read, never run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flower_runtime import SERVER_HOST_MODULE, spare_imports, warm_argv
from flower_runtime.spare_imports import SpareImports, app_imports

pytestmark = pytest.mark.unit

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def make_app(folder: Path, files: dict[str, str], dependencies: str = "") -> Path:
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "x"\nversion = "1"\ndependencies = [{dependencies}]\n')
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_an_app_imports_what_its_files_import_and_its_manifest_declares(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", {
        "pkg/server_app.py": "import numpy as np\nfrom flwr.app import Context\n"
                             "def later():\n    import torch.nn\n",
        "pkg/task.py": "from . import server_app\nfrom .models import Net\n",
        "pkg/broken.py": "def (:\n",
        ".hidden/secret.py": "import tensorflow\n",
        "notes.txt": "import jax\n",
    }, dependencies='"scikit-learn>=1.3", "Pillow ; python_version > \'3\'"')
    (app / "pkg" / "linked.py").symlink_to(app / "pkg" / "server_app.py")
    names = app_imports(app)
    assert {"numpy", "flwr", "torch", "scikit_learn", "pillow"} <= names
    assert not names & {"tensorflow", "jax", "models", "server_app"}


def test_a_missing_or_unreadable_app_adds_nothing(tmp_path: Path) -> None:
    assert app_imports(tmp_path / "absent") == frozenset()
    app = make_app(tmp_path / "bad", {"a.py": "import numpy\n"})
    (app / "pyproject.toml").write_text("[project\n")
    assert app_imports(app) == {"numpy"}


def test_the_shipped_apps_are_read_as_what_they_use() -> None:
    assert {"numpy", "flwr"} <= app_imports(TASKS / "app_stream")
    assert "torch" not in app_imports(TASKS / "app_stream")
    assert "torch" in app_imports(TASKS / "app_digits")


def test_spares_import_the_candidates_the_last_runs_used(tmp_path: Path) -> None:
    plain = make_app(tmp_path / "plain", {"a.py": "import numpy\n"})
    with_torch = make_app(tmp_path / "torch", {"a.py": "import torch.nn\nimport os\n"})
    nothing = make_app(tmp_path / "nothing", {"a.py": "import json\n"})
    imports = SpareImports(SERVER_HOST_MODULE, ("numpy", "torch"), remember=2)
    assert imports.modules() == ("numpy", "torch")  # before any run: all of them
    assert imports.argv() == warm_argv(SERVER_HOST_MODULE, ("numpy", "torch"))
    assert imports.after_run_of(plain) == warm_argv(SERVER_HOST_MODULE, ("numpy",))
    imports.after_run_of(with_torch)
    assert imports.modules() == ("numpy", "torch")
    imports.after_run_of(nothing)
    assert imports.modules() == ("torch",)  # the plain app's run is no longer remembered
    imports.after_run_of(nothing)
    assert imports.modules() == ()


def test_an_app_never_adds_a_module_the_operator_did_not_name(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", {"a.py": "import os, subprocess, numpy\n"},
                   dependencies='"evil-package"')
    imports = SpareImports(SERVER_HOST_MODULE, ("numpy", "torch"))
    assert imports.after_run_of(app) == warm_argv(SERVER_HOST_MODULE, ("numpy",))


def test_reading_an_app_stops_at_its_bounds(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(tmp_path / "app", {"a.py": "import numpy\n", "b.py": "import torch\n",
                                      "c.py": "import scipy\n" + "x = 1\n" * 200})
    assert {"numpy", "torch", "scipy"} <= app_imports(app)
    monkeypatch.setattr(spare_imports, "MAX_SOURCE_BYTES", 100)  # c.py is skipped
    assert "scipy" not in app_imports(app) and "torch" in app_imports(app)
    monkeypatch.setattr(spare_imports, "MAX_TOTAL_BYTES", 20)  # a.py fits, b.py does not
    assert app_imports(app) == {"numpy"}
    monkeypatch.setattr(spare_imports, "MAX_ENTRIES", 0)
    assert app_imports(app) == frozenset()


def test_a_fifo_or_a_link_named_like_a_source_is_not_read(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", {"a.py": "import numpy\n"})
    os.mkfifo(app / "waits.py")  # reading it would block until a writer came
    (tmp_path / "outside.py").write_text("import torch\n")
    (app / "link.py").symlink_to(tmp_path / "outside.py")
    assert app_imports(app) == {"numpy"}


def test_import_lines_are_read_as_python_writes_them(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", {"a.py": (
        "import numpy.linalg as la, torch  # both\n"
        "    from sklearn.cluster import KMeans\n"
        "from . import sibling\nfrom .pkg import thing\n"
        "x = 1; import json\n"  # after a statement on the line: not read (json is no candidate)
        "importer = 2\nfrom_ = 3\n")})
    assert app_imports(app) == {"numpy", "torch", "sklearn"}
