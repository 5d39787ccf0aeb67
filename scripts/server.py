#!/usr/bin/env python3
"""Run the shared MLflow tracking stack: the same command line as `python -m simclr_s2.server`
(see simclr_s2/server/__init__.py for the commands and the environment)."""

import sys
from pathlib import Path

# The repository root, so the script also runs from an interpreter where the project is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simclr_s2.server.control import main

if __name__ == "__main__":
    sys.exit(main())
