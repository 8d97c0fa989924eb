"""The layering rules: what each package may import, checked statically and in a real process.

Contracts and the libraries sit below every service; a device's packages never import the
cloud's, and the cloud's never import a device's.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT

CLOUD = {"cloud_task_manager", "cloud_gateway", "user_manager", "event_reader"}
DEVICE = {"client_task_manager", "client_gateway"}
OURS = CLOUD | DEVICE | {
    "agata_contracts", "agata_common", "microservice_interconnect", "task_daemon_lib",
    "flower_runtime", "agata_cli", "experiments", "cloud_web_interface",
}

ALLOWED: dict[str, set[str]] = {
    "microservice_interconnect": {"agata_contracts"},
    "task_daemon_lib": set(),
    "flower_runtime": {"agata_contracts", "task_daemon_lib"},
    "agata_contracts": set(),
    "agata_common": {"agata_contracts", "microservice_interconnect"},
    "client_task_manager": {"agata_contracts", "agata_common", "microservice_interconnect",
                            "task_daemon_lib", "flower_runtime"},
    "client_gateway": {"agata_contracts", "agata_common", "microservice_interconnect"},
    "user_manager": {"agata_contracts", "agata_common", "microservice_interconnect"},
    "cloud_task_manager": {"agata_contracts", "agata_common", "microservice_interconnect",
                           "task_daemon_lib", "flower_runtime"},
    "cloud_gateway": {"agata_contracts", "agata_common", "microservice_interconnect",
                      "cloud_web_interface"},
    "cloud_web_interface": set(),
    "event_reader": {"agata_common", "microservice_interconnect"},
    "agata_cli": {"agata_contracts", "agata_common", "microservice_interconnect",
                  "task_daemon_lib"},
}
"""Our packages each package may import besides itself (anything not listed is forbidden)."""


CONTRACTS_MAY_IMPORT = {"pydantic", "agata_contracts", *sys.stdlib_module_names}
"""Everything the contracts may import: they are the leaf both sides and the transport share."""
TRANSPORT_MAY_IMPORT_OF_CONTRACTS = {"agata_contracts.rpc"}
"""The one module of the contracts the transport consumes: the RPC declaration types."""


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a module imports, at any depth of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def imported_packages(path: Path) -> set[str]:
    """Top-level packages of ours that a module imports, at any depth of the file."""
    return {name.split(".")[0] for name in imported_modules(path)} & OURS


@pytest.mark.unit
@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_its_layer_allows(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    offences = [
        f"{path.relative_to(REPO_ROOT)} imports {', '.join(sorted(bad))}"
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        if (bad := imported_packages(path) - allowed)
    ]
    assert not offences, "\n".join(offences)


@pytest.mark.unit
def test_the_contracts_import_only_the_standard_library_pydantic_and_themselves() -> None:
    offences = [
        f"{path.relative_to(REPO_ROOT)} imports {', '.join(sorted(bad))}"
        for path in sorted((REPO_ROOT / "agata_contracts").rglob("*.py"))
        if (bad := {name for name in imported_modules(path)
                    if name.split(".")[0] not in CONTRACTS_MAY_IMPORT})
    ]
    assert not offences, "\n".join(offences)


@pytest.mark.unit
def test_the_transport_takes_only_the_rpc_declarations_from_the_contracts() -> None:
    offences = [
        f"{path.relative_to(REPO_ROOT)} imports {', '.join(sorted(bad))}"
        for path in sorted((REPO_ROOT / "microservice_interconnect").rglob("*.py"))
        if (bad := {name for name in imported_modules(path)
                    if name.split(".")[0] == "agata_contracts"}
            - TRANSPORT_MAY_IMPORT_OF_CONTRACTS)
    ]
    assert not offences, "\n".join(offences)


@pytest.mark.unit
def test_the_rules_cover_every_package() -> None:
    packages = {p.name for p in REPO_ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages - {"experiments", "tests"} <= set(ALLOWED), packages - set(ALLOWED)


def test_loading_a_device_loads_nothing_of_the_cloud_nor_flower() -> None:
    probe = (
        "import sys, client_task_manager.wiring, client_gateway.wiring;"
        f"cloud = {sorted(CLOUD | {'flwr', 'torch'})!r};"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(cloud)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout


@pytest.mark.unit
def test_a_forbidden_import_is_caught(tmp_path: Path) -> None:
    module = tmp_path / "offender.py"
    module.write_text("def f():\n    from cloud_task_manager.storage import TaskStorage\n")
    assert imported_packages(module) == {"cloud_task_manager"}
