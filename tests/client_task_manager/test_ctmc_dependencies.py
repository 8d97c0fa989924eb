"""A Flower App's [project] dependencies are checked on the device: each must be importable."""

from __future__ import annotations

from pathlib import Path

import pytest

from client_task_manager.dependencies import check_app_dependencies, import_names
from client_task_manager.lifecycle import SetupFailed


def app(tmp_path: Path, dependencies: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        f"[project]\nname = 'x'\nversion = '1'\ndependencies = {dependencies}\n")
    return tmp_path


def failure(folder: Path) -> str:
    with pytest.raises(SetupFailed) as info:
        check_app_dependencies(folder, None)
    return str(info.value)


def test_installed_dependencies_pass_whatever_their_import_name(tmp_path: Path) -> None:
    check_app_dependencies(app(tmp_path, (
        '["flwr[simulation]>=1.41", "numpy>=1.26", "scikit-learn", "PyYAML ; python_version '
        '< \'3\'", "pywin32; sys_platform == \'win32\'"]')), None)
    assert "sklearn" in import_names("scikit-learn")
    assert import_names("Agata_No.Such-Module") == ("agata_no_such_module",)


def test_a_missing_distribution_is_named_with_its_import_name(tmp_path: Path) -> None:
    reason = failure(app(tmp_path, '["numpy", "agata-no-such-module>=2", "flwr"]'))
    assert reason == ("setup: agata-no-such-module (import agata_no_such_module) cannot be "
                      "imported on this device ([project] dependencies)")


def test_bad_dependencies_are_refused_naming_the_entry(tmp_path: Path) -> None:
    assert "'numpy >>= 1' is not a valid requirement" in failure(
        app(tmp_path, '["numpy >>= 1"]'))
    assert "'__import__(\"os\")' is not a valid requirement" in failure(
        app(tmp_path, '["__import__(\\"os\\")"]'))
    assert "is not a list" in failure(app(tmp_path, '"numpy"'))
    assert "3 is not a string" in failure(app(tmp_path, "[3]"))


def test_nothing_is_checked_without_a_manifest_nor_in_a_container_image(tmp_path: Path) -> None:
    check_app_dependencies(tmp_path, None)  # a script task
    check_app_dependencies(app(tmp_path, '["agata-no-such-module"]'), "python:3.11-slim")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    check_app_dependencies(tmp_path, None)  # no dependencies listed
