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


@pytest.fixture(scope="session", autouse=True)
def _model_caches_built() -> None:
    """Build the one-time model caches (the Moonshine fold: 5-25 s on a machine that never ran
    it) once per test session, as ``serve`` and ``embedded_server`` do before listening, so that
    no test's first English session waits for it longer than the client waits for START."""
    from sis_stream.engines.registry import EngineRegistry

    EngineRegistry().prepare()
