"""How the suite spreads over pytest-xdist workers (``-n N --dist loadfile``).

A module's tests stay on one worker (they share its stack of processes), and the browser
tests' folder counts as one unit (they share one browser and one stack per worker, so spread
over two workers they would start both twice). Units are handed out longest first, so that no
long module starts last while the other workers sit idle. The expected times are wall seconds
measured on the 2-core machine (2026-12-07); they only order the work, a wrong one costs time,
never a result. A module not listed counts as short.
"""

from __future__ import annotations

from typing import Any

SHARED_FOLDERS = ("tests/web/",)
"""Folders whose modules share session-scoped fixtures: one scheduling unit each."""

EXPECTED_S: dict[str, float] = {
    "tests/web/": 110,
    "tests/e2e/test_e2e_faults.py": 121,
    "tests/cloud_gateway/test_gw_fuzz.py": 101,
    "tests/e2e/test_e2e_benchmark_apps.py": 69,
    "tests/e2e/test_e2e_flwr_cli.py": 68,
    "tests/e2e/test_e2e_flows.py": 68,
    "tests/e2e/test_e2e_elastic.py": 68,
    "tests/e2e/test_e2e_host_restart.py": 57,
    "tests/cloud_task_manager/test_ctm_replicas.py": 51,
    "tests/e2e/test_e2e_data_plane.py": 46,
    "tests/e2e/test_e2e_flower_apps.py": 42,
    "tests/cli/test_cli_commands.py": 35,
    "tests/cli/test_cli_up_resume.py": 34,
    "tests/e2e/test_e2e_broker_roles.py": 33,
    "tests/e2e/test_e2e_results.py": 31,
    "tests/e2e/test_e2e_run_ends.py": 31,
    "tests/e2e/test_e2e_replicas.py": 26,
    "tests/e2e/test_e2e_netns.py": 24,
    "tests/cloud_gateway/test_gw_http.py": 24,
    "tests/e2e/test_e2e_wiped_checkpoints.py": 21,
    "tests/cloud_task_manager/test_ctm_migrations.py": 21,
    "tests/e2e/test_e2e_bad_checkpoint.py": 20,
    "tests/tasks/test_tasks_digits.py": 19,
    "tests/e2e/test_e2e_containers.py": 19,
    "tests/cli/test_cli_up_leak.py": 19,
    "tests/cloud_task_manager/test_ctm_processes.py": 18,
    "tests/cloud_task_manager/test_ctm_tasks.py": 17,
    "tests/interconnect/test_mi_rpc.py": 16,
    "tests/cli/test_cli_up.py": 14,
    "tests/e2e/test_e2e_identity.py": 14,
    "tests/flower_runtime/test_fr_warm_preload.py": 14,
    "tests/e2e/test_e2e_confinement.py": 14,
    "tests/services/test_svc_processes.py": 14,
    "tests/flower_runtime/test_fr_door.py": 14,
    "tests/e2e/test_e2e_disk_full.py": 14,
    "tests/cloud_task_manager/test_ctm_deadlines.py": 13,
    "tests/packaging/test_wheel.py": 12,
    "tests/user_manager/test_um_service.py": 12,
    "tests/task_daemon_lib/test_containers.py": 11,
    "tests/cloud_task_manager/test_ctm_result_contents.py": 10,
    "tests/packaging/test_device_install.py": 9,
}


def scope_of(nodeid: str) -> str:
    """The scheduling unit of a test: its shared folder, else its module."""
    module = nodeid.split("::", 1)[0]
    for folder in SHARED_FOLDERS:
        if module.startswith(folder):
            return folder
    return module


def longest_first(items: list[Any]) -> None:
    """Reorder collected tests, in place, by their unit's expected time, longest first; the
    order within a unit (and among units of equal time) stays as collected."""
    items.sort(key=lambda item: -EXPECTED_S.get(scope_of(item.nodeid), 0.0))


def make_scheduler(config: Any, log: Any) -> Any:
    """xdist's scheduler by file, with the shared folders as one unit each, taking the units
    in the order collected (longest first) instead of by their number of tests."""
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    config.option.loadscopereorder = False
    return UnitScheduling(config, log)
