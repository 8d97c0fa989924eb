"""The commands: each takes the gateway and the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agata_cli.app_archive import (
    AppArchive,
    folder_archive,
    is_app_archive,
    is_app_folder,
    read_archive,
)
from agata_cli.arguments import assignments, task_files
from agata_cli.client import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ApiError,
    CliError,
    Gateway,
    quote,
)
from agata_cli.follow import Follower, total_rounds
from agata_cli.output import endpoint, key_values, out, out_json, size, table, text, when

SHOWN_ROUNDS = 10
"""``tasks show`` lists this many of the latest rounds (``--json`` has them all)."""


def _lines(lines: Sequence[str], indent: str = "") -> None:
    for line in lines:
        out(indent + line)


def _task_path(task_id: str, suffix: str = "") -> str:
    return f"/api/tasks/{quote(task_id)}{suffix}"


def _paging_note(shown: int, total: int, offset: int, what: str) -> None:
    if total > shown:
        out(f"({what} {offset + 1}-{offset + shown} of {total}; use --limit and --offset)")


# -- tasks ------------------------------------------------------------------------------------


def tasks_list(gateway: Gateway, args: argparse.Namespace) -> int:
    """``tasks list``: a table of tasks, newest first."""
    body = gateway.get("/api/tasks", {"status": args.status, "limit": args.limit,
                                      "offset": args.offset})
    if args.json:
        out_json(body)
        return EXIT_OK
    tasks = body.get("tasks") or []
    if not tasks:
        out("no tasks" + (f" with status {args.status}" if args.status else ""))
        return EXIT_OK
    _lines(table(
        ["ID", "STATUS", "ENDPOINT", "RUNS", "FILES", "TAGS", "CREATED"],
        ([t["id"], t["status"], endpoint(t), t["runs"], len(t["files"]),
          t["tags"], when(t["created"])] for t in tasks),
    ))
    _paging_note(len(tasks), int(body.get("total") or 0), args.offset, "tasks")
    return EXIT_OK


def _metrics_table(rounds: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for entry in rounds:
        names.extend(n for n in entry["metrics"] if n not in names)
    return table(["ROUND", *(n.upper() for n in names), "REPORTED"],
                 ([r["round"], *(r["metrics"].get(n) for n in names), when(r["reported_at"])]
                  for r in rounds))


def run_devices_lines(devices: dict[str, Any]) -> list[str]:
    """The run's devices: who is in since when, rounds trained, who left and who replaced
    whom."""
    seats = devices["seats"]
    present = sum(1 for seat in seats if seat.get("left") is None)
    lines = [f"devices of run {devices['run']} ({present} in of {devices['devices']}, at "
             f"least {devices['min_devices']}):"]
    rows = []
    for seat in seats:
        gone = seat.get("left")
        state = (f"left after round {seat.get('left_after_round')}: {seat.get('why_left')}"
                 if gone is not None else "in")
        if seat.get("replaced_by"):
            state += f"; replaced by {seat['replaced_by']}"
        origin = (f"replaced {seat['replaced']}" if seat.get("replaced")
                  else "came back" if seat.get("rejoined") else "joined")
        rows.append([seat["client_id"], seat["partition_id"],
                     f"{origin} {_since(seat['joined'])} after round "
                     f"{seat['joined_after_round']}", seat["rounds_trained"], state])
    lines += ["  " + line for line in table(
        ["DEVICE", "PARTITION", "SINCE", "ROUNDS", "NOW"], rows)]
    return lines


def _since(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(unix))


def tasks_show(gateway: Gateway, args: argparse.Namespace) -> int:
    """``tasks show``: a task with its files, status reason, rounds and client reports."""
    task = gateway.get(_task_path(args.task_id))
    reports = gateway.get(_task_path(args.task_id, "/reports")).get("reports") or []
    metrics = gateway.get(_task_path(args.task_id, "/metrics"))
    devices = gateway.get(_task_path(args.task_id, "/devices"))
    if args.json:
        out_json({**task, "client_reports": reports, "metrics": metrics, "run_devices": devices})
        return EXIT_OK
    _lines(key_values([
        ("id", task["id"]),
        ("status", task["status"]),
        ("reason", task.get("status_reason")),
        ("endpoint", endpoint(task)),
        ("criteria", task["selection_criteria"]),
        ("server args", task["server_arguments"]),
        ("client args", task["client_arguments"]),
        ("tags", task["tags"]),
        ("runs", task["runs"]),
        ("replica", task.get("replica")),
        ("created", when(task["created"])),
        ("modified", when(task["modified"])),
        ("started", when(task.get("started_at"))),
        ("ended", when(task.get("ended_at"))),
    ]))
    files = task.get("files") or []
    out(f"files ({len(files)}):")
    if files:
        _lines(table(["NAME", "SIZE", "SHA256"],
                     ([f["name"], size(f["size"]), f["sha256"][:16]] for f in files)), "  ")
    rounds = metrics.get("rounds") or []
    if task["runs"]:
        out(f"rounds of run {metrics.get('run')} ({len(rounds)}):")
        if len(rounds) > SHOWN_ROUNDS:
            out(f"  (the last {SHOWN_ROUNDS}; --json has them all)")
        if rounds:
            _lines(_metrics_table(rounds[-SHOWN_ROUNDS:]), "  ")
    if devices.get("seats"):
        _lines(run_devices_lines(devices))
    out(f"client reports ({len(reports)}):")
    if reports:
        _lines(table(["CLIENT", "STATUS", "REPORTED", "REASON"],
                     ([r["client_id"], r["status"], when(r["reported_at"]),
                       text(r.get("reason")).replace("\n", " | ")] for r in reports)), "  ")
    return EXIT_OK


def _files_or_usage_error(args: argparse.Namespace) -> list[Path]:
    try:
        return task_files(args.file, args.from_dir)
    except ValueError as error:
        raise CliError(str(error), EXIT_USAGE) from None


def _upload_all(gateway: Gateway, task_id: str, files: list[Path], *, created: bool,
                quiet: bool) -> None:
    """Upload the files one by one; a failure says what was stored and how to retry."""
    done: list[str] = []
    for path in files:
        try:
            stored = gateway.upload(task_id, path)
        except OSError as error:
            raise _upload_failed(task_id, path, f"cannot read it: {error.strerror or error}",
                                 EXIT_USAGE, [], done, files, created) from None
        except CliError as error:
            raise _upload_failed(task_id, path, error.message, error.exit_code, error.details,
                                 done, files, created) from None
        done.append(path.name)
        if not quiet:
            for entry in stored.get("files") or []:
                out(f"uploaded {entry['name']} ({size(entry['size'])})")


def _upload_failed(task_id: str, path: Path, message: str, code: int, details: list[str],
                   done: list[str], files: list[Path], created: bool) -> CliError:
    left = [str(p) for p in files if p.name not in done]
    retry = " ".join(f"--file {shlex.quote(p)}" for p in left)
    lead = f"task {task_id} was created, but " if created else ""
    return CliError(
        f"{lead}uploading {path.name} failed: {message}",
        code,
        [*details,
         f"uploaded before the failure: {', '.join(done) if done else 'nothing'}",
         f"to retry: agata tasks upload {task_id} {retry}"],
    )


def _upload_app(gateway: Gateway, task_id: str, app: AppArchive, *, quiet: bool) -> None:
    """Upload a Flower App as one archive (its files replace the task's)."""
    result = gateway.upload_archive(task_id, app.name, app.content)
    if not quiet:
        out(f"uploaded {len(result['files'])} file(s) of the app in {app.source}"
            + (f" (left out: {', '.join(result['skipped'])})" if result["skipped"] else ""))


def _app(args: argparse.Namespace) -> AppArchive | None:
    """The Flower App to upload whole: a ``--from-dir`` app folder, or a ``--file`` that is a
    ``.fab``/``.zip``; None for plain task files."""
    folder = Path(args.from_dir).expanduser() if args.from_dir else None
    if folder is not None and is_app_folder(folder):
        if args.file:
            raise CliError("a Flower App folder is uploaded whole: give --from-dir APP "
                           "without --file", EXIT_USAGE)
        return folder_archive(folder)
    archives = [Path(name).expanduser() for name in args.file or []
                if is_app_archive(Path(name))]
    if not archives:
        return None
    if len(args.file) > 1 or folder is not None:
        raise CliError(f"an app archive is uploaded whole and replaces the task's files: give "
                       f"--file {archives[0]} alone", EXIT_USAGE)
    if not archives[0].is_file():
        raise CliError(f"--file {archives[0]}: no such file", EXIT_USAGE)
    try:
        return read_archive(archives[0])
    except ValueError as error:
        raise CliError(str(error), EXIT_USAGE) from None


def tasks_create(gateway: Gateway, args: argparse.Namespace) -> int:
    """``tasks create``: create a task, then upload its files (a Flower App folder or archive
    whole)."""
    app = _app(args)
    files = [] if app is not None else _files_or_usage_error(args)
    body: dict[str, Any] = {}
    if args.port is not None:
        body["port"] = args.port
    if args.task_id is not None:
        body["task_id"] = args.task_id
    if args.host is not None:
        body["host"] = args.host
    if args.criteria is not None:
        body["selection_criteria"] = args.criteria
    body["server_arguments"] = assignments(args.server_arg)
    body["client_arguments"] = assignments(args.client_arg)
    body["tags"] = args.tag or []
    if args.devices is not None:
        body["devices"] = args.devices
    if args.min_devices is not None:
        body["min_devices"] = args.min_devices
    if args.deadline is not None:
        body["deadline_s"] = args.deadline
    task = gateway.post("/api/tasks", body)
    task_id = task["id"]
    if not args.json:
        out(f"created task {task_id} ({endpoint(task)})")
    if app is not None:
        _upload_app(gateway, task_id, app, quiet=args.json)
        task = gateway.get(_task_path(task_id))
    if files:
        _upload_all(gateway, task_id, files, created=True, quiet=args.json)
        task = gateway.get(_task_path(task_id))
    if args.json:
        out_json(task)
    return EXIT_OK


def tasks_upload(gateway: Gateway, args: argparse.Namespace) -> int:
    """``tasks upload``: add or replace files of a task (a Flower App folder or archive
    replaces all)."""
    app = _app(args)
    if app is not None:
        gateway.get(_task_path(args.task_id))
        _upload_app(gateway, args.task_id, app, quiet=args.json)
        if args.json:
            out_json(gateway.get(_task_path(args.task_id)))
        return EXIT_OK
    files = _files_or_usage_error(args)
    if not files:
        raise CliError("nothing to upload: give --file PATH or --from-dir DIR", EXIT_USAGE)
    gateway.get(_task_path(args.task_id))  # a clear 404 before sending any file
    _upload_all(gateway, args.task_id, files, created=False, quiet=args.json)
    if args.json:
        out_json(gateway.get(_task_path(args.task_id)))
    return EXIT_OK


def tasks_start(gateway: Gateway, args: argparse.Namespace) -> int:
    """``tasks start``: start the task's server, and optionally follow it."""
    overrides = assignments(args.server_arg)
    body = {"server_arguments": overrides} if overrides else {}
    task = gateway.post(_task_path(args.task_id, "/start"), body)
    if not args.follow:
        if args.json:
            out_json(task)
        else:
            out(f"started task {task['id']} (run {task['runs']})")
        return EXIT_OK
    if not args.json:
        out(f"started task {task['id']} (run {task['runs']})")
    arguments = {**(task.get("server_arguments") or {}), **overrides}
    return _follow(gateway, args, arguments)


def _follow(gateway: Gateway, args: argparse.Namespace,
            arguments: Mapping[str, Any] | None = None) -> int:
    follower = Follower(gateway, args.task_id, args.json, interval_s=args.interval,
                        timeout_s=args.timeout,
                        rounds=total_rounds(arguments) if arguments else None)
    return follower.run()


def tasks_follow(gateway: Gateway, args: argparse.Namespace) -> int:
    """``tasks follow``: print each new round until the task ends."""
    return _follow(gateway, args)


def tasks_stop(gateway: Gateway, args: argparse.Namespace) -> int:
    """``tasks stop``: stop the task's server (terminate, kill after the grace period)."""
    task = gateway.post(_task_path(args.task_id, "/stop"))
    if args.json:
        out_json(task)
    else:
        reason = f" ({task['status_reason']})" if task.get("status_reason") else ""
        out(f"task {task['id']}: {task['status']}{reason}")
    return EXIT_OK


# -- clients ----------------------------------------------------------------------------------


def clients_list(gateway: Gateway, args: argparse.Namespace) -> int:
    """``clients list``: registered clients, most recently seen first."""
    body = gateway.get("/api/clients", {"limit": args.limit, "offset": args.offset})
    if args.json:
        out_json(body)
        return EXIT_OK
    users = body.get("users") or []
    if not users:
        out("no clients")
        return EXIT_OK
    _lines(table(
        ["ID", "STATE", "DATA_QNT", "AVG_ACC_CONTRIB", "AVG_DISCONN/ROUND", "SENSORS",
         "LAST_SEEN", "ENROLLED"],
        ([u["id"], _state(u), u["data_qnt"], u.get("avg_acc_contrib"),
          u.get("avg_disconnection_per_round"), u["sensors"], when(u["last_seen"]),
          "yes" if u.get("enrolled") else "no"]
         for u in users),
    ))
    _paging_note(len(users), int(body.get("total") or 0), args.offset, "clients")
    return EXIT_OK


def _state(user: dict[str, Any]) -> str:
    """``revoked``; else ``online``, or ``lost`` for a client the cloud has not heard from
    lately."""
    if user.get("revoked"):
        return "revoked"
    return "online" if user.get("online") else "lost"


def clients_enroll(gateway: Gateway, args: argparse.Namespace) -> int:
    """``clients enroll``: a one-time join token for a device (shown once)."""
    enrollment = gateway.enroll(args.client_id, args.ttl)
    if args.json:
        out_json(enrollment)
        return EXIT_OK
    who = f"device {enrollment['client_id']}" if enrollment.get("client_id") else "one device"
    out(f"join token for {who}, valid once until {when(enrollment['expires_at'])}:")
    out(enrollment["join_token"])
    out("on the device: put it in a file only you can read (chmod 600) and name that file in "
        "[client.params] join_token_file before its first start; it is shown only now")
    return EXIT_OK


def clients_revoke(gateway: Gateway, args: argparse.Namespace) -> int:
    """``clients revoke``: the device's credential stops working at once."""
    revoked = gateway.post(f"/api/clients/{quote(args.client_id)}/revoke")
    if args.json:
        out_json(revoked)
    else:
        out(f"device {revoked['client_id']} revoked ({when(revoked['revoked_at'])}); enroll "
            "it again to bring it back")
    return EXIT_OK


def clients_show(gateway: Gateway, args: argparse.Namespace) -> int:
    """``clients show``: one client's stats."""
    user = gateway.get(f"/api/clients/{quote(args.client_id)}")
    if args.json:
        out_json(user)
        return EXIT_OK
    _lines(key_values([
        ("id", user["id"]),
        ("state", _state(user)),
        ("enrolled", "yes (its own secret)" if user.get("enrolled") else "no"),
        ("data_qnt", user["data_qnt"]),
        ("avg_acc_contrib", user.get("avg_acc_contrib")),
        ("avg_disconnection_per_round", user.get("avg_disconnection_per_round")),
        ("sensors", user["sensors"]),
        ("created", when(user["created"])),
        ("modified", when(user["modified"])),
        ("last_seen", when(user["last_seen"])),
    ]))
    return EXIT_OK


# -- health -----------------------------------------------------------------------------------


def health(gateway: Gateway, args: argparse.Namespace) -> int:
    """``health``: whether the gateway answers and is connected to its broker (no token)."""
    try:
        body = gateway.get("/health", auth=False)
    except ApiError as error:
        if error.status != 503:
            raise
        raise CliError(f"the gateway at {gateway.url} answers but is not connected to its "
                       "broker", EXIT_UNAVAILABLE) from None
    if args.json:
        out_json(body)
    else:
        out(f"{gateway.url}: {body.get('status', 'ok')} (broker {body.get('broker', '?')})")
    return EXIT_OK
