"""espeak-ng synthesis through ctypes (the optional tts extra)."""

import numpy as np
import pytest

from sis_stream.engines import espeak

pytestmark = pytest.mark.skipif(not espeak.available(), reason="espeakng-loader not installed")


def test_synthesize_english_has_plausible_duration():
    # ~150 words/min: 10 words take roughly 4 s; allow generous bounds, but not silence.
    s = espeak.synthesize("one two three four five six seven eight nine ten", rate_wpm=150)
    assert s.rate_hz == 22050
    assert s.samples.dtype == np.int16
    assert 2.0 < s.duration_s < 8.0
    assert np.abs(s.samples.astype(np.int32)).max() > 3000


def test_rate_changes_duration():
    slow = espeak.synthesize("the quick brown fox jumps over the lazy dog", rate_wpm=100)
    fast = espeak.synthesize("the quick brown fox jumps over the lazy dog", rate_wpm=300)
    assert slow.duration_s > 1.8 * fast.duration_s


def test_mandarin_voice():
    assert espeak.synthesize("你好世界", voice="cmn").duration_s > 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"text": ""}, "empty"),
        ({"text": "hi", "rate_wpm": 10}, r"rate_wpm must be an int in \[80, 450\], got 10"),
        ({"text": "hi", "pitch": 101}, r"pitch must be an int in \[0, 100\], got 101"),
        ({"text": "hi", "voice": "no-such-voice"}, "unknown espeak-ng voice"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        espeak.synthesize(**kwargs)


def test_text_must_be_str():
    with pytest.raises(TypeError, match="text must be str, got bytes"):
        espeak.synthesize(b"hello")
