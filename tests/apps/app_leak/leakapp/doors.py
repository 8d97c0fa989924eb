"""Trying the doors a malicious task would: the secret files it was told of (or saw named in
a service's environment), the broker as ``guest`` on AGATA's virtual hosts, and the cloud
gateway with every token it managed to read (tests only). Every attempt is bounded: a connect
or a request gives up after a few seconds."""

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TIMEOUT_S = 3.0
TOKEN_NAMES = ("_TOKEN", "_SECRET", "_PASSWORD")
OPERATOR_ROUTE = "/api/clients?limit=1"
DEVICE_ROUTE = "/api/client/task_events?after=0&timeout=0"


def _items(value: Any) -> list[str]:
    """A comma-separated run-config value as a list."""
    return [item.strip() for item in str(value or "").split(",") if item.strip()]


def environs() -> dict[str, dict[str, str]]:
    """Every other process's environment this process can read, by pid."""
    found = {}
    try:
        pids = [pid for pid in os.listdir("/proc") if pid.isdigit() and int(pid) != os.getpid()]
    except OSError:
        return {}
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        found[pid] = dict(item.decode(errors="replace").partition("=")[::2]
                          for item in raw.split(b"\0") if item)
    return found


def _tokens_of(text: str) -> list[str]:
    """The token(s) a secret file holds: a device credential's ``<client_id>:<secret>`` (what
    a device sends), else its text."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return [f"{value.get('client_id')}:{value['secret']}"] if value.get("secret") else []
    return [text.strip()] if text.strip() else []


def read_secrets(paths: list[str], seen: Mapping[str, Mapping[str, str]]
                 ) -> tuple[dict[str, str], dict[str, str]]:
    """Each secret file tried (``paths``, plus those the environments ``seen`` name in their
    ``AGATA_*_FILE`` variables) with its outcome, and the tokens read (by where from),
    including ``AGATA_*`` secret values of those environments."""
    tokens: dict[str, str] = {}
    named = list(paths)
    for pid, environ in seen.items():
        for name, value in environ.items():
            if not name.startswith("AGATA_"):
                continue
            if name.endswith("_FILE"):
                named.append(value)
            elif name.endswith(TOKEN_NAMES) and value:
                tokens[f"environ {pid} {name}"] = value
    outcomes = {}
    for path in dict.fromkeys(named):
        try:
            text = Path(path).read_text(errors="replace")
        except OSError as error:
            outcomes[path] = f"unreadable: {error.strerror or type(error).__name__}"
            continue
        outcomes[path] = "read"
        for number, token in enumerate(_tokens_of(text)):
            tokens[f"{path}#{number}"] = token
    return outcomes, tokens


def try_broker(address: str, virtual_hosts: list[str]) -> dict[str, str]:
    """Open an AMQP connection as guest/guest on each virtual host: ``opened``, ``refused: ...``
    (the broker said no) or ``unreachable: ...`` (no broker answered)."""
    if not virtual_hosts:
        return {}
    try:
        import pika
        import pika.exceptions as errors
    except ImportError:
        return {name: "unreachable: pika cannot be imported here" for name in virtual_hosts}
    host, _, port = address.rpartition(":")
    refusals = (errors.ProbableAuthenticationError, errors.ProbableAccessDeniedError,
                errors.ConnectionClosedByBroker)
    outcomes = {}
    for name in virtual_hosts:
        parameters = pika.ConnectionParameters(
            host or "127.0.0.1", int(port or 5672), name, pika.PlainCredentials("guest", "guest"),
            connection_attempts=1, socket_timeout=TIMEOUT_S, stack_timeout=TIMEOUT_S,
            blocked_connection_timeout=TIMEOUT_S)
        try:
            pika.BlockingConnection(parameters).close()
        except refusals as error:
            outcomes[name] = f"refused: {type(error).__name__} {error}"
        except errors.AMQPConnectionError as error:
            cause = error.args[0] if error.args else error
            said = "refused" if isinstance(cause, refusals) else "unreachable"
            outcomes[name] = f"{said}: {cause!r}"
        except Exception as error:  # a probe reports whatever happens
            outcomes[name] = f"unreachable: {type(error).__name__} {error}"
        else:
            outcomes[name] = "opened"
    return outcomes


def _status(url: str, token: str | None) -> int | str:
    """The gateway's HTTP status for ``GET url`` (with ``token`` as the bearer), or why none."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (a test's own URL)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError) as error:
        return f"unreachable: {error}"


def try_gateway(url: str, tokens: Mapping[str, str]) -> dict[str, int | str]:
    """Call an operator route and a device route with no token, then with each token read:
    the HTTP status of each attempt (200 means the gateway let it in)."""
    if not url:
        return {}
    base = url.rstrip("/")
    attempts: dict[str, int | str] = {}
    for label, token in {"no token": None, **tokens}.items():
        attempts[f"{label} as operator"] = _status(base + OPERATOR_ROUTE, token)
        attempts[f"{label} as device"] = _status(base + DEVICE_ROUTE, token)
    return attempts


def try_doors(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every attempt the run config asks for (``secret-files``, ``broker`` and
    ``broker-vhosts``, ``gateway-url``) and its outcome."""
    outcomes, tokens = read_secrets(_items(config.get("secret-files")), environs())
    return {"secret_files": outcomes, "tokens": sorted(tokens),
            "broker": try_broker(str(config.get("broker") or "127.0.0.1:5672"),
                                 _items(config.get("broker-vhosts"))),
            "gateway": try_gateway(str(config.get("gateway-url") or ""), tokens)}
