"""The broker locked for one deployment: a virtual host and a user for each role.

The cloud's services and each device's services get a RabbitMQ user of their own, allowed on
their own virtual host only, and there only on the names their side uses (its queue prefix,
server-named queues, the default exchange, the events exchange). Each role has its own virtual
host, not only its own queue prefix, because RabbitMQ checks a publish against the exchange and
not the queue it reaches: a user allowed to publish on the default exchange of a shared virtual
host could send requests to every queue there. ``guest`` gets no permission on these virtual
hosts. Passwords are random, kept in 0600 files that the services read
(``[server.broker] password_file`` and ``[client.broker] password_file``).

``lock_broker`` checks the accounts over AMQP first (fast), and only when one does not work
administers the broker: one ``rabbitmqctl import_definitions`` creates the virtual hosts,
users and permissions. A broker it cannot administer (remote, or no ``rabbitmqctl``) is an
error that names the commands an operator runs instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agata_common.secret_files import kept_or_new_secret
from microservice_interconnect.access import refusal
from microservice_interconnect.settings import BrokerSettings

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
RABBITMQCTL_TIMEOUT_S = 120.0
PASSWORD_BYTES = 32
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class BrokerAdminError(RuntimeError):
    """The broker's accounts are not ready and cannot be made so from here."""


class BrokerUnavailable(BrokerAdminError):
    """The broker does not answer AMQP (yet)."""


@dataclass(frozen=True)
class BrokerRole:
    """One role's broker account: who, on which virtual host, for names after which prefix."""

    side: Literal["server", "client"]
    user: str
    virtual_host: str
    prefix: str
    password_file: Path

    def permissions(self, events_exchange: str) -> tuple[str, str, str]:
        """The configure, write and read patterns: the role's own names and what AMQP needs
        (server-named queues, the default exchange, direct reply-to, the events exchange)."""
        own = rf"{re.escape(self.prefix)}.*|amq\.gen-.*|{re.escape(events_exchange)}"
        return (f"^({own})$", rf"^({own}|amq\.default)$",
                rf"^({own}|amq\.rabbitmq\.reply-to.*)$")

    def environ(self) -> dict[str, str]:
        """The overrides that make a service of this side use the role (no password in it:
        the service reads the file)."""
        section = f"AGATA_{self.side.upper()}_BROKER"
        return {f"{section}_USERNAME": self.user,
                f"{section}_VIRTUAL_HOST": self.virtual_host,
                f"{section}_PASSWORD_FILE": str(self.password_file)}

    def account(self, broker: BrokerSettings, password: str) -> BrokerSettings:
        """``broker`` as this role."""
        return broker.model_copy(update={"username": self.user, "password": password,
                                         "virtual_host": self.virtual_host})


def stack_name(queue_prefix: str) -> str:
    """The name a deployment's virtual hosts and users start with: its queue prefix without
    the trailing dot (``agata.`` gives ``agata``)."""
    name = queue_prefix.rstrip(".")
    if not _NAME.match(name):
        raise BrokerAdminError(f"queue prefix {queue_prefix!r} cannot name a virtual host: use "
                               "letters, digits, '-' and '_' before the final dot")
    return name


def ensure_password(path: Path) -> str:
    """The password kept in ``path``, created (random, 0600, folder 0700) on first use."""
    try:
        return kept_or_new_secret(path, PASSWORD_BYTES, 16)[0]
    except ValueError:
        raise BrokerAdminError(f"the password in {path} is too short; delete the file to "
                               "get a new one") from None


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256`` of ``password``: base64 of a 4-byte salt
    followed by sha256(salt + password)."""
    salt = secrets.token_bytes(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(roles: Sequence[BrokerRole], passwords: dict[str, str],
                events_exchange: str) -> dict[str, Any]:
    """The broker definitions (virtual hosts, users, permissions) of ``roles``."""
    permissions = []
    for role in roles:
        configure, write, read = role.permissions(events_exchange)
        permissions.append({"user": role.user, "vhost": role.virtual_host,
                            "configure": configure, "write": write, "read": read})
    return {
        "vhosts": [{"name": name} for name in sorted({r.virtual_host for r in roles})],
        "users": [{"name": role.user, "password_hash": password_hash(passwords[role.user]),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""}
                  for role in roles],
        "permissions": permissions,
    }


def manual_commands(roles: Sequence[BrokerRole], events_exchange: str) -> list[str]:
    """The ``rabbitmqctl`` commands that create ``roles`` by hand (each password read from its
    file on standard input, never on a command line)."""
    commands = []
    for role in roles:
        commands += [
            f"rabbitmqctl add_vhost {shlex.quote(role.virtual_host)}",
            f"rabbitmqctl add_user {shlex.quote(role.user)} "
            f"< {shlex.quote(str(role.password_file))}",
            f"rabbitmqctl set_permissions -p {shlex.quote(role.virtual_host)} "
            f"{shlex.quote(role.user)} "
            + " ".join(shlex.quote(p) for p in role.permissions(events_exchange)),
        ]
    return commands


def _rabbitmqctl(command: Sequence[str], *arguments: str, stdin: str = "") -> None:
    """Run ``command --quiet ARGUMENTS`` (``stdin`` on its standard input)."""
    try:
        done = subprocess.run([*command, "--quiet", *arguments], input=stdin, capture_output=True,
                              text=True, timeout=RABBITMQCTL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerAdminError(f"{shlex.join(command)} {arguments[0]} failed: {exc}") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise BrokerAdminError(f"{shlex.join(command)} {arguments[0]} failed: "
                               f"{said[-1] if said else f'exit {done.returncode}'}")


def _refusals(broker: BrokerSettings, roles: Sequence[BrokerRole],
              passwords: dict[str, str]) -> tuple[list[str], list[str]]:
    """What is not locked yet: roles whose account fails, and virtual hosts guest opens."""
    failing = []
    for role in roles:
        reason = refusal(role.account(broker, passwords[role.user]))
        if reason and "does not answer" in reason:
            raise BrokerUnavailable(reason)
        if reason:
            failing.append(f"{role.user}: {reason}")
    guest = broker.model_copy(update={"username": "guest", "password": "guest"})
    open_to_guest = sorted({role.virtual_host for role in roles
                            if refusal(guest.model_copy(
                                update={"virtual_host": role.virtual_host})) is None})
    return failing, open_to_guest


def _administrator(host: str, rabbitmqctl: Sequence[str] | None) -> tuple[list[str], str]:
    """The command that administers the broker at ``host`` (``rabbitmqctl`` when given, else
    the local ``rabbitmqctl`` for a broker on this machine), or none and why."""
    if rabbitmqctl is not None:
        return list(rabbitmqctl), "no administration command given"
    if host not in LOCAL_HOSTS:
        return [], "it is not on this machine"
    found = shutil.which("rabbitmqctl") or next(
        (path for path in ("/usr/sbin/rabbitmqctl", "/usr/lib/rabbitmq/bin/rabbitmqctl")
         if os.access(path, os.X_OK)), None)
    return ([found], "") if found else ([], "rabbitmqctl is not installed here")


def lock_broker(broker: BrokerSettings, roles: Sequence[BrokerRole], events_exchange: str,
                rabbitmqctl: Sequence[str] | None = None) -> bool:
    """Make every role's account work and keep guest out of their virtual hosts; True when
    the broker had to be changed. ``rabbitmqctl`` is the command that administers it (None:
    this machine's ``rabbitmqctl`` when the broker is local; empty: none). Raises
    ``BrokerAdminError`` saying what to do when it cannot."""
    passwords = {role.user: ensure_password(role.password_file) for role in roles}
    failing, open_to_guest = _refusals(broker, roles, passwords)
    if not failing and not open_to_guest:
        return False
    host = broker.nodes()[0][0]
    command, why = _administrator(host, rabbitmqctl)
    if not command:
        raise BrokerAdminError(
            f"the broker at {host} cannot be administered from here ({why}); create its "
            "accounts there (the passwords are in these 0600 files), then start again:\n  "
            + "\n  ".join(manual_commands(roles, events_exchange)))
    try:
        if failing:
            _rabbitmqctl(command, "import_definitions", "--format", "json",
                         stdin=json.dumps(definitions(roles, passwords, events_exchange)))
        for virtual_host in open_to_guest:
            _rabbitmqctl(command, "clear_permissions", "-p", virtual_host, "guest")
    except BrokerAdminError as exc:
        problems = failing + [f"guest opens {name}" for name in open_to_guest]
        raise BrokerAdminError(
            f"{exc} ({'; '.join(problems)}); as the broker's administrator run:\n  "
            + "\n  ".join(manual_commands(roles, events_exchange))) from None
    failing, open_to_guest = _refusals(broker, roles, passwords)
    if failing or open_to_guest:
        problems = failing + [f"guest opens {name}" for name in open_to_guest]
        raise BrokerAdminError("the broker's accounts are still not right after setting them: "
                               + "; ".join(problems))
    return True


def drop_roles(roles: Iterable[BrokerRole], rabbitmqctl: Sequence[str] | None = None) -> None:
    """Delete the roles' virtual hosts and users on this machine's broker (all at once: each
    ``rabbitmqctl`` call takes seconds); what cannot be deleted is left, never raised."""
    command, _ = _administrator("127.0.0.1", rabbitmqctl)
    if not command:
        return
    calls: dict[tuple[str, ...], None] = {}
    for role in roles:
        if role.virtual_host == "/" or role.user == "guest":
            raise ValueError("guest and the / virtual host are never dropped")
        calls[(*command, "--quiet", "delete_vhost", role.virtual_host)] = None
        calls[(*command, "--quiet", "delete_user", role.user)] = None
    running = [subprocess.Popen(call, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for call in calls]
    for process in running:
        try:
            process.wait(RABBITMQCTL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
