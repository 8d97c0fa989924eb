#!/usr/bin/env bash
# The system on this machine, kept running: prepares what is missing (virtualenv, packages,
# RabbitMQ), then runs every service with two local devices and starts the digits task.
# Ctrl-C stops everything. Extra arguments go to "agata up" (e.g. --devices 3, --port 9002).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/agata up --devices 2 --demo-task "$@"
