"""Whether an account may open a broker's virtual host: one short blocking connection.

Used to check broker accounts (a role's user works; ``guest`` is refused) without
administering the broker.
"""

from __future__ import annotations

import logging

import pika
import pika.exceptions

from microservice_interconnect.settings import BrokerSettings


def refusal(broker: BrokerSettings, timeout_s: float = 5.0) -> str | None:
    """None when ``broker``'s account opens its virtual host, else why not (refused
    credentials, no access to the virtual host, or the broker not answering)."""
    host, port = broker.nodes()[0]
    parameters = pika.ConnectionParameters(
        host=host, port=port, virtual_host=broker.virtual_host,
        credentials=pika.PlainCredentials(broker.username, broker.password),
        connection_attempts=1, socket_timeout=timeout_s, blocked_connection_timeout=timeout_s,
        heartbeat=0)
    quiet = logging.getLogger("pika")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # an expected refusal is an answer here, not an error
    try:
        pika.BlockingConnection(parameters).close()
    except pika.exceptions.ProbableAuthenticationError:
        return f"{broker.username} is refused (unknown user or wrong password)"
    except pika.exceptions.ProbableAccessDeniedError:
        return f"{broker.username} has no access to virtual host {broker.virtual_host}"
    except pika.exceptions.AMQPError as exc:
        return f"the broker at {host}:{port} does not answer ({exc.__class__.__name__})"
    except OSError as exc:
        return f"the broker at {host}:{port} does not answer ({exc})"
    finally:
        quiet.setLevel(level)
    return None
