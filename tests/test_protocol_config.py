"""START config validation: every branch of the §4.2 table, modes, properties, catalogue."""

from __future__ import annotations

import pytest

from sis_stream.errors import (
    RequestRejected,
    SisApiError,
    SisAuthError,
    SisInvalidRequestError,
    SisLimitError,
    SisNotFoundError,
    SisServerError,
)
from sis_stream.protocol import (
    AUDIO_FORMATS,
    CATALOGUE,
    Interface,
    Mode,
    StartConfig,
    api_error,
    error_body,
    error_message,
    lookup_property,
    mode_from_path,
    properties_for,
    shard_limits,
    validate_config,
)

BASE = {"audio_format": "pcm16k16bit", "property": "chinese_16k_general"}


def rejected(config, mode=Mode.CONTINUE_STREAM):
    """(code, the documented SIS message); the details after ": " are checked separately."""
    with pytest.raises(RequestRejected) as ei:
        validate_config(config, mode)
    return ei.value.error_code, ei.value.error_msg.split(": ", 1)[0]


def detail(config, mode=Mode.CONTINUE_STREAM):
    with pytest.raises(RequestRejected) as ei:
        validate_config(config, mode)
    return ei.value.error_msg.split(": ", 1)[1]


def test_an_invalid_property_lists_the_valid_ones_with_a_did_you_mean():
    d = detail({**BASE, "property": "english_16k_comon"})
    assert "did you mean 'english_16k_common'?" in d
    for name in properties_for(Interface.RASR):
        assert name in d
    d = detail({**BASE, "property": "english_8k_common"})  # short-audio only: says so
    assert "short-audio recognition only" in d and "english_16k_common with pcm16k16bit" in d


@pytest.mark.parametrize(("field", "value", "rng"), [
    ("vad_tail", 9999, "[0, 3000] ms"), ("vad_head", -1, "[0, 60000] ms"),
    ("max_seconds", 61, "[0, 60] s"), ("vad_tail", "500", "[0, 3000] ms")])
def test_range_errors_state_the_range_and_the_value(field, value, rng):
    d = detail({**BASE, field: value})
    assert rng in d and f"got {value!r}" in d


def test_format_mismatch_says_which_format_the_property_needs():
    d = detail({"audio_format": "ulaw8k8bit", "property": "english_16k_common"})
    assert "english_16k_common needs 16000 Hz audio (pcm16k16bit, ulaw16k8bit, alaw16k8bit)" in d
    assert "got ulaw8k8bit (8000 Hz)" in d
    assert "did you mean 'pcm8k16bit'?" in detail({**BASE, "audio_format": "pcm8k16"})
    assert "did you mean 'interim_results'?" in detail({**BASE, "interim_result": "yes"})
    assert "yes" in detail({**BASE, "add_punc": True})


def test_defaults_are_the_documented_ones():
    c = validate_config(BASE)
    assert (c.add_punc, c.digit_norm, c.vad_head, c.vad_tail, c.max_seconds, c.interim_results,
            c.need_word_info, c.vocabulary_id) == (False, True, 10000, 500, 30, False, False, None)
    assert c.to_dict() == {**BASE, "add_punc": "no", "digit_norm": "yes", "vad_head": 10000, "vad_tail": 500,
                           "max_seconds": 30, "interim_results": "no", "need_word_info": "no"}


@pytest.mark.parametrize("missing", ["audio_format", "property"])
def test_required_fields(missing):
    cfg = dict(BASE)
    del cfg[missing]
    assert rejected(cfg) == ("SIS.0012", f"'{missing}' is required")


@pytest.mark.parametrize("value", ["mp3", "wav", "PCM16K16BIT", 16000, None])
def test_bad_audio_format(value):
    assert rejected({**BASE, "audio_format": value}) == ("SIS.0032", "'audio_format' is invalid")


@pytest.mark.parametrize("value", ["chinese_16k_travel", "klingon_16k_common", 1, None])
def test_bad_property(value):
    # chinese_16k_travel exists for short audio, not for RASR.
    assert rejected({**BASE, "property": value}) == ("SIS.0032", "'property' is invalid")


@pytest.mark.parametrize("fmt,prop", [("pcm8k16bit", "chinese_16k_general"), ("ulaw16k8bit", "chinese_8k_common"),
                                      ("alaw8k8bit", "english_16k_common")])
def test_rate_mismatch_is_sis_0301(fmt, prop):
    assert rejected({"audio_format": fmt, "property": prop}) == ("SIS.0301", "'audio_format' is not match model")


@pytest.mark.parametrize("flag", ["add_punc", "digit_norm", "interim_results", "need_word_info"])
@pytest.mark.parametrize("value", [True, "YES", "true", 1, None])
def test_flags_must_be_yes_no_strings(flag, value):
    assert rejected({**BASE, flag: value}) == ("SIS.0032", f"'{flag}' is invalid")


@pytest.mark.parametrize("flag", ["add_punc", "digit_norm", "interim_results", "need_word_info"])
def test_flags_accept_yes_and_no(flag):
    assert getattr(validate_config({**BASE, flag: "yes"}), flag) is True
    assert getattr(validate_config({**BASE, flag: "no"}), flag) is False


@pytest.mark.parametrize("name,lo,hi", [("vad_head", 0, 60000), ("vad_tail", 0, 3000), ("max_seconds", 0, 60)])
def test_integer_ranges(name, lo, hi):
    assert getattr(validate_config({**BASE, name: lo}), name) == lo
    assert getattr(validate_config({**BASE, name: hi}), name) == hi
    for bad in (lo - 1, hi + 1, str(hi), float(hi), True, None):
        assert rejected({**BASE, name: bad}) == ("SIS.0032", f"'{name}' is invalid")


def test_effective_values():
    assert validate_config({**BASE, "vad_head": 0}).effective_vad_head == 60000
    assert validate_config({**BASE, "max_seconds": 0}).effective_max_seconds == 60
    c = validate_config({"audio_format": "pcm16k16bit", "property": "cantonese_16k_common", "max_seconds": 3})
    assert c.effective_max_seconds == 10 and c.max_seconds == 3


@pytest.mark.parametrize("value", ["", 5, "x" * 129, None])
def test_vocabulary_id(value):
    assert rejected({**BASE, "vocabulary_id": value}) == ("SIS.0032", "'vocabulary_id' is invalid")


def test_tolerated_sdk_fields():
    c = validate_config({**BASE, "vad_threshold": 0, "user_words": ["a", "b"]})
    assert c.vad_threshold == 0 and c.user_words == ("a", "b")
    assert validate_config({**BASE, "vad_threshold": 3.0}).vad_threshold == 3
    for bad in ("0", 0.5, True, None):
        assert rejected({**BASE, "vad_threshold": bad}) == ("SIS.0032", "'vad_threshold' is invalid")
    for bad in ("a", [1], {"a": 1}, None):
        assert rejected({**BASE, "user_words": bad}) == ("SIS.0032", "'user_words' is invalid")


def test_unknown_key_is_sis_0031():
    assert rejected({**BASE, "speed": 1}) == ("SIS.0031", "'speed' is not supported")
    code, msg = rejected({**BASE, "k" * 500: 1})
    assert code == "SIS.0031" and len(msg) < 100


def test_config_not_an_object():
    assert rejected(["audio_format"]) == ("SIS.0032", "'config' is invalid")


def test_short_audio_properties_and_vad_fields():
    c = validate_config({"audio_format": "pcm16k16bit", "property": "chinese_16k_travel", "vad_tail": 800},
                        Mode.SHORT_AUDIO)
    assert c.vad_tail == 500  # tolerated, dropped
    assert "vad_tail" not in c.to_dict()
    # Out-of-range VAD values are still rejected there.
    assert rejected({**BASE, "vad_tail": 9999}, Mode.SHORT_AUDIO) == ("SIS.0032", "'vad_tail' is invalid")
    assert rejected({"audio_format": "pcm16k16bit", "property": "chinese_16k_it"}, Mode.SHORT_AUDIO)[0] == "SIS.0032"


def test_start_config_python_api_types_and_values():
    with pytest.raises(TypeError, match="add_punc must be a bool"):
        StartConfig(**BASE, add_punc="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="vad_tail must be an int"):
        StartConfig(**BASE, vad_tail=500.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="audio_format must be a str"):
        StartConfig(None, "chinese_16k_general")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mode must be a Mode"):
        StartConfig(**BASE, mode="continue-stream")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="user_words must be a tuple of str"):
        StartConfig(**BASE, user_words=("a", 1))  # type: ignore[arg-type]
    with pytest.raises(RequestRejected, match="'vad_tail' is invalid: must be an integer in"):
        StartConfig(**BASE, vad_tail=5000)
    with pytest.raises(ValueError, match="is not match model"):  # RequestRejected is a ValueError
        StartConfig("pcm8k16bit", "chinese_16k_general")
    assert StartConfig(**BASE, user_words=["x"]).user_words == ("x",)
    c = StartConfig(**BASE)
    assert c.format_info.bytes_per_second == 32000 and c.property_info.language == "chinese"


def test_modes_and_paths():
    assert Mode.CONTINUE_STREAM.path("p") == "/v1/p/rasr/continue-stream"
    assert Mode.SHORT_AUDIO.path("p") == "/v1/p/asr/short-audio"
    assert mode_from_path("/v1/p/rasr/sentence-stream") == ("p", Mode.SENTENCE_STREAM)
    assert mode_from_path("/v1/p/asr/short-audio/") == ("p", Mode.SHORT_AUDIO)
    assert mode_from_path("/v1/p/asr/short-stream") is None
    assert mode_from_path("/v1/p/rasr/short-audio") is None
    assert mode_from_path("/v2/p/rasr/short-stream") is None
    assert Mode.CONTINUE_STREAM.max_audio_ms == 5 * 3600 * 1000 and Mode.SHORT_STREAM.max_audio_ms == 60000
    assert Mode.SENTENCE_STREAM.uses_vad and not Mode.SHORT_STREAM.uses_vad
    assert Mode.CONTINUE_STREAM.events == {"EXCEEDED_AUDIO"}


def test_shard_limits_and_formats():
    assert shard_limits(8000) == (160, 32768) and shard_limits(16000) == (320, 65536)
    with pytest.raises(ValueError, match="8000 and 16000"):
        shard_limits(44100)
    assert AUDIO_FORMATS["ulaw8k8bit"].duration_ms(800) == 100.0
    assert AUDIO_FORMATS["pcm8k16bit"].duration_ms(1600) == 100.0


def test_property_table():
    assert lookup_property("rasr", "chinese_8k_common").rate_hz == 8000
    assert lookup_property(Interface.TTS, "chinese_huanvxia_literature").rates_hz == (16000,)
    assert lookup_property(Interface.TTS, "chinese_xiaoyan_common").rates_hz == (8000, 16000)
    assert lookup_property("flash", "chinese_16k_conversation").language == "chinese"
    assert lookup_property("transcriber", "sichuan_8k_common").language == "sichuan"
    assert lookup_property("rasr", ["x"]) is None
    assert set(properties_for("short_audio")) >= {"chinese_8k_common", "chinese_16k_common", "sichuan_16k_common",
                                                  "cantonese_16k_common", "shanghai_16k_common"}  # §10 list
    with pytest.raises(ValueError):
        properties_for("nope")


def test_catalogue_covers_section_8():
    codes = ["SIS.0001", "SIS.0002", "SIS.0003", "SIS.0005", "SIS.0012", "SIS.0022", "SIS.0023", "SIS.0024",
             "SIS.0031", "SIS.0032", "SIS.0033", "SIS.0100", "SIS.0101", "SIS.0102", "SIS.0103", "SIS.0201",
             "SIS.0202", "SIS.0203", "SIS.0204", "SIS.0205", "SIS.0206", "SIS.0207", "SIS.0208", "SIS.0301",
             "SIS.0302", "SIS.0303", "SIS.0304", "SIS.0305", "SIS.0306", "SIS.0307", "SIS.0309", "SIS.0312",
             "SIS.0401", "SIS.0402", "SIS.0403", "SIS.0410", "SIS.0411", "SIS.0412", "SIS.0413", "SIS.0414",
             "SIS.0415", "SIS.0416", "SIS.0417", "SIS.0418", "SIS.0506", "SIS.0533", "SIS.0534", "SIS.0535",
             "SIS.0536", "SIS.0537", "SIS.0538", "SIS.0601", "SIS.0602", "SIS.0604", "SIS.0605", "SIS.0608",
             "SIS.0609", "SIS.0701", "SIS.0702", "SIS.30002", "SIS.30003", "SIS.30004", "SIS.30006", "SIS.30007",
             "SIS.30008", "APIG.0301", "APIG.0101"]
    assert set(codes) == set(CATALOGUE)
    assert all(100 <= s.http_status < 600 for s in CATALOGUE.values())


def test_catalogue_messages():
    assert error_message("SIS.0301") == "'audio_format' is not match model"
    assert error_message("SIS.0032", field="audio_format") == "'audio_format' is invalid"
    assert error_body("SIS.0005") == {"error_code": "SIS.0005", "error_msg": "The service does not exist."}
    assert error_body("APIG.0301", detail="decrypt token fail")["error_msg"] == \
        "Incorrect IAM authentication information: decrypt token fail"
    with pytest.raises(ValueError, match="unknown error code"):
        error_message("SIS.9999")
    with pytest.raises(ValueError, match="has no message template"):
        error_message("SIS.0301", field="x")
    with pytest.raises(ValueError, match="needs"):
        error_message("SIS.0032", other="x")


@pytest.mark.parametrize("code,status,cls", [
    ("APIG.0301", None, SisAuthError), ("SIS.0101", None, SisAuthError), ("SIS.0032", None, SisInvalidRequestError),
    ("SIS.0201", None, SisNotFoundError), ("SIS.0312", None, SisLimitError), ("SIS.0309", None, SisLimitError),
    ("SIS.0100", None, SisServerError), ("SIS.0304", None, SisServerError),
    ("X.1", 401, SisAuthError), ("X.1", 404, SisNotFoundError), ("X.1", 429, SisLimitError),
    ("X.1", 503, SisServerError), ("X.1", 400, SisInvalidRequestError),
])
def test_api_error_mapping(code, status, cls):
    e = api_error(code, "m", trace_id="t", http_status=status)
    assert type(e) is cls and isinstance(e, SisApiError)
    assert (e.error_code, e.error_msg, e.trace_id, e.http_status) == (code, "m", "t", status)


def test_api_error_unknown_without_status_is_plain():
    assert type(api_error("X.1", "m")) is SisApiError


@pytest.mark.parametrize("field,value", [("vocabulary_id", "ab\ud800"), ("user_words", ["ok", "\udfff"])])
def test_lone_surrogates_are_a_config_error(field, value):
    from sis_stream.errors import RequestRejected
    from sis_stream.protocol.config import validate_config
    from sis_stream.protocol import Mode

    cfg = {"audio_format": "pcm16k16bit", "property": "english_16k_common", field: value}
    with pytest.raises(RequestRejected, match="lone surrogate") as info:
        validate_config(cfg, Mode.CONTINUE_STREAM)
    assert info.value.error_code == "SIS.0032"
