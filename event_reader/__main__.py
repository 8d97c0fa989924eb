"""``python -m event_reader``: collect experiment events into ``events.json`` until
SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agata_common.config import cloud_settings
from agata_common.process import run_service
from event_reader.wiring import NAME, start


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--output", type=Path, help="events file (default: [events] output)")
    args = parser.parse_args(argv)
    return run_service(NAME, lambda: start(cloud_settings(), args.output).stop)


if __name__ == "__main__":
    sys.exit(main())
