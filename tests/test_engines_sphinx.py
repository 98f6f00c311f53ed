"""pocketsphinx cold start and determinism on real speech (issue 15 §3): a stream's result never
depends on the streams its pooled decoder served before, and a stream's first utterance is not
decoded with a cold cepstral mean."""

from __future__ import annotations

import numpy as np
import pytest
from realspeech import asterisk_prompts, librivox

from sis_stream.audio.resample import StreamResampler
from sis_stream.text import wer

pytestmark = pytest.mark.engine


def _to16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    if rate == 16000:
        return pcm
    rs = StreamResampler(rate, 16000, dtype=np.int16)
    return np.concatenate([rs.process(pcm), rs.flush()])


def _decode(engine, pcm: np.ndarray) -> str:
    with engine.new_stream(language="en") as s:
        for i in range(0, len(pcm), 1600):
            s.accept(pcm[i:i + 1600])
        return s.finalize().text


@pytest.fixture(scope="module")
def engine_cls():
    pytest.importorskip("pocketsphinx")
    from sis_stream.engines.sphinx import SphinxEngine

    return SphinxEngine


def test_result_does_not_depend_on_earlier_streams(engine_cls) -> None:
    """One pooled decoder: telephone audio first, then read speech; the read speech decodes
    exactly as on a fresh engine (today the decoder keeps the previous channel's mean)."""
    speech = librivox()[0]
    x = _to16k(speech.pcm, speech.rate_hz)
    fresh = _decode(engine_cls(max_decoders=1), x)
    used = engine_cls(max_decoders=1)
    for u in asterisk_prompts()[:2]:
        _decode(used, _to16k(u.pcm, u.rate_hz))
    assert used.decoders_loaded == 1
    assert _decode(used, x) == fresh


def test_first_utterance_of_a_stream_is_not_decoded_cold(engine_cls) -> None:
    """Every LibriVox utterance as the first one of its own stream: WER within 5 points of the
    same utterances decoded by a warm decoder (the stream has heard the speaker already)."""
    utts = [(u.text, _to16k(u.pcm, u.rate_hz)) for u in librivox()]
    engine = engine_cls(max_decoders=1)
    ref = " ".join(t for t, _ in utts)
    first = " ".join(_decode(engine, x) for _, x in utts)
    warm_hyps = []
    with engine.new_stream(language="en") as s:
        for _, x in utts[:1] + utts:  # hear the speaker once, then decode them all warm
            for i in range(0, len(x), 1600):
                s.accept(x[i:i + 1600])
            warm_hyps.append(s.finalize().text)
    warm = " ".join(warm_hyps[1:])
    assert wer(ref, first) <= wer(ref, warm) + 0.05, (wer(ref, first), wer(ref, warm))
