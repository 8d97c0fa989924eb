"""``python -m agata_cli``: the same as the ``agata`` command."""

import sys

from agata_cli.main import main

sys.exit(main())
