"""The ``sis-stream`` subcommands of the main job: transcribe, demo, convert, vad, bench.

Each module has ``NAME``, ``HELP``, ``build(parser)`` (adds its arguments), ``run(args) -> int``
(never raises: errors become one line on stderr and an exit code, see :mod:`._common`).
:func:`add_subcommands` registers them all on an argparse subparsers object;
:data:`COMMAND_SPECS` lists ``(name, help, build, run)`` for registries such as
:data:`sis_stream.cli.main.COMMANDS`.

Exit codes: 0 success, 2 usage error, 3 input error, 4 auth error, 5 server/protocol error,
130 interrupted (Ctrl-C; the session was ended with END cancel and the transcript kept), 1 an
unexpected internal error.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from . import bench, convert, demo, transcribe, vad
from . import bridge
from . import loadtest
from . import worker
from ._common import (
    EXIT_AUTH,
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_USAGE,
)

__all__ = [
    "COMMAND_SPECS",
    "EXIT_AUTH",
    "EXIT_INPUT",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SERVER",
    "EXIT_USAGE",
    "add_subcommands",
]

_MODULES = (transcribe, demo, convert, vad, bench, bridge, loadtest, worker)

#: ``(name, help, build, run)`` of every subcommand, in help order.
COMMAND_SPECS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None],
                           Callable[[argparse.Namespace], int]], ...] = tuple(
    (m.NAME, m.HELP, m.build, m.run) for m in _MODULES
)


def add_subcommands(subparsers: Any) -> None:
    """Register ``transcribe``, ``demo``, ``convert``, ``vad`` and ``bench`` on `subparsers`.

    Each parser gets ``func=<run>`` as a default: dispatch with ``args.func(args)``.

    Parameters
    ----------
    subparsers
        The object ``ArgumentParser.add_subparsers()`` returned.
    """
    for name, help_text, build, run in COMMAND_SPECS:
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        build(p)
        p.set_defaults(func=run)
