"""The moonshine-whisper engine routes each segment by length and by what the request needs."""

from __future__ import annotations

import numpy as np
import pytest

from sis_stream.engines.base import Engine
from sis_stream.engines.routing import RoutingEngine, RoutingStream
from sis_stream.errors import EngineConfigError


class FakeMoonshine:
    description = "fake moonshine"
    max_segment_s = 60.0

    def __init__(self):
        self.calls = []

    def decode(self, audio):
        self.calls.append(len(audio))
        return "short text", 0.9

    def close(self):
        pass


class FakeWhisper:
    description = "fake whisper"
    max_segment_s = 60.0

    def __init__(self):
        self.calls = []
        self.streams = []

    def supports_language(self, lang):
        return lang == "en"

    def decode(self, audio, *, language, word_timestamps, hotwords, final):
        self.calls.append((len(audio), final))
        return "long text", 0.8, []

    def new_stream(self, **kwargs):
        self.streams.append(kwargs)
        return "whisper-stream"

    def close(self):
        pass


@pytest.fixture
def parts():
    return FakeMoonshine(), FakeWhisper()


def test_short_segments_go_to_moonshine_long_ones_to_whisper(parts):
    m, w = parts
    eng = RoutingEngine(m, w, crossover_s=2.0)
    s = eng.new_stream(language="en")
    assert isinstance(s, RoutingStream)
    s.accept(np.zeros(32000, np.int16))  # exactly 2 s: not longer than the crossover
    p = s.partial()
    assert p.text == "short text" and not p.is_final
    f = s.finalize()
    assert (f.text, f.start_ms, f.end_ms) == ("short text", 0, 2000)
    s.accept(np.zeros(32001, np.int16))
    assert s.partial().text == "long text"
    f = s.finalize()
    assert (f.text, f.start_ms, f.end_ms) == ("long text", 2000, 4000)
    assert m.calls == [32000, 32000] and w.calls == [(32001, False), (32001, True)]
    assert eng.decodes == {"moonshine": 2, "whisper": 2}


@pytest.mark.parametrize("kwargs", [{"word_info": True}, {"hot_words": ["Dashwood"]}])
def test_word_timings_and_hot_words_use_whisper_for_the_stream(parts, kwargs):
    m, w = parts
    eng = RoutingEngine(m, w)
    assert eng.new_stream(language="en", **kwargs) == "whisper-stream"
    assert w.streams == [{"language": "en", "hot_words": kwargs.get("hot_words", ()),
                          "word_info": kwargs.get("word_info", False)}]


def test_english_only_and_checked_crossover(parts):
    m, w = parts
    with pytest.raises(EngineConfigError, match="crossover_s must be in"):
        RoutingEngine(m, w, crossover_s=0)
    eng = RoutingEngine(m, w)
    assert isinstance(eng, Engine) and eng.languages == ("en",)
    with pytest.raises(EngineConfigError, match="does not recognise language 'zh'"):
        eng.new_stream(language="zh")


def test_registry_builds_the_router_from_shared_parts():
    """moonshine-whisper is made from the registry's own moonshine and whisper engines, loaded
    once and shared with properties routed to either directly."""
    from sis_stream.engines import registry
    from sis_stream.engines.null import NullEngine

    made = []

    class Router(NullEngine):
        def __init__(self, *parts):
            super().__init__()
            self.parts = parts

    def factory(name):
        def make(*parts, **kw):
            made.append((name, parts))
            return Router(*parts) if parts else NullEngine(**kw)
        return make

    reg = registry.EngineRegistry(["english_8k_common=whisper"],
                                  factories={n: factory(n) for n in registry.ENGINE_NAMES})
    router = reg.engine("moonshine-whisper")
    whisper = reg.engine("whisper")
    assert router.parts == (reg.engine("moonshine"), whisper)
    assert [n for n, _ in made] == ["moonshine", "whisper", "moonshine-whisper"]
    with pytest.raises(EngineConfigError, match="the moonshine-whisper engine is English-only"):
        registry.EngineRegistry(["chinese_16k_common=moonshine-whisper"])


def test_router_falls_back_to_whisper_where_moonshine_cannot_load(caplog):
    from sis_stream.engines import registry
    from sis_stream.engines.null import NullEngine
    from sis_stream.errors import EngineUnavailableError

    def no_moonshine(**kw):
        raise EngineUnavailableError("the moonshine engine needs the moonshine-cpp wheel")

    factories = {n: (lambda *parts, **kw: NullEngine(**kw)) for n in registry.ENGINE_NAMES}
    factories["moonshine"] = no_moonshine
    reg = registry.EngineRegistry(factories=factories)
    with caplog.at_level("WARNING", logger="sis_stream.engines.registry"):
        eng, route = reg.engine_for("english_16k_common")
    assert route.engine == "moonshine-whisper" and eng is reg.engine("whisper")
    assert "serving its properties with whisper" in caplog.text


def test_prepare_builds_the_caches_of_routed_engines_only(monkeypatch, caplog):
    from sis_stream.engines import registry
    from sis_stream.errors import EngineUnavailableError

    calls = []
    monkeypatch.setattr(registry, "ENGINE_PREPARERS", {"moonshine": lambda **kw: calls.append(kw)})
    reg = registry.EngineRegistry(engine_options={"moonshine": {"cache_dir": "/tmp/x"}})
    assert reg.prepare() == ["moonshine"] and calls == [{"cache_dir": "/tmp/x"}]
    assert reg.loaded() == {}  # prepared, not loaded
    english = [f"{p}=whisper" for p in registry.DEFAULT_PROPERTY_ENGINES if p.startswith("english")]
    assert registry.EngineRegistry(english).prepare() == []  # nothing routed to Moonshine

    def unavailable(**kw):
        raise EngineUnavailableError("moonshine-cpp is not installed")

    monkeypatch.setattr(registry, "ENGINE_PREPARERS", {"moonshine": unavailable})
    with caplog.at_level("WARNING", logger="sis_stream.engines.registry"):
        assert registry.EngineRegistry().prepare() == []
    assert "cannot be prepared: moonshine-cpp is not installed" in caplog.text
