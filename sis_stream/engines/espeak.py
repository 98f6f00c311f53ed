"""espeak-ng speech synthesis through ctypes, from the optional ``espeakng-loader`` package.

libespeak-ng is GPL-3.0: it is never imported by sis_stream itself, only loaded at run time when a
caller asks for synthesis (``pip install 'sis-stream[tts]'``). Without it, :func:`synthesize` raises
:class:`EspeakUnavailableError` saying how to install it.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Final

import numpy as np

from ..errors import SisStreamError

__all__ = ["EspeakUnavailableError", "Synthesis", "available", "synthesize"]

# espeak-ng's speak_lib.h values.
_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_POS_CHARACTER: Final = 1
_CHARS_UTF8: Final = 1
_EE_OK: Final = 0
_PARAM_RATE: Final = 1  # words per minute, 80..450
_PARAM_VOLUME: Final = 2  # 0..200, 100 = normal
_PARAM_PITCH: Final = 3  # 0..100, 50 = normal
_PARAM_RANGE: Final = 4  # 0..100, 50 = normal
_PARAM_WORDGAP: Final = 7  # pause between words, units of 10 ms at the default speed

#: Bounds espeak-ng itself enforces for words per minute.
RATE_WPM_RANGE: Final = (80, 450)

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakUnavailableError(SisStreamError, RuntimeError):
    """libespeak-ng could not be loaded (the optional ``tts`` extra is not installed)."""


@dataclass(frozen=True)
class Synthesis:
    """Synthesised mono speech.

    Attributes
    ----------
    samples : numpy.ndarray
        int16 PCM, mono.
    rate_hz : int
        espeak-ng's native output rate (22050 Hz).
    """

    samples: np.ndarray
    rate_hz: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate_hz


class _Engine:
    """The process-wide libespeak-ng instance; espeak-ng keeps global state, hence the lock."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise EspeakUnavailableError(
                "espeak-ng is not installed: `pip install 'sis-stream[tts]'` "
                "(installs espeakng-loader, which bundles libespeak-ng, GPL-3.0)"
            ) from exc
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as exc:
            raise EspeakUnavailableError(f"could not load libespeak-ng: {exc}") from exc
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.c_void_p)
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if rate <= 0:
            raise EspeakUnavailableError(f"espeak_Initialize failed (returned {rate})")
        self.lib = lib
        self.rate_hz = int(rate)
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes callbacks must outlive every call into the library.
        self._callback = _SYNTH_CALLBACK(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, n, _events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue synthesis

    def synth(self, text: str, voice: str, rate_wpm: int, pitch: int, volume: int,
              word_gap: int) -> np.ndarray:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise ValueError(f"unknown espeak-ng voice {voice!r}")
            for param, value in ((_PARAM_RATE, rate_wpm), (_PARAM_PITCH, pitch),
                                 (_PARAM_VOLUME, volume), (_PARAM_WORDGAP, word_gap)):
                self.lib.espeak_SetParameter(param, value, 0)
            self._chunks = []
            data = text.encode("utf-8") + b"\0"
            buf = ctypes.create_string_buffer(data, len(data))
            err = self.lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != _EE_OK:
                raise RuntimeError(f"espeak_Synth failed with code {err}")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def _get_engine() -> _Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


def available() -> bool:
    """True if libespeak-ng can be loaded."""
    try:
        _get_engine()
    except EspeakUnavailableError:
        return False
    return True


def synthesize(
    text: str,
    voice: str = "en-us+m3",
    *,
    rate_wpm: int = 150,
    pitch: int = 50,
    volume: int = 100,
    word_gap: int = 0,
) -> Synthesis:
    """Synthesise `text` with espeak-ng.

    Parameters
    ----------
    text : str
        UTF-8 text (English, Mandarin with voice ``"cmn"``, ...). Must not be empty.
    voice : str
        espeak-ng voice name with optional variant, e.g. ``"en-us+m3"``, ``"en-us+f3"``, ``"cmn"``.
    rate_wpm : int
        Speaking rate in words per minute, 80..450.
    pitch : int
        Base pitch 0..100 (50 = normal).
    volume : int
        Amplitude 0..200 (100 = normal).
    word_gap : int
        Extra pause between words in 10 ms units.

    Returns
    -------
    Synthesis
        int16 mono samples at espeak-ng's native rate (22050 Hz).

    Raises
    ------
    EspeakUnavailableError
        If the optional ``tts`` extra (espeakng-loader) is not installed.
    ValueError
        For empty text, an unknown voice or out-of-range parameters.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text to synthesise is empty")
    lo, hi = RATE_WPM_RANGE
    for name, value, (vmin, vmax) in (("rate_wpm", rate_wpm, (lo, hi)), ("pitch", pitch, (0, 100)),
                                      ("volume", volume, (0, 200)), ("word_gap", word_gap, (0, 1000))):
        if not isinstance(value, int) or not vmin <= value <= vmax:
            raise ValueError(f"{name} must be an int in [{vmin}, {vmax}], got {value!r}")
    engine = _get_engine()
    return Synthesis(engine.synth(text, voice, rate_wpm, pitch, volume, word_gap), engine.rate_hz)

