#!/usr/bin/env bash
# Prepare a fresh Debian machine for AGATA: virtualenv, torch (CPU) first, the project,
# and a RabbitMQ that answers (agata up then makes its users and virtual hosts). Safe to run
# again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

PYTHON_BIN=${PYTHON:-}
if [ -z "$PYTHON_BIN" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON_BIN=$candidate; break; fi
  done
fi
[ -n "$PYTHON_BIN" ] || { log "Python 3.11 is required"; exit 1; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $PYTHON_BIN"
  "$PYTHON_BIN" -m venv .venv
fi

# torch must come first: a plain "torch" requirement would pull gigabytes of CUDA wheels.
if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
  log "installing torch 2.13.0 (CPU)"
  .venv/bin/pip install --quiet torch==2.13.0
fi

stamp=.venv/.agata-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing the project with every extra and its dev tools (.[dev])"
  .venv/bin/pip install --quiet -e '.[dev]'
  touch "$stamp"
fi

# Task processes run confined by default, in bubblewrap sandboxes (executor = confined).
if ! command -v bwrap >/dev/null 2>&1; then
  log "installing bubblewrap (the sandbox of every task process)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap
fi

# The web interface's tests drive Debian's headless Chromium through chromedriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  log "installing chromium and chromium-driver (browser tests of the web interface)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi

broker_host=${AGATA_SERVER_BROKER_HOST:-127.0.0.1}
broker_port=${AGATA_SERVER_BROKER_PORT:-5672}
answers() { .venv/bin/python -c "import socket,sys; socket.create_connection(('$1', $2), 2)" >/dev/null 2>&1; }

if ! answers "$broker_host" "$broker_port"; then
  case "$broker_host" in
    localhost|127.0.0.1|::1) ;;
    *) log "RabbitMQ at $broker_host:$broker_port does not answer (remote; not starting it)"; exit 1 ;;
  esac
  if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
    log "installing rabbitmq-server"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
  fi
  log "starting rabbitmq-server"
  as_root env PATH="$PATH:/usr/sbin" rabbitmq-server -detached || true
  for _ in $(seq 1 90); do
    answers "$broker_host" "$broker_port" && break
    sleep 1
  done
  answers "$broker_host" "$broker_port" || { log "RabbitMQ did not come up on $broker_port"; exit 1; }
fi
# The port can open before the AMQP handshake works; wait for a real answer (a refused login
# is one: guest may have been removed; agata up makes its own users and virtual hosts).
.venv/bin/python - "$broker_host" "$broker_port" <<'PY'
import sys, time
import pika
from pika.exceptions import ProbableAccessDeniedError, ProbableAuthenticationError
host, port = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 60
while True:
    try:
        pika.BlockingConnection(pika.ConnectionParameters(host, port, connection_attempts=1)).close()
        break
    except (ProbableAuthenticationError, ProbableAccessDeniedError):
        break
    except Exception as exc:
        if time.time() > deadline:
            sys.exit(f"[bootstrap] RabbitMQ on {host}:{port} refuses AMQP: {exc}")
        time.sleep(1)
PY

# The tests' and experiments' queues (prefixes test-<hex>. and exp-<hex>.) include durable device
# outboxes, which never expire by design: on a local broker, a policy lets RabbitMQ delete such a
# queue once nobody has used it for 30 minutes, instead of a few thousand more after every run.
case "$broker_host" in
  localhost|127.0.0.1|::1)
    if command -v rabbitmqctl >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmqctl ]; then
      as_root env PATH="$PATH:/usr/sbin" rabbitmqctl -q set_policy --apply-to queues \
        agata-test-queues '^(test|exp)-[0-9a-f]+[.]' '{"expires": 1800000}' >/dev/null \
        || log "could not set the expiry policy of the tests' queues (they are kept)"
    fi ;;
esac

# PostgreSQL is optional (the tests skip its half, saying so, when none answers): start it
# when it is installed but down.
if ! answers 127.0.0.1 5432 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
  log "starting PostgreSQL"
  for version in $(ls /etc/postgresql); do
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
fi
log "ready"
