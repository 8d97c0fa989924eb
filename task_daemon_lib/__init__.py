"""Reporting library for federated task code and the runner used by task managers."""

from task_daemon_lib.messages import (
    INFO_FINISHED,
    INFO_STARTED,
    REPORT_FD_ENV,
    STDOUT_PREFIX,
    ErrorMessage,
    InfoMessage,
    PrintMessage,
    ReportMessage,
    StatsMessage,
    TriggerMessage,
    encode_report,
    parse_report_line,
)
from task_daemon_lib.runner import ChildOutcome, ChildProcess, ChildStatus, python_argv
from task_daemon_lib.task_reporter import TaskReporter

__all__ = [
    "INFO_FINISHED",
    "INFO_STARTED",
    "REPORT_FD_ENV",
    "STDOUT_PREFIX",
    "ChildOutcome",
    "ChildProcess",
    "ChildStatus",
    "ErrorMessage",
    "InfoMessage",
    "PrintMessage",
    "ReportMessage",
    "StatsMessage",
    "TaskReporter",
    "TriggerMessage",
    "encode_report",
    "parse_report_line",
    "python_argv",
]
