"""Offline recognition engines behind one small interface (whisper, pocketsphinx, none).

Import the engines from their modules (``sis_stream.engines.whisper`` ...) or load them through an
:class:`~sis_stream.engines.registry.EngineRegistry`; this package imports no engine library itself.
"""

from __future__ import annotations

from .base import SAMPLE_RATE_HZ, Engine, EngineStream, HotWordStatus, Hypothesis, Word
from .pool import EngineExecutor, ExecutorStats, Lane
from .registry import (
    DEFAULT_PROPERTY_ENGINES,
    ENGINE_NAMES,
    EngineRegistry,
    Route,
    parse_engine_overrides,
)

__all__ = [
    "DEFAULT_PROPERTY_ENGINES",
    "ENGINE_NAMES",
    "SAMPLE_RATE_HZ",
    "Engine",
    "EngineExecutor",
    "EngineRegistry",
    "EngineStream",
    "ExecutorStats",
    "HotWordStatus",
    "Hypothesis",
    "Lane",
    "Route",
    "Word",
    "parse_engine_overrides",
]
