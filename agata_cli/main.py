"""``agata``: list, create, start, stop and follow federated tasks through the cloud gateway."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from agata_cli import commands, results
from agata_cli import up as local
from agata_cli.arguments import assignment
from agata_cli.client import (
    EXIT_AUTH,
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_SERVER_ERROR,
    EXIT_USAGE,
    CliError,
    Gateway,
    check_url,
)
from agata_cli.output import err

URL_ENV = "AGATA_URL"
TOKEN_ENV = "AGATA_API_TOKEN"  # noqa: S105 (the variable's name, not a token)
DEBUG_ENV = "AGATA_CLI_DEBUG"
CA_FILE_ENV = "AGATA_CA_FILE"
TASK_STATUSES = ("created", "running", "finished", "failed", "stopped")

Handler = Callable[[Gateway, argparse.Namespace], int]
LocalHandler = Callable[[argparse.Namespace], int]

DESCRIPTION = """\
Operate the AGATA federated-learning task manager through its cloud gateway.

examples:
  export AGATA_URL=http://127.0.0.1:9001 AGATA_API_TOKEN=...
  agata tasks create --id digits --port 8080 --server-arg num-rounds=3 \\
        --from-dir tasks/task_digits
  agata tasks start digits --follow
  agata tasks list --status running --json
  agata clients list"""

EPILOG = f"""\
environment:
  {URL_ENV}            gateway URL (default: http://<host>:<port> from
                       [server.gateway] of the AGATA configuration)
  {TOKEN_ENV}      the operator API token (another variable: --token-env NAME);
                       the token is never taken as a command-line value
  {CA_FILE_ENV}        a PEM bundle to verify an https gateway with (default:
                       the system's CAs)
  {DEBUG_ENV}=1    show a traceback on an unexpected error

{EXIT_CODES_HELP}"""


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {raw!r}")
    return value


def _count(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options accepted before the command and (with ``suppress``) after it as well."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    group.add_argument("--url", default=default(None),
                       help=f"gateway URL (default: ${URL_ENV}, else from the configuration)")
    group.add_argument("--token-env", metavar="NAME", default=default(TOKEN_ENV),
                       help=f"environment variable holding the API token (default: {TOKEN_ENV})")
    group.add_argument("--token-file", metavar="PATH", default=default(None),
                       help="read the API token from the first line of this file instead")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print the API's JSON (JSON lines for follow) instead of tables")
    # Refused with a clear message: a token in argv is visible to every user in ps.
    group.add_argument("--token", default=default(None), help=argparse.SUPPRESS)


def _follow_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=_positive_float, metavar="S",
                        help="give up after S seconds (exit 6; the task keeps running)")
    parser.add_argument("--interval", type=_positive_float, default=1.0, metavar="S",
                        help="seconds between polls (default: 1)")


def _file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", action="append", metavar="PATH",
                        help="a file of the task (repeatable); a .fab (from flwr build) or "
                             ".zip is a whole Flower App, uploaded alone as an archive")
    parser.add_argument("--from-dir", metavar="DIR",
                        help="a Flower App folder (with its pyproject.toml) is uploaded whole as "
                             "a zip; otherwise every *.py, *.npz and *.json file of the folder")


def _paging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_count(1), default=100, help="at most this many")
    parser.add_argument("--offset", type=_count(0), default=0, help="skip this many first")


def build_parser() -> argparse.ArgumentParser:
    """The ``agata`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="agata", description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _global_options(common, suppress=True)

    def command(group: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = group.add_parser(name, parents=[common], help=help_text, description=help_text,
                               allow_abbrev=False)
        sub.set_defaults(handler=handler)
        return sub

    top = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    tasks = top.add_parser("tasks", help="list, show, create, start, stop and follow tasks",
                           allow_abbrev=False)
    task_commands = tasks.add_subparsers(dest="action", metavar="<action>", required=True)

    sub = command(task_commands, "list", commands.tasks_list, "list tasks, newest first")
    sub.add_argument("--status", choices=TASK_STATUSES, help="only tasks with this status")
    _paging_options(sub)

    sub = command(task_commands, "show", commands.tasks_show,
                  "show a task: files, status reason, rounds, client reports")
    sub.add_argument("task_id", metavar="ID")

    sub = command(task_commands, "create", commands.tasks_create,
                  "create a task and upload its files")
    sub.add_argument("--port", type=int,
                     help="a port of the task's own for its server (optional, accepted for "
                          "AGATA compatibility; default: none)")
    sub.add_argument("--id", dest="task_id", metavar="ID",
                     help="task id (default: generated by the server)")
    sub.add_argument("--host", help="host the task's Flower server listens on "
                     "(default: 127.0.0.1)")
    sub.add_argument("--devices", type=_count(1), metavar="N",
                     help="devices in a run of a Flower App (default 2)")
    sub.add_argument("--min-devices", type=_count(1), metavar="N",
                     help="the fewest devices a run goes on with while lost ones are replaced "
                          "(default: --devices)")
    sub.add_argument("--deadline", type=_count(1), metavar="SECONDS",
                     help="a run still going after this long is stopped and recorded failed "
                          "(default: the cloud's default_deadline_s)")
    sub.add_argument("--criteria", metavar="EXPR",
                     help="client selection criteria, e.g. \"data_qnt >= 30\"")
    sub.add_argument("--server-arg", type=assignment, action="append", metavar="NAME=VALUE",
                     help="argument of server.py (repeatable; numbers and true/false are typed)")
    sub.add_argument("--client-arg", type=assignment, action="append", metavar="NAME=VALUE",
                     help="argument of client.py (repeatable)")
    sub.add_argument("--tag", action="append", metavar="TAG", help="a tag (repeatable)")
    _file_options(sub)

    sub = command(task_commands, "upload", commands.tasks_upload,
                  "upload (add or replace) files of a task")
    sub.add_argument("task_id", metavar="ID")
    _file_options(sub)

    sub = command(task_commands, "start", commands.tasks_start, "start a task's server")
    sub.add_argument("task_id", metavar="ID")
    sub.add_argument("--server-arg", type=assignment, action="append", metavar="NAME=VALUE",
                     help="override a server argument for this run (repeatable)")
    sub.add_argument("--follow", action="store_true",
                     help="then follow it until it ends (exit 0 finished, 1 failed/stopped)")
    _follow_options(sub)

    sub = command(task_commands, "stop", commands.tasks_stop, "stop a task's server")
    sub.add_argument("task_id", metavar="ID")

    sub = command(task_commands, "follow", commands.tasks_follow,
                  "print each round's metrics until the task ends "
                  "(exit 0 finished, 1 failed/stopped, 6 timeout)")
    sub.add_argument("task_id", metavar="ID")
    _follow_options(sub)

    sub = command(task_commands, "results", results.tasks_results,
                  "list a run's result files (the server's and each device's); with -o DIR "
                  "save them all under DIR/task-<id>-run-<n>/")
    sub.add_argument("task_id", metavar="ID")
    sub.add_argument("--run", type=_count(1), metavar="N", help="which run (default: the latest)")
    sub.add_argument("-o", "--output", type=Path, metavar="DIR",
                     help="save every result file of the run into this folder")

    clients = top.add_parser("clients", help="list, show, enroll and revoke clients",
                             allow_abbrev=False)
    client_commands = clients.add_subparsers(dest="action", metavar="<action>", required=True)
    sub = command(client_commands, "list", commands.clients_list,
                  "list clients, most recently seen first")
    _paging_options(sub)
    sub = command(client_commands, "show", commands.clients_show, "show a client's stats")
    sub.add_argument("client_id", metavar="ID")
    sub = command(client_commands, "enroll", commands.clients_enroll,
                  "create a one-time join token for a device (it exchanges it for its own "
                  "secret at its first start)")
    sub.add_argument("client_id", metavar="ID", nargs="?",
                     help="the device the token is for (default: whichever device uses it)")
    sub.add_argument("--ttl", type=_count(60), default=3600, metavar="SECONDS",
                     help="how long the token can be used (default 3600)")
    sub = command(client_commands, "revoke", commands.clients_revoke,
                  "revoke a device's credential: refused from now on")
    sub.add_argument("client_id", metavar="ID")

    command(top, "health", commands.health,
            "check that the gateway answers and reaches its broker (no token needed)")

    def local_command(name: str, handler: LocalHandler, help_text: str
                      ) -> argparse.ArgumentParser:
        sub = top.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        sub.set_defaults(local_handler=handler, json=False, token=None)
        sub.add_argument("--data-dir", metavar="DIR",
                         help="where services keep their data, logs, tokens and state "
                              "(default: [storage] data_dir, ~/.local/share/agata)")
        return sub

    up_parser = local_command(
        "up", local.up, "bring the whole system up on this machine and keep it running "
        "(restarting crashed services) until Ctrl-C or SIGTERM")
    up_parser.add_argument("--devices", type=_count(0), default=0, metavar="N",
                           help="also run N local devices (client gateway + client task "
                                "manager each)")
    up_parser.add_argument("--demo-task", action="store_true",
                           help="create and start the digits task on the local devices")
    up_parser.add_argument("--port", type=_count(1), default=None,
                           help="the gateway's port (default: [server.gateway] port)")
    up_parser.add_argument("--queue-prefix", default="agata.", metavar="PREFIX",
                           help="start of every queue name on the broker; without its dot it "
                                "also names the broker's virtual hosts and users (default: "
                                "agata.)")
    status_parser = local_command("status", local.status,
                                  "show each service that 'agata up' runs here")
    status_parser.add_argument("--json", action="store_true", help="print the state as JSON")
    return parser


def _default_url() -> str:
    """``http://<host>:<port>`` of ``[server.gateway]`` in the AGATA configuration
    (``AGATA_CONFIG``, overrides); a gateway listening on every address is called on
    127.0.0.1."""
    try:
        from agata_common.config import settings

        gateway = settings().server_gateway
    except Exception as error:
        raise CliError(f"no gateway URL: {URL_ENV} is not set and the AGATA configuration "
                       f"could not be read ({error}); set {URL_ENV} or use --url",
                       EXIT_USAGE) from None
    everywhere = ("", "0.0.0.0", "::")  # noqa: S104 (recognized here, not bound to)
    host = "127.0.0.1" if gateway.host in everywhere else gateway.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{gateway.port}"


def _token(args: argparse.Namespace) -> tuple[str | None, str]:
    """The API token and where it came from (for messages; never the token itself)."""
    if args.token_file:
        path = Path(args.token_file).expanduser()
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise CliError(f"cannot read the token file {path}: {reason}", EXIT_AUTH) from None
        lines = content.strip().splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise CliError(f"the token file {path} is empty", EXIT_AUTH)
        source = f"token file {path}"
    else:
        token = os.environ.get(args.token_env, "").strip()
        source = f"environment variable {args.token_env}"
    if token and not (token.isascii() and token.isprintable() and " " not in token):
        raise CliError(f"the API token in the {source} has characters a token cannot have",
                       EXIT_AUTH)
    return token or None, source


def gateway_for(args: argparse.Namespace) -> Gateway:
    """The gateway session the global options describe."""
    url = check_url(args.url or os.environ.get(URL_ENV, "").strip() or _default_url())
    token, source = _token(args)
    return Gateway(url, token, source, ca_file=os.environ.get(CA_FILE_ENV, "").strip())


def report(error: CliError) -> None:
    """An error as one line (plus indented detail lines) on stderr."""
    err(f"agata: {error.message}")
    for line in error.details:
        err(f"  {line}")


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (never raises, never shows a traceback)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "local_handler", None) is not None:
            local_handler: LocalHandler = args.local_handler
            return local_handler(args)
        if args.token is not None:
            parser.error("the API token is never taken on the command line (every user "
                         f"sees it in ps): export {TOKEN_ENV} or use --token-file PATH")
        handler: Handler = args.handler
        return handler(gateway_for(args), args)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except CliError as error:
        report(error)
        return error.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except Exception as error:
        if os.environ.get(DEBUG_ENV):
            raise
        err(f"agata: unexpected error: {type(error).__name__}: {error} "
            f"(set {DEBUG_ENV}=1 for details)")
        return EXIT_SERVER_ERROR
