"""The operators' web pages (HTML, CSS, JS), served by the cloud gateway at ``/ui/``.

A package only so the pages ship inside the wheel; it holds no Python code.
"""

from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
"""Where the pages are, in a source tree or an installed package alike."""
