"""Telephony bridges: Asterisk AudioSocket, FreeSWITCH mod_audio_fork and Twilio media streams
into SIS real-time sessions (one asyncio process, one SIS session per call and channel).

:class:`~sis_stream.bridges.bridge.Bridge` runs the listeners; events (``call_start``,
``partial``, ``final``, ``dtmf``, ``call_end``, ``error``) go to the sinks of
:mod:`sis_stream.bridges.events`; see docs/bridges.md.
"""

from __future__ import annotations

from .bridge import LISTENER_KINDS, Bridge, parse_address
from .events import (
    EVENT_TYPES,
    SOURCES,
    CallbackSink,
    EventHub,
    EventSink,
    JsonLinesSink,
    WebhookSink,
)
from .session import OVERRIDE_KEYS, LegOptions, SessionSettings

__all__ = [
    "EVENT_TYPES",
    "LISTENER_KINDS",
    "OVERRIDE_KEYS",
    "SOURCES",
    "Bridge",
    "CallbackSink",
    "EventHub",
    "EventSink",
    "JsonLinesSink",
    "LegOptions",
    "SessionSettings",
    "WebhookSink",
    "parse_address",
]
