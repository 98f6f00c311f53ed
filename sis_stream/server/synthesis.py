"""Speech synthesis for the TTS routes and the RTTS websocket: validated parameters (v1, legacy
v1.0 and RTTS START), their mapping onto espeak-ng (:mod:`sis_stream.engines.espeak`, the optional
``tts`` extra), and the audio encodings.

libespeak-ng is GPL-3.0 and only loaded at run time; without it :func:`synthesize_pcm` raises
``SIS.0401`` "speech synthesis is not available: ..." (HTTP 500) saying how to install it.

Mapping of the SIS parameters onto espeak-ng:

* ``property`` ``{language}_{speaker}_{domain}``: every documented voice (standard and premium,
  the property table of :mod:`sis_stream.protocol.properties`) maps to the espeak-ng language
  voice (``cmn`` for ``chinese_*``, ``en-us`` for ``english_*``) and a variant by the speaker's
  voice type: female ``+f3`` (default), male ``+m3``, child ``+f4`` with the pitch raised. Which
  speaker is male/child is our reading of the names (:data:`MALE_SPEAKERS`,
  :data:`CHILD_SPEAKERS`). Unknown properties: ``SIS.0411``. The 16 kHz-only literature voices
  at ``"8000"``: ``SIS.0402``.
* ``speed`` -500..500 (0 = normal, ~250 Chinese characters/min): espeak words/min
  ``BASE_WPM * 2 ** (speed / 500)`` (half to double), clamped to espeak's 80..450.
* ``pitch`` -500..500: espeak pitch ``50 + pitch / 10`` (0..100).
* ``volume`` 0..100 (50 normal): espeak amplitude ``2 * volume`` (100 = espeak's normal).
* ``sample_rate`` ``"8000"`` / ``"16000"`` (strings; ints tolerated): espeak's 22050 Hz output
  resampled by our resampler.
* ``audio_format`` ``wav`` (16-bit mono PCM WAV), ``pcm`` (raw 16-bit LE), ``mp3`` (through
  PyAV's bundled LAME encoder; without PyAV: ``SIS.0410`` saying so).
* ``text``: required, at most 500 characters (``SIS.0604``; the legacy API ``SIS.0403``).

Legacy v1.0 body: ``text``, ``voice_name`` (``xiaoyan`` default / ``xiaoqi`` / ``xiaoyu``),
``volume`` -20..20 (mapped onto 0..100 as ``50 + 2.5 * v``), ``sample_rate`` ``"8k"`` default /
``"16k"``, ``speech_speed`` and ``pitch_rate`` -500..500; answer ``{"result": {"data": wav}}``.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ..audio.codec import encode as g711_encode
from ..audio.formats import AudioFormat, wav_bytes
from ..engines import espeak
from ..protocol.errors import reject
from ..protocol.properties import Interface, lookup_property
from .decode import resample_pcm

__all__ = [
    "BASE_WPM",
    "CHILD_SPEAKERS",
    "MALE_SPEAKERS",
    "MAX_TEXT_CHARS",
    "TtsParams",
    "check_text",
    "encode_audio",
    "espeak_parameters",
    "espeak_voice",
    "parse_legacy_tts",
    "parse_tts_config",
    "synthesize_pcm",
]

logger = logging.getLogger(__name__)

#: Longest text (§11.5: "< 500 characters"; we accept 500).
MAX_TEXT_CHARS: Final = 500
#: espeak-ng words per minute at ``speed`` 0.
BASE_WPM: Final = 170
#: Speakers read as male voices; ``CHILD_SPEAKERS`` as a child's; every other one as female.
MALE_SPEAKERS: Final = frozenset({
    "xiaoyu", "xiaosong", "huaxiaogang", "huaxiaodong", "huaxiaoliang", "huaxiaolong", "huaxiaojun",
    "huaxiaowei", "huaxiaofei", "alvin",
})
CHILD_SPEAKERS: Final = frozenset({"xiaowang"})
_LANG_VOICE: Final = {"chinese": "cmn", "english": "en-us"}
_RATES: Final = (8000, 16000)
_TTS_CONFIG_KEYS: Final = frozenset({"audio_format", "sample_rate", "property", "speed", "pitch", "volume"})


@dataclass(frozen=True)
class TtsParams:
    """Validated synthesis parameters.

    Attributes
    ----------
    text : str
    property : str
    audio_format : str
        ``wav``, ``pcm``, ``mp3`` (REST) or ``pcm``, ``alaw``, ``ulaw`` (RTTS).
    rate_hz : int
        8000 or 16000.
    speed, pitch : int
        -500..500.
    volume : int
        0..100.
    """

    text: str
    property: str = "chinese_xiaoyan_common"
    audio_format: str = "wav"
    rate_hz: int = 8000
    speed: int = 0
    pitch: int = 0
    volume: int = 50


def _int_field(config: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = config.get(key, default)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value != int(value) or not lo <= value <= hi):
        raise reject("SIS.0601", f"'{key}' is invalid: expected an integer in {lo}..{hi}, got {value!r}")
    return int(value)


def check_text(text: object, *, too_long_code: str = "SIS.0604") -> str:
    """Validate ``text`` (``SIS.0012`` missing, ``SIS.0601`` not a non-empty string, too long)."""
    if text is None:
        raise reject("SIS.0012", field="text")
    if not isinstance(text, str) or not text.strip():
        raise reject("SIS.0601", "'text' is invalid: expected a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        if too_long_code == "SIS.0403":
            raise reject("SIS.0403", limit=f"{MAX_TEXT_CHARS} characters, got {len(text)}")
        raise reject(too_long_code, what="text", limit=f"{MAX_TEXT_CHARS} characters, got {len(text)}")
    return text


def parse_tts_config(text: object, config: object, *, formats: tuple[str, ...] = ("wav", "pcm", "mp3"),
                     default_format: str = "wav") -> TtsParams:
    """Validate a v1 TTS request (or an RTTS START).

    Raises
    ------
    RequestRejected
        ``SIS.0012``/``SIS.0601``/``SIS.0604`` text, ``SIS.0415`` config not an object or an
        unknown key, ``SIS.0410`` audio_format, ``SIS.0402`` sample_rate, ``SIS.0411`` property,
        ``SIS.0601`` speed/pitch/volume.
    """
    text = check_text(text)
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise reject("SIS.0415", "the request body is invalid: 'config' must be an object")
    for key in config:
        if key not in _TTS_CONFIG_KEYS and key != "subtitle":
            raise reject("SIS.0415", f"the request body is invalid: 'config.{key}' is not supported")
    fmt = config.get("audio_format", default_format)
    if fmt not in formats:
        raise reject("SIS.0410", f"'audio_format' is invalid: expected one of {', '.join(formats)}, got {fmt!r}")
    raw_rate = config.get("sample_rate", "8000")
    try:
        rate = int(raw_rate) if not isinstance(raw_rate, bool) else -1
    except (TypeError, ValueError, OverflowError):
        rate = -1
    if rate not in _RATES:
        raise reject("SIS.0402", f"'sample_rate' is invalid: expected \"8000\" or \"16000\", got {raw_rate!r}")
    prop = config.get("property", "chinese_xiaoyan_common")
    info = lookup_property(Interface.TTS, prop)
    if info is None:
        raise reject("SIS.0411", f"'property' is invalid: {prop!r} is not a TTS voice")
    if rate not in info.rates_hz:
        raise reject("SIS.0402", f"'sample_rate' is invalid: {prop} synthesises at {info.rates_hz} Hz only")
    if config.get("subtitle") not in (None, "no"):
        raise reject("SIS.0415", "'subtitle' is not supported by this server")
    return TtsParams(text, prop, fmt, rate, _int_field(config, "speed", 0, -500, 500),
                     _int_field(config, "pitch", 0, -500, 500), _int_field(config, "volume", 50, 0, 100))


def espeak_voice(prop: str) -> tuple[str, int]:
    """espeak-ng voice name and a pitch offset (0..100 scale) for a TTS ``property``."""
    language, speaker, _domain = prop.split("_", 2)
    base = _LANG_VOICE.get(language, "en-us")
    if speaker in CHILD_SPEAKERS:
        return f"{base}+f4", 20
    if speaker in MALE_SPEAKERS:
        return f"{base}+m3", 0
    return f"{base}+f3", 0


def espeak_parameters(p: TtsParams) -> dict[str, Any]:
    """The :func:`sis_stream.engines.espeak.synthesize` arguments for `p` (see the module docstring)."""
    voice, pitch_offset = espeak_voice(p.property)
    rate_wpm = round(BASE_WPM * 2.0 ** (p.speed / 500.0))
    return {
        "voice": voice,
        "rate_wpm": min(450, max(80, rate_wpm)),
        "pitch": min(100, max(0, 50 + p.pitch // 10 + pitch_offset)),
        "volume": min(200, max(0, 2 * p.volume)),
    }


def synthesize_pcm(p: TtsParams) -> np.ndarray:
    """Synthesise `p` as int16 mono PCM at ``p.rate_hz`` (blocking).

    Raises
    ------
    RequestRejected
        ``SIS.0401`` when espeak-ng is not installed or fails.
    """
    kw = espeak_parameters(p)
    try:
        syn = espeak.synthesize(p.text, kw.pop("voice"), **kw)
    except espeak.EspeakUnavailableError as exc:
        raise reject("SIS.0401", f"speech synthesis is not available: {exc}") from None
    except (ValueError, RuntimeError) as exc:
        raise reject("SIS.0401", f"speech synthesis error: {exc}") from None
    return resample_pcm(syn.samples, syn.rate_hz, p.rate_hz)


def _mp3(pcm: np.ndarray, rate_hz: int) -> bytes:
    try:
        import lameenc
    except ImportError:
        lameenc = None
    if lameenc is not None:
        enc = lameenc.Encoder()
        enc.set_bit_rate(32)
        enc.set_in_sample_rate(rate_hz)
        enc.set_channels(1)
        enc.set_quality(5)
        return bytes(enc.encode(pcm.astype("<i2").tobytes()) + enc.flush())
    try:
        import av
    except ImportError:
        raise reject("SIS.0410", "'audio_format' mp3 needs an MP3 encoder (`pip install av` or "
                                 "`pip install lameenc`); use wav or pcm") from None
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as c:
        stream = c.add_stream("libmp3lame", rate=rate_hz)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = rate_hz
        for packet in (*stream.encode(frame), *stream.encode(None)):
            c.mux(packet)
    return buf.getvalue()


def encode_audio(pcm: np.ndarray, rate_hz: int, audio_format: str) -> bytes:
    """Encode int16 mono PCM as ``wav``/``pcm``/``mp3``/``alaw``/``ulaw`` bytes."""
    if audio_format == "wav":
        return wav_bytes(AudioFormat(rate_hz, "pcm", 2), pcm.astype("<i2").tobytes())
    if audio_format == "pcm":
        return pcm.astype("<i2").tobytes()
    if audio_format in ("alaw", "ulaw"):
        return bytes(g711_encode(pcm.astype("<i2").tobytes(), audio_format))
    if audio_format == "mp3":
        return _mp3(pcm, rate_hz)
    raise reject("SIS.0410")



_LEGACY_VOICES: Final = {"xiaoyan": "chinese_xiaoyan_common", "xiaoqi": "chinese_xiaoqi_common",
                         "xiaoyu": "chinese_xiaoyu_common"}


def parse_legacy_tts(body: object) -> TtsParams:
    """Validate a legacy v1.0 TTS body (see the module docstring).

    Raises
    ------
    RequestRejected
        ``SIS.0415`` body shape, ``SIS.0012``/``SIS.0601``/``SIS.0403`` text, ``SIS.0411``
        voice_name, ``SIS.0402`` sample_rate, ``SIS.0601`` volume/speed/pitch.
    """
    if not isinstance(body, dict):
        raise reject("SIS.0415", "the request body is invalid: expected a JSON object")
    text = check_text(body.get("text"), too_long_code="SIS.0403")
    voice = body.get("voice_name", "xiaoyan")
    if voice not in _LEGACY_VOICES:
        raise reject("SIS.0411", f"'voice_name' is invalid: expected one of {', '.join(_LEGACY_VOICES)}")
    rate = body.get("sample_rate", "8k")
    if rate not in ("8k", "16k"):
        raise reject("SIS.0402", f"'sample_rate' is invalid: expected '8k' or '16k', got {rate!r}")
    volume = _int_field(body, "volume", 0, -20, 20)
    return TtsParams(text, _LEGACY_VOICES[voice], "wav", 8000 if rate == "8k" else 16000,
                     _int_field(body, "speech_speed", 0, -500, 500), _int_field(body, "pitch_rate", 0, -500, 500),
                     round(50 + 2.5 * volume))
