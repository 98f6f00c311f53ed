"""Engine names -> factories, and SIS ``property`` values -> engine (default map, overridable).

A SIS ``property`` reads ``<language>_<rate>k_<domain>`` (``english_16k_common``,
``chinese_8k_general``, ``sichuan_16k_common`` ...). The registry routes each to an engine name and
an ISO language: English properties to ``whisper`` with ``"en"``; Mandarin and the dialects to
``whisper`` with ``"zh"``, which is served only when the configured Whisper model is multilingual
(experimental: no bundled Mandarin model is good), else answered with
:class:`~sis_stream.errors.PropertyNotSupportedError`. Server configuration overrides any entry,
or adds new properties, with ``PROPERTY=ENGINE`` items (:func:`parse_engine_overrides`). Engines
are loaded lazily, once, and shared.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..errors import EngineConfigError, PropertyNotSupportedError
from .base import Engine

__all__ = [
    "DEFAULT_PROPERTY_ENGINES",
    "ENGINE_NAMES",
    "EngineRegistry",
    "Route",
    "parse_engine_overrides",
    "property_language",
    "property_rate_hz",
]

logger = logging.getLogger(__name__)


def _whisper(**options: Any) -> Engine:
    from .whisper import WhisperEngine

    return WhisperEngine(**options)


def _sphinx(**options: Any) -> Engine:
    from .sphinx import SphinxEngine

    return SphinxEngine(**options)


def _none(**options: Any) -> Engine:
    from .null import NullEngine

    return NullEngine(**options)


#: Engine name -> factory taking the engine's keyword options.
ENGINE_FACTORIES: Final[Mapping[str, Callable[..., Engine]]] = {
    "whisper": _whisper,
    "pocketsphinx": _sphinx,
    "none": _none,
}
ENGINE_NAMES: Final = tuple(ENGINE_FACTORIES)

#: SIS property prefix -> ISO 639-1 language given to the engine. Dialects go to Mandarin ("zh"):
#: Whisper has no separate Sichuanese/Shanghainese, and "yue" exists only in large-v3 tokenizers.
_PREFIX_LANGUAGE: Final = {
    "english": "en",
    "chinese": "zh",
    "sichuan": "zh",
    "cantonese": "zh",
    "shanghai": "zh",
}
#: Languages served as "experimental" (quality not measured to be useful on this project's models).
_EXPERIMENTAL_LANGUAGES: Final = frozenset({"zh"})
_PROPERTY_RE: Final = re.compile(r"^(?P<lang>[a-z]+)_(?P<rate>8|16)k_(?P<domain>[a-z]+)$")

#: The default map: every RASR property of the SIS documentation (sis-protocol.md section 4.3, plus
#: the 8 kHz English ones of the short-audio API).
DEFAULT_PROPERTY_ENGINES: Final[Mapping[str, str]] = {
    "english_16k_common": "whisper",
    "english_16k_general": "whisper",
    "english_8k_common": "whisper",
    "english_8k_general": "whisper",
    "chinese_16k_general": "whisper",
    "chinese_16k_common": "whisper",
    "chinese_8k_general": "whisper",
    "chinese_8k_common": "whisper",
    "chinese_16k_court": "whisper",
    "chinese_16k_it": "whisper",
    "sichuan_16k_common": "whisper",
    "cantonese_16k_common": "whisper",
    "shanghai_16k_common": "whisper",
}


def _parse_property(prop: object) -> re.Match[str]:
    if not isinstance(prop, str):
        raise TypeError(f"property must be str, got {type(prop).__name__}")
    m = _PROPERTY_RE.match(prop)
    if m is None:
        raise PropertyNotSupportedError(
            str(prop), "expected '<language>_<8|16>k_<domain>' such as 'english_16k_common'"
        )
    return m


def property_language(prop: str) -> str:
    """ISO 639-1 language of a SIS property (``"en"``/``"zh"``).

    Raises
    ------
    PropertyNotSupportedError
        For a malformed property or an unknown language prefix.
    """
    m = _parse_property(prop)
    try:
        return _PREFIX_LANGUAGE[m["lang"]]
    except KeyError:
        raise PropertyNotSupportedError(
            prop, f"unknown language {m['lang']!r}; known: {', '.join(_PREFIX_LANGUAGE)}"
        ) from None


def property_rate_hz(prop: str) -> int:
    """Sample rate a SIS property expects (8000 or 16000); the audio_format must match it."""
    return int(_parse_property(prop)["rate"]) * 1000


def parse_engine_overrides(items: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """Parse server configuration ``PROPERTY=ENGINE`` items (``--engine english_16k_common=pocketsphinx``).

    Parameters
    ----------
    items : iterable of str, or mapping
        ``"PROPERTY=ENGINE"`` strings, or an already split mapping.

    Returns
    -------
    dict
        property -> engine name.

    Raises
    ------
    EngineConfigError
        For a malformed item, an unknown engine name, a malformed property or a duplicate.
    """
    pairs: list[tuple[str, str]] = []
    if isinstance(items, Mapping):
        pairs = [(str(k), str(v)) for k, v in items.items()]
    else:
        if isinstance(items, str):
            raise TypeError("items must be an iterable of 'PROPERTY=ENGINE' strings, got one str")
        for item in items:
            if not isinstance(item, str) or item.count("=") != 1:
                raise EngineConfigError(f"engine override must read PROPERTY=ENGINE, got {item!r}")
            prop, name = (part.strip() for part in item.split("="))
            pairs.append((prop, name))
    out: dict[str, str] = {}
    for prop, name in pairs:
        if name not in ENGINE_FACTORIES:
            raise EngineConfigError(f"unknown engine {name!r} for {prop!r}; engines: {', '.join(ENGINE_NAMES)}")
        try:
            property_language(prop)
        except PropertyNotSupportedError as exc:
            raise EngineConfigError(f"bad property in engine override {prop}={name}: {exc.reason}") from None
        if prop in out and out[prop] != name:
            raise EngineConfigError(f"property {prop!r} is mapped twice ({out[prop]}, {name})")
        out[prop] = name
    return out


@dataclass(frozen=True)
class Route:
    """Where a SIS property goes.

    Attributes
    ----------
    property : str
        The SIS property.
    engine : str
        Engine name.
    language : str
        ISO 639-1 code passed to ``Engine.new_stream``.
    rate_hz : int
        Sample rate the property (and so the START's audio_format) implies; engines take 16 kHz,
        so 8 kHz audio is resampled by the server.
    experimental : bool
        True for languages served without measured useful quality (Mandarin).
    """

    property: str
    engine: str
    language: str
    rate_hz: int
    experimental: bool


class EngineRegistry:
    """Routes SIS properties to shared, lazily loaded engines.

    Parameters
    ----------
    overrides : mapping or iterable of str, optional
        ``PROPERTY=ENGINE`` items or a mapping; they replace or extend ``DEFAULT_PROPERTY_ENGINES``.
    engine_options : mapping, optional
        Engine name -> keyword options for its constructor, e.g.
        ``{"whisper": {"model_dir": "/models/whisper-base"}, "pocketsphinx": {"max_decoders": 4}}``.
    factories : mapping, optional
        Engine name -> factory, replacing the built-in ones (tests, custom engines).

    Raises
    ------
    EngineConfigError
        For bad overrides, options for unknown engines, or a property mapped to an engine that
        cannot serve its language at all (pocketsphinx is English-only).
    """

    def __init__(self, overrides: Mapping[str, str] | Iterable[str] | None = None, *,
                 engine_options: Mapping[str, Mapping[str, Any]] | None = None,
                 factories: Mapping[str, Callable[..., Engine]] | None = None) -> None:
        self._factories = dict(ENGINE_FACTORIES if factories is None else factories)
        self._options = {k: dict(v) for k, v in (engine_options or {}).items()}
        unknown = set(self._options) - set(self._factories)
        if unknown:
            raise EngineConfigError(f"engine_options for unknown engine(s): {', '.join(sorted(unknown))}")
        self._map = dict(DEFAULT_PROPERTY_ENGINES)
        if overrides is not None:
            self._map.update(parse_engine_overrides(overrides))
        for prop, name in self._map.items():
            if name not in self._factories:
                raise EngineConfigError(f"property {prop!r} maps to unknown engine {name!r}")
            if name == "pocketsphinx" and property_language(prop) != "en":
                raise EngineConfigError(f"{prop}=pocketsphinx: the pocketsphinx engine is English-only")
        self._engines: dict[str, Engine] = {}
        self._locks = {name: threading.Lock() for name in self._factories}

    @property
    def mapping(self) -> dict[str, str]:
        """property -> engine name, after overrides."""
        return dict(self._map)

    def properties(self) -> tuple[str, ...]:
        """Every routed property, sorted."""
        return tuple(sorted(self._map))

    def engine(self, name: str) -> Engine:
        """The shared engine `name`, loading it on first use (thread-safe, once).

        Raises
        ------
        EngineConfigError
            For an unknown engine name.
        EngineUnavailableError
            If the engine cannot be loaded.
        """
        if name not in self._factories:
            raise EngineConfigError(f"unknown engine {name!r}; engines: {', '.join(self._factories)}")
        with self._locks[name]:
            eng = self._engines.get(name)
            if eng is None:
                eng = self._factories[name](**self._options.get(name, {}))
                self._engines[name] = eng
                logger.info("engine %s loaded: %s", name, eng.description)
            return eng

    def loaded(self) -> dict[str, Engine]:
        """Engines loaded so far."""
        return dict(self._engines)

    def route(self, prop: str) -> Route:
        """Where `prop` goes, without loading an engine.

        Raises
        ------
        PropertyNotSupportedError
            For a property that is malformed or not routed.
        """
        language = property_language(prop)
        name = self._map.get(prop)
        if name is None:
            raise PropertyNotSupportedError(
                prop, f"no engine is configured for it; routed properties: {', '.join(self.properties())}"
            )
        return Route(prop, name, language, property_rate_hz(prop), language in _EXPERIMENTAL_LANGUAGES)

    def _unsupported_reason(self, route: Route) -> str | None:
        """Why a route's engine cannot serve its language, or None. Avoids loading Whisper if it can."""
        if route.engine == "whisper" and route.language != "en":
            eng = self._engines.get("whisper")
            if eng is not None:
                multilingual: bool | None = eng.supports_language(route.language)
            else:
                from .whisper import default_model_dir, model_is_multilingual

                model_dir = self._options.get("whisper", {}).get("model_dir")
                try:
                    model_dir = default_model_dir() if model_dir is None else model_dir
                except Exception:  # noqa: BLE001 - reported when the engine is loaded
                    return None
                multilingual = model_is_multilingual(model_dir)
                if multilingual is None:  # no vocabulary file: ask the loaded model
                    multilingual = self.engine("whisper").supports_language(route.language)
            if not multilingual:
                return (f"it needs a multilingual Whisper model (language forced to {route.language!r}) "
                        "and the configured one is English-only; configure one with "
                        "engine_options whisper.model_dir")
        return None

    def engine_for(self, prop: str) -> tuple[Engine, Route]:
        """The shared engine serving `prop` (loaded on first use) and its route.

        Call from a worker thread: the first call may load a model (about a second).

        Raises
        ------
        PropertyNotSupportedError
            If the property is not routed or its engine cannot serve its language; the server
            answers with ``exc.sis_error_code`` (SIS.0032) and ``str(exc)``.
        EngineUnavailableError
            If the engine cannot be loaded.
        """
        route = self.route(prop)
        reason = self._unsupported_reason(route)
        if reason is not None:
            raise PropertyNotSupportedError(prop, reason)
        eng = self.engine(route.engine)
        if not eng.supports_language(route.language):
            raise PropertyNotSupportedError(prop, f"engine {eng.name!r} ({eng.description}) lacks "
                                                  f"language {route.language!r}")
        return eng, route

    def describe(self) -> list[dict[str, Any]]:
        """What each property maps to, for the server's root JSON and the README.

        Returns
        -------
        list of dict
            One per property, sorted: ``{"property", "engine", "language", "sample_rate_hz",
            "status", "detail"}`` with ``status`` one of ``"available"``, ``"experimental"``,
            ``"unsupported"`` (``detail`` says why).
        """
        rows = []
        for prop in self.properties():
            route = self.route(prop)
            reason = self._unsupported_reason(route)
            if reason is not None:
                status, detail = "unsupported", reason
            elif route.experimental:
                status, detail = "experimental", f"{route.engine} with language forced to {route.language!r}"
            else:
                status, detail = "available", route.engine
            rows.append({"property": prop, "engine": route.engine, "language": route.language,
                         "sample_rate_hz": route.rate_hz, "status": status, "detail": detail})
        return rows

    def close(self) -> None:
        """Close every loaded engine."""
        for eng in self._engines.values():
            eng.close()
        self._engines.clear()
