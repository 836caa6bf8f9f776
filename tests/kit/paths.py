"""Where things are: the repository, the tests, the interpreter running them."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
PYTHON = sys.executable
