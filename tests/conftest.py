"""Fixtures shared by the tests in this folder (helpers that are not fixtures live in helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def whisper_registry() -> Iterator[Any]:
    """A default engine registry (the Whisper routes), one per test module, closed after it."""
    import faster_whisper  # noqa: F401  (installed by the test extra)

    from sis_stream.engines.registry import EngineRegistry

    reg = EngineRegistry()
    yield reg
    reg.close()
