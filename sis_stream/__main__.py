"""``python -m sis_stream``: the command-line interface (see :mod:`sis_stream.cli`)."""

from __future__ import annotations

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
