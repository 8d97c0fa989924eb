#!/usr/bin/env bash
# The demo: the whole system up (every service its own process), the digits task created and
# started through the gateway's HTTP API, trained by a client device plus a second Flower
# client, then everything stopped. Prints step timings and the final accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m experiments.exp1 --rounds "${ROUNDS:-5}" "$@"
