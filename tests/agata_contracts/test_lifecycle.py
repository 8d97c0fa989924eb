"""The [tool.agata] table: what a task needs and which files it leaves."""

from __future__ import annotations

import pytest

from agata_contracts.lifecycle import (
    NO_LIFECYCLE,
    SCRIPT_MANIFEST,
    LifecycleError,
    manifest_of,
    output_log_name,
    read_lifecycle,
)

pytestmark = pytest.mark.unit


def test_a_manifest_without_the_table_declares_nothing() -> None:
    assert read_lifecycle(b'[project]\nname = "x"\n') is NO_LIFECYCLE
    assert NO_LIFECYCLE.keeps("anything/at/all.bin")


def test_the_table_is_read_and_results_match_their_patterns() -> None:
    lifecycle = read_lifecycle(b"""
[tool.agata]
requires = ["numpy", "sklearn.svm"]
results = ["samples/*.png", "model.npz"]
image = "agata-task:local"
""")
    assert lifecycle.requires == ("numpy", "sklearn.svm")
    assert lifecycle.image == "agata-task:local"
    assert lifecycle.keeps("samples/round-1.png")
    assert lifecycle.keeps("model.npz")
    assert not lifecycle.keeps("scratch.tmp")
    assert not lifecycle.keeps("model.npz.bak")
    # the runtime's own log is always a result
    assert lifecycle.keeps("output-device-1.txt")
    assert not lifecycle.keeps("logs/output-device-1.txt")


@pytest.mark.parametrize(("table", "complaint"), [
    ('requires = ["os; rm -rf /"]', "module name"),
    ('results = ["../secrets"]', "relative file pattern"),
    ('results = ["/etc/passwd"]', "relative file pattern"),
    ('image = "UPPER CASE"', "image name"),
    ('entrypoint = "x"', "entrypoint"),
    ("requires = 3", "requires"),
    ("resume = \"yes please\"", "resume"),
])
def test_a_bad_table_names_the_manifest_and_the_key(table: str, complaint: str) -> None:
    with pytest.raises(LifecycleError) as error:
        read_lifecycle(f"[tool.agata]\n{table}\n".encode(), SCRIPT_MANIFEST)
    assert SCRIPT_MANIFEST in str(error.value) and complaint in str(error.value)


def test_broken_toml_and_a_non_table_are_refused() -> None:
    with pytest.raises(LifecycleError, match="not valid TOML"):
        read_lifecycle(b"[tool.agata\n")
    with pytest.raises(LifecycleError, match="must be a table"):
        read_lifecycle(b"[tool]\nagata = 3\n")


def test_which_file_holds_the_table_and_log_names() -> None:
    assert manifest_of({"pyproject.toml", "x.py"}) == "pyproject.toml"
    assert manifest_of({"server.py", SCRIPT_MANIFEST}) == SCRIPT_MANIFEST
    assert manifest_of({"server.py"}) is None
    assert output_log_name("server") == "output-server.txt"
    assert output_log_name("lab:7/x") == "output-lab_7_x.txt"
