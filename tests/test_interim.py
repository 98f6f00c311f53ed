"""The interim policy: pause chunking, LocalAgreement-2, the registry's interim_* options, and the
cost and accuracy of "agreement" against "full" on real speech with the Moonshine engine."""

from __future__ import annotations

import numpy as np
import pytest
from realspeech import long_call

from sis_stream.audio.resample import StreamResampler
from sis_stream.engines.interim import (
    InterimPolicy,
    InterimSettings,
    interim_settings_from_options,
)
from sis_stream.engines.registry import EngineRegistry
from sis_stream.errors import EngineConfigError, EngineUnavailableError
from sis_stream.text import normalize_text, word_errors

RATE = 16000


def _ms(ms: float) -> int:
    return int(RATE * ms / 1000)


def _signal(parts: list[tuple[str, int]], seed: int = 0) -> np.ndarray:
    """Speech-like bursts ("s", ms: a 140 Hz harmonic voice with a syllable-rate envelope) and
    pauses ("p", ms) over low noise (about -70 dBFS)."""
    rng = np.random.default_rng(seed)
    out = []
    for kind, ms in parts:
        n = _ms(ms)
        x = rng.normal(0, 10, n)
        if kind == "s":
            t = np.arange(n) / RATE
            voice = sum(np.sin(2 * np.pi * 140 * k * t + k) / k for k in range(1, 20))
            envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
            x += 3000 * envelope * voice
        out.append(x)
    return np.clip(np.round(np.concatenate(out)), -32768, 32767).astype(np.int16)


# --- settings and options ----------------------------------------------------------------------

def test_settings_defaults_and_validation():
    s = InterimSettings()
    assert (s.policy, s.commit_pause_ms, s.min_chunk_ms, s.prompt_chars) == ("agreement", 300, 1000, 200)
    with pytest.raises(EngineConfigError, match="agreement, full.*'partial'"):
        InterimSettings(policy="partial")
    with pytest.raises(EngineConfigError, match=r"interim_commit_pause_ms must be an integer in 100\.\.5000"):
        InterimSettings(commit_pause_ms=50)
    with pytest.raises(EngineConfigError, match="min_chunk_ms"):
        InterimSettings(min_chunk_ms=True)


def test_options_are_taken_out_and_parsed():
    options = {"cache_dir": "/x", "interim_policy": "full", "interim_commit_pause_ms": "250",
               "interim_min_chunk_ms": 500}
    s = interim_settings_from_options(options, "moonshine")
    assert s == InterimSettings(policy="full", commit_pause_ms=250, min_chunk_ms=500)
    assert options == {"cache_dir": "/x"}
    with pytest.raises(EngineConfigError, match=r"moonshine\.interim_pause.*interim_policy, "
                                                r"interim_commit_pause_ms"):
        interim_settings_from_options({"interim_pause": 1}, "moonshine")
    with pytest.raises(EngineConfigError, match=r"moonshine\.interim_min_chunk_ms must be an integer.*'soon'"):
        interim_settings_from_options({"interim_min_chunk_ms": "soon"}, "moonshine")
    with pytest.raises(EngineConfigError, match=r"moonshine\.interim_policy must be one of agreement, full"):
        interim_settings_from_options({"interim_policy": "all"}, "moonshine")


def test_registry_sets_interim_settings_and_keeps_them_from_the_constructor():
    built = {}

    class Fake:
        description = "fake"

        def __init__(self, **options):
            built.update(options)

    reg = EngineRegistry(engine_options={"none": {"interim_policy": "full", "interim_commit_pause_ms": 400,
                                                  "speed": 2}},
                         factories={"none": Fake, "other": Fake})
    eng = reg.engine("none")
    assert built == {"speed": 2}  # the interim options never reach the engine
    assert eng.interim_settings == InterimSettings(policy="full", commit_pause_ms=400)
    assert reg.engine("other").interim_settings == InterimSettings()
    with pytest.raises(EngineConfigError, match="none.interim_policy must be one of agreement, full"):
        EngineRegistry(engine_options={"none": {"interim_policy": "sometimes"}}, factories={"none": Fake})


# --- "full" ------------------------------------------------------------------------------------

def test_full_decodes_everything_and_shows_the_text_as_is():
    policy = InterimPolicy(InterimSettings(policy="full"))
    audio = _signal([("s", 1500), ("p", 600), ("s", 1500)])
    for n in (_ms(1000), _ms(2500), len(audio)):
        assert policy.plan(audio[:n]) == (0, n, None, False)
        assert policy.complete(0, n, f"text {n}", False) == f"text {n}"


# --- chunking ----------------------------------------------------------------------------------

PARTS = [("p", 200), ("s", 1500), ("p", 500), ("s", 400), ("p", 400), ("s", 1200), ("p", 200),
         ("s", 1000), ("p", 700)]


def _starts(parts):
    pos, out = 0, []
    for kind, ms in parts:
        out.append((kind, pos, ms))
        pos += ms
    return out


def test_pauses_cut_the_segment_and_short_ones_do_not():
    audio = _signal(PARTS)
    policy = InterimPolicy(InterimSettings())
    policy.plan(audio)
    # A cut 150 ms (half of commit_pause_ms) into every pause of 300 ms or more, give or take
    # a few VAD frames; none in the 200 ms pause.
    expected = [_ms(start + 150) for kind, start, ms in _starts(PARTS)[1:] if kind == "p" and ms >= 300]
    assert len(policy.cuts) == len(expected) == 3
    for got, want in zip(policy.cuts, expected):
        assert abs(got - want) <= _ms(60), (got, want)


def test_cuts_do_not_depend_on_how_the_audio_grows():
    audio = _signal(PARTS, seed=3)
    one = InterimPolicy(InterimSettings())
    one.plan(audio)
    steps = InterimPolicy(InterimSettings())
    for n in range(0, len(audio) + 1, 5923):
        steps.plan(audio[:n])
    steps.plan(audio)
    assert steps.cuts == one.cuts


def test_passes_commit_closed_chunks_in_order_merging_short_ones():
    audio = _signal(PARTS)
    policy = InterimPolicy(InterimSettings())
    probe = InterimPolicy(InterimSettings())
    probe.plan(audio)
    c1, c2, c3 = probe.cuts
    # The 400 ms burst between c1 and c2 is shorter than min_chunk_ms: merged into the next chunk.
    assert c2 - c1 < _ms(1000)
    plans = []
    for text in ("one two three", "four five six seven", ""):
        start, end, prompt, commit = policy.plan(audio)
        plans.append((start, end, prompt, commit))
        policy.complete(start, end, text, commit)
    # Then only silence since the last cut: an empty span, nothing to decode.
    n = len(audio)
    assert plans == [(0, c1, None, True), (c1, c3, "one two three", True),
                     (n, n, "one two three four five six seven", False)]
    assert policy.committed_text == "one two three four five six seven"


def test_the_open_tail_is_decoded_from_the_commit_point():
    audio = _signal([("s", 1500), ("p", 500), ("s", 2000)])
    policy = InterimPolicy(InterimSettings())
    n = _ms(1000)
    assert policy.plan(audio[:n]) == (0, n, None, False)  # no pause yet: the tail is everything
    policy.complete(0, n, "hello", False)
    start, end, _, commit = policy.plan(audio)
    assert commit and start == 0 and _ms(1500) < end < _ms(2000)
    policy.complete(start, end, "hello world", True)
    assert policy.plan(audio) == (end, len(audio), "hello world", False)


def test_prompt_is_the_end_of_the_committed_text():
    audio = _signal([("s", 1500), ("p", 500), ("s", 1500), ("p", 500), ("s", 1000)])
    policy = InterimPolicy(InterimSettings(prompt_chars=20))
    start, end, _, _ = policy.plan(audio)
    policy.complete(start, end, "alpha bravo charlie delta echo foxtrot golf", True)
    assert policy.plan(audio)[2] == "echo foxtrot golf"  # the last 20 characters, from a word start
    assert InterimPolicy(InterimSettings(prompt_chars=0)).plan(audio)[2] is None


def test_agreement_decodes_far_less_than_full_on_a_long_segment():
    parts = [("p", 300)] + [("s", 2000), ("p", 450)] * 8
    audio = _signal(parts)
    total = {}
    for mode in ("full", "agreement"):
        policy = InterimPolicy(InterimSettings(policy=mode))
        for n in range(RATE, len(audio) + RATE, RATE):
            start, end, _, commit = policy.plan(audio[:n])
            policy.complete(start, end, "word " * ((end - start) // RATE), commit)
        total[mode] = policy.decoded_samples
    # Full decodes the growing segment every second (quadratic); agreement about each chunk
    # once plus the tail since the last pause.
    assert total["agreement"] < 0.3 * total["full"], total


def test_bad_audio_and_a_shrinking_segment_are_refused():
    policy = InterimPolicy(InterimSettings())
    with pytest.raises(TypeError, match="int16"):
        policy.plan(np.zeros(100, np.float32))
    policy.plan(np.zeros(_ms(500), np.int16))
    with pytest.raises(ValueError, match="reset"):
        policy.plan(np.zeros(_ms(100), np.int16))
    policy.reset()
    assert policy.plan(np.zeros(_ms(100), np.int16)) == (_ms(100), _ms(100), None, False)


# --- LocalAgreement-2 --------------------------------------------------------------------------

def _tail(policy: InterimPolicy, text: str, end: int = 1000) -> str:
    return policy.complete(policy.commit_samples, policy.commit_samples + end, text, False)


def test_two_agreeing_hypotheses_make_a_stable_prefix():
    p = InterimPolicy(InterimSettings())
    assert _tail(p, "hello world") == "hello world"
    assert p.stable_text == ""  # one hypothesis alone is not agreed
    assert _tail(p, "Hello, world how", 2000) == "Hello, world how"
    assert p.stable_text == "Hello, world"  # case and punctuation do not matter
    assert _tail(p, "hello world how are you", 3000) == "hello world how are you"
    assert p.stable_text == "Hello, world how"  # agreed words are kept as first agreed


def test_a_disagreeing_hypothesis_keeps_the_agreed_words():
    p = InterimPolicy(InterimSettings())
    _tail(p, "the pound key", 1000)
    _tail(p, "the pound key please", 2000)
    assert p.stable_text == "the pound key"
    # The newer pass rewrites an agreed word: the agreed one stays, its later words follow
    # (and the words after it that the last two passes agree on become agreed).
    assert _tail(p, "the pond key please hold", 3000) == "the pound key please hold"
    assert p.stable_text == "the pound key please"
    assert _tail(p, "a pond", 4000) == "the pound key please"  # shorter: the agreed words stay


@pytest.mark.parametrize("third", ["press pound key now please", "press uh the pound key now please",
                                   "press the pound kee now please"])
def test_a_word_dropped_or_added_inside_the_agreed_words_does_not_shift_the_rest(third):
    p = InterimPolicy(InterimSettings())
    _tail(p, "press the pound key", 1000)
    _tail(p, "press the pound key now", 2000)
    assert p.stable_text == "press the pound key"
    assert _tail(p, third, 3000) == "press the pound key now please"
    _tail(p, third + " hold", 4000)
    assert p.stable_text == "press the pound key now please"


def test_agreed_prefix_is_never_retracted_random_hypotheses():
    rng = np.random.default_rng(7)
    words = ["press", "Press", "the", "pound", "pound,", "key", "keys", "now", "please"]
    for trial in range(30):
        p = InterimPolicy(InterimSettings())
        stable: list[str] = []
        for step in range(12):
            hyp = " ".join(rng.choice(words, size=rng.integers(0, 8)))
            shown = normalize_text(_tail(p, hyp, 1000 * (step + 1))).split()
            now = normalize_text(p.stable_text).split()
            assert now[:len(stable)] == stable, (trial, step)  # the stable prefix only grows
            assert shown[:len(now)] == now, (trial, step, shown, now)  # and is always shown
            stable = now


def test_chinese_is_agreed_character_by_character():
    p = InterimPolicy(InterimSettings())
    _tail(p, "今天天气")
    _tail(p, "今天天汽很好", 2000)
    assert p.stable_text == "今天天"
    assert _tail(p, "今天天气很好。", 3000) == "今天天气很好。"
    assert p.stable_text == "今天天"
    _tail(p, "今天天气很好。", 4000)
    assert p.stable_text == "今天天气很好。"


def test_a_commit_keeps_showing_the_tail_words_beyond_the_chunk():
    audio = _signal([("s", 1500), ("p", 500), ("s", 1500)])
    p = InterimPolicy(InterimSettings())
    p.plan(audio)
    cut = p.cuts[0]
    _tail(p, "there is a temporary greeting", len(audio))
    start, end, _, commit = p.plan(audio)
    assert (start, end, commit) == (0, cut, True)
    # The chunk's text replaces its words; the tail's later words stay until the tail is decoded.
    assert p.complete(start, end, "There is a temporary", True) == "There is a temporary greeting"
    assert p.committed_text == "There is a temporary"
    assert _tail(p, "greeting which", len(audio) - cut) == "There is a temporary greeting which"


def test_a_chunk_covering_the_last_tail_carries_nothing_over():
    audio = _signal([("s", 1500), ("p", 500), ("s", 1500)])
    p = InterimPolicy(InterimSettings())
    p.plan(audio[:_ms(1000)])
    _tail(p, "the director's directory", _ms(1000))
    start, end, _, commit = p.plan(audio)
    assert commit and end > _ms(1000)
    assert p.complete(start, end, "the directory", True) == "the directory"


def test_stale_results_change_nothing():
    audio = _signal([("s", 1500), ("p", 500), ("s", 1500)])
    p = InterimPolicy(InterimSettings())
    first = p.plan(audio)
    second = p.plan(audio)  # planned again before the first one's result came back
    assert first == second and first[3]
    shown = p.complete(first[0], first[1], "one two", True)
    assert p.complete(second[0], second[1], "one two", True) == shown  # already committed
    assert p.committed_text == "one two"
    start, end, _, _ = p.plan(audio)
    newer = p.complete(start, end, "three four", False)
    assert p.complete(start, end - 1000, "three", False) == newer  # older tail result: ignored
    assert p.complete(0, _ms(500), "zero", False) == newer  # planned before the commit


def test_reset_forgets_the_segment():
    audio = _signal([("s", 1500), ("p", 500), ("s", 1500)])
    p = InterimPolicy(InterimSettings())
    start, end, _, commit = p.plan(audio)
    p.complete(start, end, "one two", commit)
    _tail(p, "three four")
    _tail(p, "three four five")
    assert p.stable_text and p.committed_text
    p.reset()
    assert (p.stable_text, p.committed_text, p.commit_samples, p.cuts) == ("", "", 0, ())
    assert _tail(p, "other words") == "other words"
    n = _ms(1000)
    assert p.plan(audio[:n]) == (0, n, None, False)


# --- real speech -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moonshine():
    pytest.importorskip("onnxruntime")
    from sis_stream.engines.moonshine import MoonshineEngine

    try:
        return MoonshineEngine()  # the fold cache built for the test session (conftest)
    except EngineUnavailableError as exc:
        pytest.skip(f"Moonshine unavailable: {exc}")


def _segment(seconds: float) -> np.ndarray:
    """Several telephone prompts separated by 400 ms pauses (shorter than the default vad_tail,
    so an endpointer keeps them in one segment), at 16 kHz, with 300 ms of lead-in."""
    call = long_call(seconds, pause_ms=400, seed=1)
    r = StreamResampler(8000, RATE)
    pcm = np.concatenate([r.process(call.pcm), r.flush()])
    return pcm[_ms(100):]


def test_real_speech_interims_at_1_hz_cost_and_accuracy(moonshine):
    audio = _segment(12)
    final, _ = moonshine.decode(audio)
    decoded = {}
    texts = {}
    for mode in ("full", "agreement"):
        policy = InterimPolicy(InterimSettings(policy=mode))
        shown, stable = "", []
        for n in [*range(RATE, len(audio), RATE), len(audio)]:
            start, end, _prompt, commit = policy.plan(audio[:n])
            if mode == "full":
                continue  # its cost is known without decoding; its last text is the final's
            text = moonshine.decode(audio[start:end])[0] if end > start else ""
            shown = policy.complete(start, end, text, commit)
            now = normalize_text(policy.stable_text).split()
            assert now[:len(stable)] == stable and normalize_text(shown).split()[:len(now)] == now
            stable = now
        decoded[mode] = policy.decoded_samples / RATE
        texts[mode] = shown
    ratio = decoded["agreement"] / decoded["full"]
    wer = word_errors(final, texts["agreement"]).rate
    print(f"\nsegment {len(audio) / RATE:.1f} s, 1 Hz interims: decoded audio full {decoded['full']:.1f} s, "
          f"agreement {decoded['agreement']:.1f} s (ratio {ratio:.2f}); last interim vs final WER {wer:.3f}")
    print(f"final:   {final}\ninterim: {texts['agreement']}")
    assert ratio < 0.6
    assert wer <= 0.1
