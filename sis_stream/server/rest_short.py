"""Short-audio recognition over REST: ``POST /v1/{project_id}/asr/short-audio`` (§11.1) and the
legacy ``POST /v1.0/voice/asr/sentence`` (§11.2, seed 003); plus the audio decoding and
whole-file recognition shared with the transcriber and flash ASR.

Decoding (:func:`decode_audio`):

* raw SIS formats (``pcm16k16bit``, ``pcm8k16bit``, ``ulaw*``, ``alaw*``) with our G.711 codec;
* ``wav`` with our strict WAV reader (PCM16 / u-law / A-law);
* compressed formats (``mp3``, ``aac``, ``amr``, ``amrwb``, ``m4a``, ``wma``, ``ogg``, ``opus``,
  ``ac3``, and ``auto`` detection) only through PyAV (``pip install av``: the PyPI wheels bundle
  FFmpeg's decoders; PyAV also comes with the ``engines`` extra as a faster-whisper dependency).
  Without it these formats are answered ``SIS.0602`` ("... needs the optional PyAV package").
  ``vox8k4bit`` / ``v3_8k4bit`` (Dialogic ADPCM) are not supported: ``SIS.0602``/``SIS.0535``.

Every decoded signal is resampled by :mod:`sis_stream.audio.resample` (our polyphase resampler) to the
engines' 16 kHz. Recognition runs on the shared engine executor (``app[POOL]``), never on the
event loop.

Text post-processing is the RASR server's (``recognizer.postprocess_text``), so REST and websocket
answers agree: ``add_punc=no`` strips the punctuation of engines that punctuate (Whisper);
``add_punc=yes`` on an engine without punctuation capitalises and ends the sentence with a full
stop; for English, ``digit_norm=yes`` writes spelled numbers as digits and ``no`` spells digits
out (Mandarin text is left as the engine gives it).
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ..audio.formats import SIS_FORMATS, AudioFormat, read_wav
from ..audio.codec import decode as g711_decode
from ..engines.base import SAMPLE_RATE_HZ, Hypothesis
from ..errors import (
    AudioFormatError,
    EngineOverloadedError,
    EngineUnavailableError,
    PropertyNotSupportedError,
    RequestRejected,
)
from ..protocol.errors import reject
from ..protocol.properties import Interface, lookup_property

__all__ = [
    "COMPRESSED_FORMATS",
    "MAX_DATA_BASE64_BYTES",
    "MAX_SHORT_AUDIO_MS",
    "RAW_FORMATS",
    "DecodedAudio",
    "decode_audio",
    "decode_base64",
    "postprocess_text",
    "pyav_available",
    "recognize_pcm",
    "resample_pcm",
    "to_engine_pcm",
    "transcribe_pcm",
    "word_info_json",
    "yes_no",
]

logger = logging.getLogger(__name__)

#: ``data`` limit: 4 MB after base64 encoding (§11.1, seed 003).
MAX_DATA_BASE64_BYTES: Final = 4 * 1024 * 1024
#: Longest short audio (1 minute).
MAX_SHORT_AUDIO_MS: Final = 60_000
#: Raw formats (no container), decoded by our codec.
RAW_FORMATS: Final = tuple(SIS_FORMATS)
#: Container/compressed formats and the PyAV demuxer hint for each (None = probe).
COMPRESSED_FORMATS: Final[dict[str, str | None]] = {
    "mp3": "mp3", "aac": None, "amr": "amr", "amrwb": "amr", "m4a": None, "wma": "asf",
    "ogg": "ogg", "opus": "ogg", "ac3": "ac3", "auto": None,
}
#: Formats the cloud lists that no decoder here handles.
UNSUPPORTED_FORMATS: Final = ("vox8k4bit", "v3_8k4bit")

#: Cloud Eye interfaces of these routes.
INTERFACE: Final = "sentence-transcription"

_PUNCT_RE: Final = re.compile(r"[^\w\s'-]", re.UNICODE)


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded audio.

    Attributes
    ----------
    channels : numpy.ndarray
        int16, shape ``(n_channels, n_samples)``.
    rate_hz : int
        Sample rate of `channels`.
    container : str
        ``"raw"``, ``"wav"`` or the PyAV container name.
    """

    channels: np.ndarray
    rate_hz: int
    container: str

    @property
    def duration_ms(self) -> int:
        """Duration in ms (rounded down)."""
        return int(self.channels.shape[1] * 1000 // self.rate_hz)

    @property
    def n_channels(self) -> int:
        return int(self.channels.shape[0])


def pyav_available() -> bool:
    """True if PyAV (compressed-format decoding, mp3 encoding) can be imported."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def yes_no(config: dict[str, Any], key: str, default: str = "no", code: str = "SIS.0032") -> bool:
    """Read a ``"yes"``/``"no"`` config field (``SIS.0032 '<key>' is invalid`` otherwise)."""
    value = config.get(key, default)
    if value not in ("yes", "no"):
        raise reject(code, f"'{key}' is invalid: expected 'yes' or 'no', got {value!r}")
    return value == "yes"


def decode_base64(data: object, *, field: str = "data", limit: int = MAX_DATA_BASE64_BYTES) -> bytes:
    """Decode the base64 ``data`` of a request.

    Raises
    ------
    RequestRejected
        ``SIS.0012`` missing, ``SIS.0604`` over `limit` encoded bytes, ``SIS.0601`` not base64.
    """
    if data is None or data == "":
        raise reject("SIS.0012", field=field)
    if not isinstance(data, str):
        raise reject("SIS.0601", f"'{field}' is invalid: expected a base64 string, got {type(data).__name__}")
    if len(data) > limit:
        raise reject("SIS.0604", f"'{field}' is too large: {len(data)} bytes of base64, at most {limit}")
    try:
        return base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise reject("SIS.0601", f"'{field}' is invalid: not base64") from None


def _decode_raw(data: bytes, fmt: AudioFormat) -> DecodedAudio:
    if fmt.encoding == "pcm":
        if len(data) % 2:
            data = data[:-1]  # a trailing odd byte is not a sample
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
    else:
        pcm = np.frombuffer(g711_decode(bytes(data), fmt.encoding), dtype="<i2").astype(np.int16)
    return DecodedAudio(pcm.reshape(1, -1), fmt.rate_hz, "raw")


def _decode_wav(data: bytes, unsupported_code: str) -> DecodedAudio:
    try:
        wav = read_wav(data)
    except AudioFormatError as exc:
        raise reject(unsupported_code, f"the WAV audio cannot be read: {exc}") from None
    fmt = wav.format
    raw = wav.data
    if fmt.encoding == "pcm":
        inter = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    else:
        inter = np.frombuffer(g711_decode(raw, fmt.encoding), dtype="<i2").astype(np.int16)
    chans = inter.reshape(-1, fmt.channels).T.copy()
    return DecodedAudio(chans, fmt.rate_hz, "wav")


def _decode_av(data: bytes, audio_format: str, unsupported_code: str, max_ms: int | None) -> DecodedAudio:
    try:
        import av
    except ImportError:
        raise reject(unsupported_code, f"audio format '{audio_format}' needs the optional PyAV package "
                                       "(`pip install av`), which is not installed") from None
    hint = COMPRESSED_FORMATS.get(audio_format)
    try:
        with av.open(io.BytesIO(data), mode="r", format=hint) as container:
            if not container.streams.audio:
                raise reject(unsupported_code, f"no audio stream found in the '{audio_format}' data")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16p")
            planes: list[np.ndarray] = []
            rate = 0
            n = 0
            cap = None
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    rate = out.sample_rate
                    arr = out.to_ndarray()
                    planes.append(arr.reshape(len(out.layout.channels), -1).astype(np.int16, copy=False))
                    n += planes[-1].shape[1]
                if max_ms is not None and rate:
                    cap = rate * (max_ms + 1000) // 1000
                    if n > cap:  # decompression bound: stop reading far past the limit
                        break
            for out in resampler.resample(None) if cap is None or n <= cap else ():
                planes.append(out.to_ndarray().reshape(len(out.layout.channels), -1).astype(np.int16))
            name = container.format.name
    except RequestRejected:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, EOFError) as exc:
        raise reject("SIS.30006" if unsupported_code != "SIS.0602" else unsupported_code,
                     f"Invalid data found when processing input ('{audio_format}'): {exc}") from None
    if not planes or rate <= 0:
        raise reject(unsupported_code, f"the '{audio_format}' data holds no audio")
    chans = np.concatenate(planes, axis=1)
    return DecodedAudio(np.ascontiguousarray(chans), int(rate), name)


def decode_audio(data: bytes, audio_format: str, *, unsupported_code: str = "SIS.0602",
                 max_ms: int | None = None) -> DecodedAudio:
    """Decode request audio.

    Parameters
    ----------
    data : bytes
        The file or raw samples.
    audio_format : str
        A SIS ``audio_format`` (raw names, ``wav``, a compressed name or ``auto``).
    unsupported_code : str
        Code for undecodable/unsupported audio: ``SIS.0602`` (short audio), ``SIS.0535``
        (transcriber, flash).
    max_ms : int, optional
        Stop decoding compressed audio about a second past this (the caller rejects it).

    Returns
    -------
    DecodedAudio

    Raises
    ------
    RequestRejected
        `unsupported_code` for formats without a decoder, unreadable WAV headers, or PyAV
        decoding failures.
    """
    if audio_format in RAW_FORMATS:
        return _decode_raw(data, AudioFormat.from_sis(audio_format))
    if audio_format in UNSUPPORTED_FORMATS:
        raise reject(unsupported_code, f"audio format '{audio_format}' (Dialogic ADPCM) is not supported "
                                       "by this server")
    if audio_format == "wav" or (audio_format == "auto" and data[:4] == b"RIFF"):
        try:
            return _decode_wav(data, unsupported_code)
        except RequestRejected:
            if audio_format == "wav" or not pyav_available():
                raise  # 'auto': other RIFF/WAVE codecs (ADPCM...) may still decode with PyAV
    if audio_format in COMPRESSED_FORMATS:
        return _decode_av(data, audio_format, unsupported_code, max_ms)
    raise reject("SIS.0032", "'audio_format' is invalid")


def resample_pcm(pcm: np.ndarray, src_hz: int, dst_hz: int) -> np.ndarray:
    """int16 mono `pcm` from `src_hz` to `dst_hz` with our resampler (:mod:`sis_stream.audio.resample`).

    Rates our resampler does not support fall back to PyAV's (libswresample) when installed.

    Raises
    ------
    RequestRejected
        ``SIS.0602`` when no resampler handles the pair.
    """
    if src_hz == dst_hz:
        return pcm
    if pcm.size == 0:
        return np.zeros(0, np.int16)
    try:
        from ..audio.resample import resample
    except ImportError:  # pragma: no cover - the resampler ships with the package
        resample = None
    if resample is not None:
        try:
            return np.asarray(resample(np.ascontiguousarray(pcm, dtype=np.int16), src_hz, dst_hz), dtype=np.int16)
        except (ValueError, TypeError, AudioFormatError) as exc:  # a pair or dtype it does not handle
            reason = str(exc)
        else:  # pragma: no cover
            reason = ""
    else:
        reason = "sis_stream.audio.resample is not available"
    if pyav_available():
        return _resample_av(pcm, src_hz, dst_hz)
    raise reject("SIS.0602", f"audio at {src_hz} Hz cannot be converted to {dst_hz} Hz: {reason}")


def _resample_av(pcm: np.ndarray, src_hz: int, dst_hz: int) -> np.ndarray:
    import av

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = src_hz
    rs = av.AudioResampler(format="s16", layout="mono", rate=dst_hz)
    outs = [f.to_ndarray().reshape(-1) for f in (*rs.resample(frame), *rs.resample(None))]
    return np.concatenate(outs).astype(np.int16) if outs else np.zeros(0, np.int16)


def to_engine_pcm(audio: DecodedAudio, channel: int | None = None) -> np.ndarray:
    """One channel (or the mix of all, ``channel=None``) of `audio` as int16 mono 16 kHz."""
    if channel is None:
        mono = audio.channels[0] if audio.n_channels == 1 else \
            np.round(audio.channels.astype(np.int32).mean(axis=0)).astype(np.int16)
    else:
        mono = audio.channels[channel]
    return resample_pcm(np.ascontiguousarray(mono), audio.rate_hz, SAMPLE_RATE_HZ)


def postprocess_text(text: str, *, punctuates: bool, add_punc: bool, digit_norm: bool = True,
                     language: str = "en") -> str:
    """Apply ``add_punc`` / ``digit_norm`` exactly as the RASR websocket does."""
    from .recognizer import postprocess_text as _rasr_postprocess

    return _rasr_postprocess(text, add_punc=add_punc, digit_norm=digit_norm, punctuated=punctuates,
                             language=language)


def word_info_json(hyp: Hypothesis) -> list[dict[str, Any]]:
    """``word_info`` items ``{"start_time", "end_time", "word"}`` of a hypothesis (ms)."""
    return [{"start_time": w.start_ms, "end_time": w.end_ms, "word": w.word} for w in hyp.words]


def _engine_for(app: Any, prop: str) -> tuple[Any, Any]:
    from .app import ENGINES

    try:
        return app[ENGINES].engine_for(prop)
    except PropertyNotSupportedError as exc:
        raise reject(exc.sis_error_code, str(exc)) from None
    except EngineUnavailableError as exc:
        raise reject("SIS.0303", f"engine connection failed: {exc}") from None


def _decode_one(engine: Any, language: str, pcm: np.ndarray, hot_words: Sequence[str],
                word_info: bool) -> Hypothesis:
    stream = engine.new_stream(language=language, hot_words=list(hot_words), word_info=word_info)
    try:
        if pcm.size:
            stream.accept(pcm)
        return stream.finalize()
    finally:
        stream.close()


async def _run(app: Any, fn: Callable[..., Any], *args: Any) -> Any:
    from .app import POOL

    try:
        return await app[POOL].run(fn, *args)
    except EngineOverloadedError as exc:
        raise reject("SIS.0312", f"max concurrency exceeded: the recognition queue is full ({exc})") from None


def _load_engine(app: Any, prop: str) -> tuple[Any, Any]:
    return _engine_for(app, prop)


async def recognize_pcm(app: Any, pcm16k: np.ndarray, *, prop: str, hot_words: Sequence[str] = (),
                        word_info: bool = False, add_punc: bool = False, digit_norm: bool = True) -> Hypothesis:
    """Recognise a whole utterance (int16 mono 16 kHz) as one segment.

    Raises
    ------
    RequestRejected
        ``SIS.0032`` property not served, ``SIS.0303`` engine unavailable, ``SIS.0312`` queue
        full, ``SIS.0306`` recognition failure.
    """
    from .app import POOL

    # engine_for may load a model (seconds): off the event loop, on the executor's threads.
    try:
        engine, route = await app[POOL].run(_load_engine, app, prop)
    except EngineOverloadedError as exc:
        raise reject("SIS.0312", f"max concurrency exceeded: the recognition queue is full ({exc})") from None
    try:
        hyp = await _run(app, _decode_one, engine, route.language, pcm16k, hot_words, word_info)
    except RequestRejected:
        raise
    except Exception as exc:
        logger.exception("recognition failed")
        raise reject("SIS.0306", f"recognition error: {type(exc).__name__}") from exc
    text = postprocess_text(hyp.text, punctuates=engine.punctuates, add_punc=add_punc, digit_norm=digit_norm,
                            language=route.language)
    return Hypothesis(text,
                      hyp.score, hyp.words, hyp.start_ms, hyp.end_ms, True)


def transcribe_pcm(engine: Any, language: str, pcm16k: np.ndarray, *, hot_words: Sequence[str] = (),
                   word_info: bool = False, add_punc: bool = False, digit_norm: bool = True, vad_tail_ms: int = 500,
                   max_seconds: int = 30, should_stop: Callable[[], bool] | None = None) -> list[Hypothesis]:
    """Cut long audio into sentences with the SIS Endpointer (continuous mode) and recognise each.

    Blocking: run it on a worker thread. Times are ms from the start of `pcm16k`; each hypothesis
    spans its sentence (speech onset to end of speech), word times on the same clock.

    Parameters
    ----------
    engine : Engine
    language : str
    pcm16k : numpy.ndarray
        int16 mono 16 kHz.
    should_stop : callable, optional
        Polled between sentences; True aborts with ``RuntimeError("stopped")``.

    Returns
    -------
    list of Hypothesis
        Non-empty sentences in order.
    """
    from ..audio.endpoint import Endpointer, SegmentAudio, SegmentClosed

    ep = Endpointer("continuous", SAMPLE_RATE_HZ, vad_head=60000, vad_tail=vad_tail_ms,
                    max_seconds=max_seconds)
    out: list[Hypothesis] = []
    stream = engine.new_stream(language=language, hot_words=list(hot_words), word_info=word_info)
    pending: dict[int, list[np.ndarray]] = {}
    starts: dict[int, int] = {}
    step = SAMPLE_RATE_HZ * 10  # feed 10 s at a time: bounded event lists

    def handle(events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, SegmentAudio):
                pending.setdefault(ev.index, []).append(ev.pcm)
                starts.setdefault(ev.index, ev.start_sample)
            elif isinstance(ev, SegmentClosed):
                if should_stop is not None and should_stop():
                    raise RuntimeError("stopped")
                chunks = pending.pop(ev.index, [])
                first = starts.pop(ev.index, 0)
                audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
                stream.reset()
                if audio.size:
                    stream.accept(audio)
                hyp = stream.finalize()
                offset_ms = first * 1000 // SAMPLE_RATE_HZ
                words = tuple(w for w in hyp.shifted(offset_ms).words)
                text = postprocess_text(hyp.text, punctuates=engine.punctuates, add_punc=add_punc,
                                        digit_norm=digit_norm, language=language).strip()
                if text:
                    out.append(Hypothesis(text, hyp.score, words, ev.start_ms, max(ev.start_ms, ev.end_ms), True))

    try:
        for i in range(0, len(pcm16k), step):
            handle(ep.process(pcm16k[i:i + step]))
        handle(ep.flush())
    finally:
        stream.close()
    return out


# -- request parsing --------------------------------------------------------------------------

_SHORT_CONFIG_KEYS: Final = frozenset({
    "audio_format", "property", "add_punc", "digit_norm", "need_word_info", "vocabulary_id",
    "auto_language_detect", "user_words",
})


@dataclass(frozen=True)
class ShortAudioRequest:
    """A validated ``POST /v1/{project_id}/asr/short-audio`` body."""

    audio: bytes
    audio_format: str
    property: str
    rate_hz: int
    add_punc: bool
    digit_norm: bool
    need_word_info: bool
    vocabulary_id: str | None
    user_words: tuple[str, ...]


def parse_short_audio(body: object) -> ShortAudioRequest:
    """Validate a v1 short-audio body (§11.1).

    Raises
    ------
    RequestRejected
        ``SIS.0601`` (body shape, bad base64), ``SIS.0012`` (missing ``data``/``config``/
        ``audio_format``/``property``), ``SIS.0031`` (unknown config key), ``SIS.0032`` (bad
        value), ``SIS.0604`` (over 4 MB).
    """
    if not isinstance(body, dict):
        raise reject("SIS.0601", f"the request body must be a JSON object, got {type(body).__name__}")
    config = body.get("config")
    if config is None:
        raise reject("SIS.0012", field="config")
    if not isinstance(config, dict):
        raise reject("SIS.0032", field="config")
    for key in config:
        if key not in _SHORT_CONFIG_KEYS:
            raise reject("SIS.0031", field=key)
    for key in ("audio_format", "property"):
        if key not in config:
            raise reject("SIS.0012", field=key)
    audio_format = config["audio_format"]
    if not isinstance(audio_format, str) or (audio_format not in RAW_FORMATS and audio_format != "wav"
                                             and audio_format not in COMPRESSED_FORMATS):
        raise reject("SIS.0032", "'audio_format' is invalid")
    info = lookup_property(Interface.SHORT_AUDIO, config["property"])
    if info is None:
        raise reject("SIS.0032", f"'property' is invalid: {config['property']!r} is not a short-audio property")
    if audio_format in RAW_FORMATS and AudioFormat.from_sis(audio_format).rate_hz != info.rate_hz:
        raise reject("SIS.0301")
    add_punc = yes_no(config, "add_punc")
    digit_norm = yes_no(config, "digit_norm", "yes")
    yes_no(config, "auto_language_detect")
    need_word_info = yes_no(config, "need_word_info")
    vid = config.get("vocabulary_id")
    if vid is not None and not isinstance(vid, str):
        raise reject("SIS.0032", field="vocabulary_id")
    user_words = config.get("user_words", [])
    if not isinstance(user_words, list) or not all(isinstance(w, str) and w.strip() for w in user_words):
        raise reject("SIS.0032", "'user_words' is invalid: expected a list of words")
    audio = decode_base64(body.get("data"))
    return ShortAudioRequest(audio, audio_format, info.name, info.rate_hz, add_punc, digit_norm, need_word_info,
                             vid or None, tuple(w.strip() for w in user_words))


def check_rate(audio: DecodedAudio, rate_hz: int, audio_format: str) -> None:
    """WAV and raw audio must have the property's rate (``SIS.0301``); compressed audio is resampled."""
    if audio.container in ("raw", "wav") and audio.rate_hz != rate_hz:
        raise reject("SIS.0301", f"'audio_format' is not match model: the audio is {audio.rate_hz} Hz, "
                                 f"the property expects {rate_hz} Hz")


async def _short_audio_pcm(data: bytes, audio_format: str, rate_hz: int | None) -> tuple[np.ndarray, int]:
    import asyncio

    audio = await asyncio.to_thread(decode_audio, data, audio_format, max_ms=MAX_SHORT_AUDIO_MS)
    if rate_hz is not None:
        check_rate(audio, rate_hz, audio_format)
    if audio.container in ("raw", "wav") and audio.n_channels != 1:
        raise reject("SIS.0602", f"short audio must be mono, got {audio.n_channels} channels")
    if audio.duration_ms > MAX_SHORT_AUDIO_MS:
        raise reject("SIS.0604", f"the audio is too long: {audio.duration_ms} ms, at most {MAX_SHORT_AUDIO_MS} ms")
    pcm = await asyncio.to_thread(to_engine_pcm, audio)
    return pcm, audio.duration_ms


async def handle_short_audio(request: Any) -> Any:
    """``POST /v1/{project_id}/asr/short-audio``."""
    from .auth import record_audio
    from .rest import json_response, read_json
    from .vocab import get_vocabulary_words

    body = await read_json(request, code="SIS.0601")
    req = parse_short_audio(body)
    project_id = request.match_info["project_id"]
    words = get_vocabulary_words(request.app, project_id, req.vocabulary_id) + list(req.user_words)
    pcm, duration_ms = await _short_audio_pcm(req.audio, req.audio_format, req.rate_hz)
    hyp = await recognize_pcm(request.app, pcm, prop=req.property, hot_words=words,
                              word_info=req.need_word_info, add_punc=req.add_punc, digit_norm=req.digit_norm)
    record_audio(request, duration_ms)
    result: dict[str, Any] = {"text": hyp.text, "score": hyp.score}
    if req.need_word_info:
        result["word_info"] = word_info_json(hyp)
    return json_response({"trace_id": str(uuid.uuid4()), "result": result})


_LEGACY_ENCODE_TYPES: Final = ("wav", "mp3", "wma", "amr", "ac3", "ogg", "aac", "m4a", "opus")


async def handle_legacy_sentence(request: Any) -> Any:
    """``POST /v1.0/voice/asr/sentence`` (seed 003): ``data`` or ``url``, ``encode_type``,
    ``sample_rate`` (``"8k"`` default / ``"16k"``) -> ``{"result": {"words": ...}}``."""
    from .auth import record_audio
    from .fetch import fetch_url
    from .rest import FETCH_POLICY, REST_SETTINGS, json_response, read_json

    body = await read_json(request, code="SIS.0601")
    if not isinstance(body, dict):
        raise reject("SIS.0601", "the request body must be a JSON object")
    encode_type = body.get("encode_type", "wav")
    if encode_type not in _LEGACY_ENCODE_TYPES:
        raise reject("SIS.0032", f"'encode_type' is invalid: expected one of {', '.join(_LEGACY_ENCODE_TYPES)}")
    sample_rate = body.get("sample_rate", "8k")
    if sample_rate not in ("8k", "16k"):
        raise reject("SIS.0032", f"'sample_rate' is invalid: expected '8k' or '16k', got {sample_rate!r}")
    rate_hz = 8000 if sample_rate == "8k" else 16000
    if body.get("data") not in (None, ""):  # data wins over url (seed 003)
        audio = decode_base64(body["data"])
    elif body.get("url") not in (None, ""):
        audio = await fetch_url(body["url"], request.app[FETCH_POLICY], too_large_code="SIS.0604")
        if len(audio) > MAX_DATA_BASE64_BYTES * 3 // 4:
            raise reject("SIS.0604", f"the audio is too large: {len(audio)} bytes, at most "
                                     f"{MAX_DATA_BASE64_BYTES * 3 // 4}")
    else:
        raise reject("SIS.0012", "'data' or 'url' is required")
    rs = request.app[REST_SETTINGS]
    prop = rs.legacy_property_8k if rate_hz == 8000 else rs.legacy_property_16k
    # sample_rate describes wav audio; other encodings carry their own rate.
    pcm, duration_ms = await _short_audio_pcm(audio, encode_type, rate_hz if encode_type == "wav" else None)
    hyp = await recognize_pcm(request.app, pcm, prop=prop, add_punc=True)
    record_audio(request, duration_ms)
    return json_response({"result": {"words": hyp.text}})


ROUTES: Final = (
    ("POST", "/v1/{project_id}/asr/short-audio", handle_short_audio, INTERFACE),
    ("POST", "/v1.0/voice/asr/sentence", handle_legacy_sentence, INTERFACE),
)
