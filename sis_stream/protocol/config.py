"""START config validation (sis-protocol.md §4.2), modes, audio formats and shard limits."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from ..audio.formats import SIS_FORMATS, AudioFormat, shard_limits
from ..errors import RequestRejected
from .errors import error_message, reject
from .properties import Interface, PropertyInfo, lookup_property, properties_for

__all__ = [
    "Mode",
    "AUDIO_FORMATS",
    "shard_limits",
    "ConfigField",
    "CONFIG_FIELDS",
    "StartConfig",
    "validate_config",
    "mode_from_path",
]


class Mode(str, Enum):
    """A RASR websocket mode, or the short-audio websocket (§1.2, §1.3, §10)."""

    #: 流式一句话: no server VAD; the whole stream is one utterance.
    SHORT_STREAM = "short-stream"
    #: 实时语音识别单句模式: one sentence then stop (VOICE_START/VOICE_END/EXCEEDED_SILENCE).
    SENTENCE_STREAM = "sentence-stream"
    #: 实时语音识别连续模式: many sentences, up to 5 h.
    CONTINUE_STREAM = "continue-stream"
    #: 一句话识别 websocket版: like short-stream, no VAD fields, END reasons NORMAL/ERROR only.
    SHORT_AUDIO = "short-audio"

    def path(self, project_id: str) -> str:
        """The websocket path, e.g. ``/v1/{project_id}/rasr/continue-stream``."""
        prefix = "asr" if self is Mode.SHORT_AUDIO else "rasr"
        return f"/v1/{project_id}/{prefix}/{self.value}"

    @property
    def interface(self) -> Interface:
        """Which property table applies."""
        return Interface.SHORT_AUDIO if self is Mode.SHORT_AUDIO else Interface.RASR

    @property
    def uses_vad(self) -> bool:
        """Whether the server does endpoint detection (vad_head/vad_tail/max_seconds apply)."""
        return self in (Mode.SENTENCE_STREAM, Mode.CONTINUE_STREAM)

    @property
    def max_audio_ms(self) -> int:
        """Cap on the audio of one session: 60 s, or 5 h in continuous mode (§1.3, §5)."""
        return 5 * 3600 * 1000 if self is Mode.CONTINUE_STREAM else 60 * 1000

    @property
    def events(self) -> frozenset[str]:
        """EVENT names the server may send in this mode (§1.3, §7.2)."""
        if self is Mode.SENTENCE_STREAM:
            return frozenset({"VOICE_START", "VOICE_END", "EXCEEDED_SILENCE", "EXCEEDED_AUDIO"})
        return frozenset({"EXCEEDED_AUDIO"})


_PATH_RE: Final = re.compile(r"^/v1/([^/]+)/(rasr|asr)/(short-stream|sentence-stream|continue-stream|short-audio)/?$")


def mode_from_path(path: str) -> tuple[str, Mode] | None:
    """``(project_id, Mode)`` for a websocket path, or None if it is not one.

    Parameters
    ----------
    path : str
        The request path without query, e.g. ``/v1/abc/rasr/sentence-stream``.

    Returns
    -------
    tuple or None
        None also for the ``/asr/short-stream`` spelling of the Java doc snippets (§1.2 treats
        ``/rasr/`` as correct) and for ``/rasr/short-audio``.
    """
    m = _PATH_RE.match(path)
    if m is None:
        return None
    project_id, prefix, name = m.groups()
    mode = Mode(name)
    if (prefix == "asr") != (mode is Mode.SHORT_AUDIO):
        return None
    return project_id, mode


#: The six raw formats RASR and the short-audio websocket accept (mono, headerless), keyed by name.
AUDIO_FORMATS: Final[dict[str, AudioFormat]] = {name: AudioFormat.from_sis(name) for name in SIS_FORMATS}


@dataclass(frozen=True)
class ConfigField:
    """One row of the START config table (§4.2)."""

    name: str
    kind: str  #: ``"enum"``, ``"flag"`` (yes/no string), ``"int"``, ``"string"``, ``"int_any"``, ``"words"``
    default: Any
    low: int | None = None
    high: int | None = None
    vad: bool = False  #: a VAD field (ignored in short-stream, absent from the short-audio form)


#: The START config table (§4.2). ``audio_format`` and ``property`` are required; the rest have
#: the documented defaults. ``max_seconds`` accepts 0..60: the docs say 1..60, the SDK docs say
#: [0, 60]; 0 is accepted so every SDK variant works, and treated as 60 (see
#: :attr:`StartConfig.effective_max_seconds`).
CONFIG_FIELDS: Final[dict[str, ConfigField]] = {f.name: f for f in (
    ConfigField("audio_format", "enum", None),
    ConfigField("property", "enum", None),
    ConfigField("add_punc", "flag", False),
    ConfigField("digit_norm", "flag", True),
    ConfigField("vad_head", "int", 10000, 0, 60000, vad=True),
    ConfigField("vad_tail", "int", 500, 0, 3000, vad=True),
    ConfigField("max_seconds", "int", 30, 0, 60, vad=True),
    ConfigField("interim_results", "flag", False),
    ConfigField("need_word_info", "flag", False),
    ConfigField("vocabulary_id", "string", None),
    # Undocumented, sent by SDK-new: tolerated, validated only for type (§4.2 [U]).
    ConfigField("vad_threshold", "int_any", None),
    ConfigField("user_words", "words", None),
)}

_REQUIRED: Final = ("audio_format", "property")
_MAX_VOCABULARY_ID_LEN: Final = 128
_MAX_USER_WORDS: Final = 10000


_PY_TYPES: Final[dict[str, type]] = {
    "enum": str, "flag": bool, "int": int, "string": str, "int_any": int, "words": tuple,
}
_PY_TYPE_NAMES: Final = {
    "enum": "a str", "flag": "a bool", "int": "an int", "string": "a str or None",
    "int_any": "an int or None", "words": "a tuple of str or None",
}


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


@dataclass(frozen=True)
class StartConfig:
    """A validated START ``config`` (flags as bools, durations as int ms / s).

    Build it with keyword arguments (validated in ``__post_init__``) or from wire JSON with
    :func:`validate_config`. :meth:`to_dict` gives the wire form (``"yes"``/``"no"`` strings).

    Attributes
    ----------
    audio_format, property : str
        Required; the property's sample rate matches the format's.
    add_punc, digit_norm, interim_results, need_word_info : bool
        Defaults no, yes, no, no.
    vad_head, vad_tail : int
        Milliseconds; defaults 10000 and 500.
    max_seconds : int
        Seconds; default 30.
    vocabulary_id : str or None
    vad_threshold : int or None
        Undocumented SDK field; kept so it can be echoed, never interpreted.
    user_words : tuple of str or None
        Undocumented SDK field.
    mode : Mode
        Which interface's rules applied (not sent on the wire).
    """

    audio_format: str
    property: str
    add_punc: bool = False
    digit_norm: bool = True
    vad_head: int = 10000
    vad_tail: int = 500
    max_seconds: int = 30
    interim_results: bool = False
    need_word_info: bool = False
    vocabulary_id: str | None = None
    vad_threshold: int | None = None
    user_words: tuple[str, ...] | None = None
    mode: Mode = field(default=Mode.CONTINUE_STREAM, compare=True)

    def __post_init__(self) -> None:
        if not isinstance(self.mode, Mode):
            raise TypeError(f"mode must be a Mode, got {type(self.mode).__name__}")
        if isinstance(self.user_words, list):
            object.__setattr__(self, "user_words", tuple(self.user_words))
        # Python types first (TypeError), then the wire rules (RequestRejected, a ValueError,
        # with the code a server would answer).
        for f in CONFIG_FIELDS.values():
            v = getattr(self, f.name)
            expected = _PY_TYPES[f.kind]
            if v is None and f.default is None and f.kind not in ("enum",):
                continue
            if f.kind == "words":
                ok = isinstance(v, tuple) and all(isinstance(w, str) for w in v)
            elif expected is int:
                ok = type(v) is int
            else:
                ok = isinstance(v, expected)
            if not ok:
                raise TypeError(f"StartConfig.{f.name} must be {_PY_TYPE_NAMES[f.kind]}, "
                                f"got {type(v).__name__}")
        _check(self._wire_values(), self.mode)

    def _wire_values(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in CONFIG_FIELDS.values():
            v = getattr(self, f.name)
            if f.kind == "flag":
                d[f.name] = _yes_no(v)
            elif f.kind == "words":
                if v is not None:
                    d[f.name] = list(v)
            elif v is not None:
                d[f.name] = v
        return d

    @property
    def format_info(self) -> AudioFormat:
        """The :class:`~sis_stream.audio.formats.AudioFormat` of ``audio_format``."""
        return AUDIO_FORMATS[self.audio_format]

    @property
    def property_info(self) -> PropertyInfo:
        """The :class:`PropertyInfo` of ``property``."""
        info = lookup_property(self.mode.interface, self.property)
        if info is None:  # pragma: no cover - excluded by __post_init__ validation
            raise RuntimeError(f"property {self.property!r} vanished from the table")
        return info

    @property
    def rate_hz(self) -> int:
        """Sample rate of the session audio."""
        return self.format_info.rate_hz

    @property
    def effective_vad_head(self) -> int:
        """``vad_head`` with 0 read as 60000 ms (current docs; older docs: 0 disables the check)."""
        return 60000 if self.vad_head == 0 else self.vad_head

    @property
    def effective_max_seconds(self) -> int:
        """``max_seconds`` with 0 read as 60, and values < 10 read as 10 for the Cantonese and
        Shanghainese models (DOCS-WEB)."""
        s = 60 if self.max_seconds == 0 else self.max_seconds
        if self.property in ("cantonese_16k_common", "shanghai_16k_common"):
            s = max(s, 10)
        return s

    def to_dict(self) -> dict[str, Any]:
        """The wire ``config`` object.

        Like SDK-new (§4.2): every documented field, ``vad_head``/``vad_tail``/``max_seconds``
        omitted for the short-audio websocket, and ``vocabulary_id``, ``vad_threshold``,
        ``user_words`` only when set.
        """
        d = self._wire_values()
        if self.mode is Mode.SHORT_AUDIO:
            for f in CONFIG_FIELDS.values():
                if f.vad:
                    d.pop(f.name, None)
        return d


def _bad(name: str, why: str | None = None) -> RequestRejected:
    """SIS.0032 ``'<name>' is invalid``, followed by what was wrong and what is accepted."""
    base = error_message("SIS.0032", field=name)
    return reject("SIS.0032", base if why is None else f"{base}: {why}")


def _encodable(text: str) -> bool:
    """True when `text` can be sent as UTF-8 (JSON decoders let lone surrogates through)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _suggest(value: object, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss of a str, else ``""``."""
    if not isinstance(value, str):
        return ""
    near = difflib.get_close_matches(value.lower(), choices, n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


_INTERFACE_NAMES: Final = {Interface.RASR: "real-time recognition (RASR)",
                           Interface.SHORT_AUDIO: "short-audio recognition",
                           Interface.TRANSCRIBER: "the recording-file transcriber",
                           Interface.FLASH: "flash ASR", Interface.TTS: "text to speech"}


def _bad_property(value: object, mode: Mode) -> RequestRejected:
    names = sorted(properties_for(mode.interface))
    where = _INTERFACE_NAMES[mode.interface]
    elsewhere = [_INTERFACE_NAMES[i] for i in Interface
                 if i is not mode.interface and lookup_property(i, value) is not None]
    also = f"; it is a property of {' and '.join(elsewhere)} only" if elsewhere else ""
    if value == "english_8k_common" and mode is not Mode.SHORT_AUDIO:
        also += (" (for 8 kHz English in real time use english_16k_common with pcm16k16bit: "
                 "RasrClient.stream(input_format=...) transcodes phone audio on the way)")
    return _bad("property", f"{_shown(value)} is not a property of {where}{also}"
                            f"{_suggest(value, names)}; valid: {', '.join(names)}")


def _formats_at(rate_hz: int) -> list[str]:
    return [n for n, f in AUDIO_FORMATS.items() if f.rate_hz == rate_hz]


def _check(config: Mapping[str, Any], mode: Mode) -> dict[str, Any]:
    """Validate a wire config; return python values per field (flags as bool).

    Every rejection keeps the documented SIS message first (``'vad_tail' is invalid``) and
    adds what was received and what is accepted after a colon.
    """
    for name in _REQUIRED:
        if name not in config:
            raise reject("SIS.0012", field=name)
    fmt = config["audio_format"]
    if not isinstance(fmt, str) or fmt not in AUDIO_FORMATS:
        raise _bad("audio_format", f"got {_shown(fmt)}{_suggest(fmt, list(AUDIO_FORMATS))}; valid: "
                                   f"{', '.join(AUDIO_FORMATS)} (headerless mono samples)")
    prop = lookup_property(mode.interface, config["property"])
    if prop is None:
        raise _bad_property(config["property"], mode)
    if prop.rate_hz != AUDIO_FORMATS[fmt].rate_hz:
        raise reject("SIS.0301", f"{error_message('SIS.0301')}: {prop.name} needs "
                                 f"{prop.rate_hz} Hz audio ({', '.join(_formats_at(prop.rate_hz))}), "
                                 f"got {fmt} ({AUDIO_FORMATS[fmt].rate_hz} Hz)")
    out: dict[str, Any] = {"audio_format": fmt, "property": prop.name}
    for name, spec in CONFIG_FIELDS.items():
        if name in _REQUIRED or name not in config:
            continue
        v = config[name]
        if spec.kind == "flag":
            if v not in ("yes", "no") or not isinstance(v, str):
                raise _bad(name, f"must be \"yes\" or \"no\", got {_shown(v)}")
            out[name] = v == "yes"
        elif spec.kind == "int":
            if type(v) is not int or not (spec.low <= v <= spec.high):  # type: ignore[operator]
                unit = " s" if name == "max_seconds" else " ms"
                raise _bad(name, f"must be an integer in [{spec.low}, {spec.high}]{unit}, got {_shown(v)}")
            out[name] = v
        elif spec.kind == "int_any":
            # Tolerated: any integer (also an integral float, which some JSON encoders emit).
            if isinstance(v, float) and math.isfinite(v) and v == int(v):
                v = int(v)
            if type(v) is not int:
                raise _bad(name, f"must be an integer, got {_shown(v)}")
            out[name] = v
        elif spec.kind == "string":
            if not isinstance(v, str) or not v or len(v) > _MAX_VOCABULARY_ID_LEN:
                raise _bad(name, f"must be a non-empty string of at most {_MAX_VOCABULARY_ID_LEN} "
                                 f"characters, got {_shown(v)}")
            if not _encodable(v):
                raise _bad(name, "must be valid Unicode text (a lone surrogate cannot be encoded as UTF-8)")
            out[name] = v
        elif spec.kind == "words":
            if (not isinstance(v, (list, tuple)) or len(v) > _MAX_USER_WORDS
                    or not all(isinstance(w, str) for w in v)):
                raise _bad(name, f"must be a list of at most {_MAX_USER_WORDS} strings")
            if not all(_encodable(w) for w in v):
                raise _bad(name, "must hold valid Unicode text (a lone surrogate cannot be encoded as UTF-8)")
            out[name] = tuple(v)
    for name in config:
        if name not in CONFIG_FIELDS:
            # Keys are JSON object keys, hence str; the message quotes them like the documented
            # "'audio_format' is invalid" form, clipped so a huge key cannot bloat the answer.
            key = str(name)[:64]
            near = _suggest(key, list(CONFIG_FIELDS))
            raise reject("SIS.0031", f"{error_message('SIS.0031', field=key)}: "
                                     f"{near[2:-1] + '; ' if near else ''}known fields: "
                                     f"{', '.join(CONFIG_FIELDS)}")
    return out


def validate_config(config: object, mode: Mode | str = Mode.CONTINUE_STREAM) -> StartConfig:
    """Validate a START ``config`` object as received on the wire.

    Parameters
    ----------
    config : object
        The decoded JSON value of ``"config"`` (any type; non-objects are rejected).
    mode : Mode or str
        The interface the START arrived on: the three RASR modes or the short-audio websocket.

    Returns
    -------
    StartConfig

    Raises
    ------
    RequestRejected
        With the answer a SIS server gives:

        - ``SIS.0032 "'config' is invalid"``: not a JSON object;
        - ``SIS.0012 "'<field>' is required"``: ``audio_format`` or ``property`` missing;
        - ``SIS.0032 "'<field>' is invalid"``: unknown format or property (also a property of
          another interface), a flag that is not ``"yes"``/``"no"``, an integer field that is not
          an integer (booleans and floats included) or is out of range, an empty/overlong
          ``vocabulary_id``, ``user_words`` not a list of strings;
        - ``SIS.0301 "'audio_format' is not match model"``: property rate != format rate;
        - ``SIS.0031 "'<key>' is not supported"``: unknown key.
    """
    mode = Mode(mode)
    if not isinstance(config, Mapping):
        raise _bad("config")
    values = _check(config, mode)
    if mode is Mode.SHORT_AUDIO:
        # The SDK sends the VAD fields on the short-audio websocket too (§4.2 [I]); they are
        # validated above, then dropped: that interface has no endpoint detection.
        for f in CONFIG_FIELDS.values():
            if f.vad:
                values.pop(f.name, None)
    return StartConfig(mode=mode, **values)
