"""Interim (partial) result policy: which audio a partial decodes and what text it shows.

A buffered engine (Whisper, Moonshine) decodes a whole segment at once. Decoding the whole open
segment for every partial makes a partial cost proportional to the segment's length, so a long
segment with partials at 1 Hz costs quadratic time. :class:`InterimPolicy` bounds that cost.

Theory of operation
-------------------
Policy ``"full"`` is the plain behaviour: every partial decodes the whole open segment and shows
that text.

Policy ``"agreement"`` splits the open segment at its internal pauses: runs of at least
``commit_pause_ms`` of non-speech, found by the energy VAD of :mod:`sis_stream.audio.vad` (with no
hangover, as the endpointer runs it). A pause cuts the segment ``commit_pause_ms / 2`` after the
speech stopped (so a chunk ends in silence and the next one starts in silence); a chunk shorter
than ``min_chunk_ms`` is merged into the one after it. The chunks before the last cut are
*closed*, the audio after it is the *open tail*. Each pass (:meth:`InterimPolicy.plan`) decodes
one of

* the oldest closed chunk not committed yet (``commit=True``): its text is appended to the
  segment's *committed text* and that audio is never decoded again by a partial; or
* when every closed chunk is committed, the open tail (``commit=False``), from the last commit
  point to the end of the audio.

Both get the last ``prompt_chars`` characters of the committed text as the prompt (Whisper uses
it as its previous-text prompt; Moonshine ignores it). A partial's cost is thus proportional to
the audio since the last pause, not to the whole segment.

The text shown (:meth:`InterimPolicy.complete`) is the committed text followed by the open tail's
hypothesis, stabilised with LocalAgreement-2: the word prefix on which two consecutive tail
hypotheses agree (compared case- and punctuation-insensitively) becomes *stable* and is never
retracted by a later interim of the same segment. When a newer hypothesis disagrees with the
stable prefix, the stable words are shown followed by the newer hypothesis's words after its
part that aligns with them (the prefix closest to them in word edit distance, so a word dropped
or inserted inside the stable part does not shift the rest). Chinese text is compared character
by character. A commit pass shows the committed text followed by the last tail hypothesis's words
beyond the committed chunk's word count, when that hypothesis covered audio past the chunk's end
(so the text does not shrink while the tail waits for its next decode).

A segment with no pause of ``commit_pause_ms`` (a read sentence) commits nothing: its partials
decode the whole segment, as ``"full"`` does.

Finals are not this module's business: they always decode the whole segment, and the final text
replaces every interim.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, fields
from typing import Any, Final

import numpy as np

from ..audio.vad import EnergyVad, VadTuning
from ..errors import EngineConfigError

__all__ = [
    "INTERIM_OPTION_PREFIX",
    "INTERIM_POLICIES",
    "InterimPolicy",
    "InterimSettings",
    "interim_settings_from_options",
]

#: Valid values of :attr:`InterimSettings.policy`.
INTERIM_POLICIES: Final = ("agreement", "full")
#: Engine options starting with this are interim settings (``interim_policy=full`` ->
#: ``InterimSettings(policy="full")``), taken out before the engine is constructed.
INTERIM_OPTION_PREFIX: Final = "interim_"

#: Bounds of the integer settings, inclusive: name -> (low, high).
_INT_RANGES: Final = {
    "commit_pause_ms": (100, 5000),
    "min_chunk_ms": (0, 30000),
    "prompt_chars": (0, 1000),
}
#: VAD frame, ms (the endpointer's default).
_FRAME_MS: Final = 10
#: Words a hypothesis may drop or insert inside the stable prefix and still be aligned with it.
_ALIGN_BAND: Final = 4


@dataclass(frozen=True)
class InterimSettings:
    """How partial results of a buffered engine are computed.

    Attributes
    ----------
    policy : {"agreement", "full"}
        ``"agreement"`` (default): decode only the audio since the last committed pause and
        stabilise the text with LocalAgreement-2. ``"full"``: decode the whole open segment
        for every partial.
    commit_pause_ms : int
        A run of non-speech at least this long (100..5000 ms, default 300) inside the segment
        closes a chunk.
    min_chunk_ms : int
        Chunks shorter than this (0..30000 ms, default 1000) are merged into the next one.
    prompt_chars : int
        How many of the committed text's last characters are given as the prompt (0..1000,
        default 200; 0: no prompt).

    Raises
    ------
    EngineConfigError
        For an unknown policy or an integer out of range, naming the valid values.
    """

    policy: str = "agreement"
    commit_pause_ms: int = 300
    min_chunk_ms: int = 1000
    prompt_chars: int = 200

    def __post_init__(self) -> None:
        if self.policy not in INTERIM_POLICIES:
            raise EngineConfigError(f"interim_policy must be one of {', '.join(INTERIM_POLICIES)}; "
                                    f"got {self.policy!r}")
        for name, (lo, hi) in _INT_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise EngineConfigError(f"interim_{name} must be an integer in {lo}..{hi}; got {value!r}")


def interim_settings_from_options(options: dict[str, Any], engine: str = "engine") -> InterimSettings:
    """Take every ``interim_*`` option out of `options` (in place) and validate it.

    Parameters
    ----------
    options : dict
        An engine's keyword options; the ``interim_*`` keys are removed from it. Values may be
        strings (from the command line: ``"300"``) or already typed.
    engine : str
        The engine's name, for error messages.

    Returns
    -------
    InterimSettings
        The defaults for every setting not given.

    Raises
    ------
    EngineConfigError
        For an unknown ``interim_*`` option (naming the valid ones) or a bad value.
    """
    valid = [f.name for f in fields(InterimSettings)]
    given: dict[str, Any] = {}
    for key in [k for k in options if isinstance(k, str) and k.startswith(INTERIM_OPTION_PREFIX)]:
        value = options.pop(key)
        name = key[len(INTERIM_OPTION_PREFIX):]
        if name not in valid:
            raise EngineConfigError(f"unknown option {engine}.{key}; interim options: "
                                    f"{', '.join(INTERIM_OPTION_PREFIX + v for v in valid)}")
        if name != "policy" and isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                lo, hi = _INT_RANGES[name]
                raise EngineConfigError(f"{engine}.{key} must be an integer in {lo}..{hi}; "
                                        f"got {value!r}") from None
        given[name] = value.strip() if isinstance(value, str) else value
    try:
        return InterimSettings(**given)
    except EngineConfigError as exc:
        raise EngineConfigError(f"{engine}.{exc}") from None


# --- words -------------------------------------------------------------------------------------

#: One token: a CJK character (Chinese is compared character by character) or a run of other
#: non-space characters, each with the whitespace before it (so "".join(tokens) is the text).
_TOKEN_RE: Final = re.compile(
    r"\s*(?:[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]"
    r"|[^\s\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]+)"
)
_CJK_RE: Final = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.strip())


def _norm(token: str) -> str:
    """A token compared without case and punctuation ("Hello," == "hello")."""
    return "".join(c for c in token.strip().casefold() if not unicodedata.category(c).startswith("P"))


def _join(tokens: list[str]) -> str:
    return "".join(tokens).strip()


def _concat(a: str, b: str) -> str:
    """Two texts joined with one space, or none between Chinese characters."""
    a, b = a.strip(), b.strip()
    if not a or not b:
        return a or b
    if _CJK_RE.match(a[-1]) or _CJK_RE.match(b[0]):
        return a + b
    return f"{a} {b}"


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if _norm(x) != _norm(y):
            break
        n += 1
    return n


def _after(stable: list[str], candidate: list[str]) -> int:
    """Where the words of `candidate` that follow the `stable` words start.

    The candidate prefix closest to `stable` in word edit distance (within ``_ALIGN_BAND`` words
    of the same length; ties go to the same length), so a word the candidate drops or inserts
    inside the stable part does not shift the words after it.
    """
    k = _common_prefix(stable, candidate)
    m = len(stable)
    if k == m:
        return m
    s = [_norm(t) for t in stable[k:]]
    c = [_norm(t) for t in candidate[k:k + len(s) + _ALIGN_BAND]]
    band, n, inf = _ALIGN_BAND, len(c), len(s) + len(c) + 1
    row = [j if j <= band else inf for j in range(n + 1)]  # distance of s[:0] to c[:j]
    for i in range(1, len(s) + 1):
        new = [i if i <= band else inf] + [inf] * n
        for j in range(max(1, i - band), min(n, i + band) + 1):
            new[j] = min(row[j] + 1, new[j - 1] + 1, row[j - 1] + (s[i - 1] != c[j - 1]))
        row = new
    best = min(range(n + 1), key=lambda j: (row[j], abs(j - len(s))))
    return k + best


# --- the policy --------------------------------------------------------------------------------

class InterimPolicy:
    """Plans the partial decodes of one stream's open segment and stabilises their text.

    One per engine stream; not thread-safe (serialise the calls, e.g. under the stream's lock).
    Pure logic: it decodes nothing itself.

    Parameters
    ----------
    settings : InterimSettings
        The policy and its knobs.
    sample_rate_hz : int
        Rate of the audio given to :meth:`plan` (8000 or 16000; engines take 16000).

    Examples
    --------
    The caller's loop for one partial (``decode`` stands for the engine's decoder)::

        start, end, prompt, commit = policy.plan(segment_audio)
        text = decode(segment_audio[start:end], prompt) if end > start else ""
        interim = policy.complete(start, end, text, commit)
    """

    def __init__(self, settings: InterimSettings, sample_rate_hz: int = 16000) -> None:
        if not isinstance(settings, InterimSettings):
            raise TypeError(f"settings must be an InterimSettings, got {type(settings).__name__}")
        self.settings: Final = settings
        self.sample_rate_hz: Final = int(sample_rate_hz)
        base = VadTuning.from_sensitivity(0.5)
        tuning = VadTuning(**{**base.__dict__, "hangover_ms": 0, "hangover_quiet_ms": 0,
                              "hangover_low_snr_ms": 0})
        self._vad = EnergyVad(self.sample_rate_hz, _FRAME_MS, tuning=tuning)
        self._frame_len = self._vad.frame_len
        self._pause_frames = -(-settings.commit_pause_ms // _FRAME_MS)
        self._min_chunk = settings.min_chunk_ms * self.sample_rate_hz // 1000
        self.reset()

    # -- state -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the segment (it ended with a final, or was dropped): ready for the next one."""
        self._vad.reset()
        self._seen = 0  # samples given to the VAD
        self._frames = 0  # VAD frames decided
        self._silence_run = 0  # non-speech frames in a row at the end
        self._speech_since_cut = False  # a speech frame since the last cut (or segment start)
        self._last_speech_frame = -1
        self._cuts: list[int] = []  # sample positions of the pause cuts, increasing
        self._commit_end = 0  # samples committed (the open tail starts here)
        self._committed = ""  # committed text
        self._tail: tuple[int, int, list[str]] = (0, 0, [])  # (start, end, tokens) of the last tail pass
        self._prev: list[str] | None = None  # tokens of the last tail pass's whole text
        self._stable: list[str] = []  # the agreed tokens, never retracted
        self._shown = ""  # the last interim text returned
        self.decoded_samples = 0  # samples planned for decoding since the last reset (a measure)

    @property
    def committed_text(self) -> str:
        """Text of the committed chunks of the open segment."""
        return self._committed

    @property
    def commit_samples(self) -> int:
        """Where the open tail starts, in samples from the segment's start."""
        return self._commit_end

    @property
    def stable_text(self) -> str:
        """The agreed prefix: never retracted before :meth:`reset`."""
        return _join(self._stable)

    @property
    def cuts(self) -> tuple[int, ...]:
        """Sample positions of the pauses found so far (before merging short chunks)."""
        return tuple(self._cuts)

    # -- planning --------------------------------------------------------------------------
    def plan(self, audio: np.ndarray) -> tuple[int, int, str | None, bool]:
        """Which part of the open segment the next partial decodes.

        Parameters
        ----------
        audio : numpy.ndarray
            int16, the whole open segment so far (each call's audio extends the previous one's
            until :meth:`reset`).

        Returns
        -------
        start, end : int
            Decode ``audio[start:end]``. An empty span (``start == end``: the open tail holds
            no speech) means nothing to decode: call :meth:`complete` with text ``""``.
        prompt : str or None
            The committed text's end, for decoders that take a previous-text prompt.
        commit : bool
            True when ``[start:end]`` is a closed chunk whose text becomes committed; give it
            back to :meth:`complete`.

        Raises
        ------
        TypeError
            If `audio` is not a 1-D int16 array.
        ValueError
            If `audio` is shorter than the audio of an earlier call (call :meth:`reset` between
            segments).
        """
        if not isinstance(audio, np.ndarray) or audio.dtype != np.int16 or audio.ndim != 1:
            raise TypeError(f"audio must be a 1-D int16 numpy array, got {_describe(audio)}")
        n = len(audio)
        if self.settings.policy == "full":
            self.decoded_samples += n
            return 0, n, None, False
        if n < self._seen:
            raise ValueError(f"audio has {n} samples, fewer than the {self._seen} already planned: "
                             "call reset() when a segment ends")
        self._scan(audio[self._seen:])
        prompt = self._prompt()
        for cut in self._cuts:
            if cut - self._commit_end >= max(self._min_chunk, 1):
                self.decoded_samples += cut - self._commit_end
                return self._commit_end, cut, prompt, True
        if self._last_speech_frame * self._frame_len + self._frame_len <= self._commit_end:
            return n, n, prompt, False  # nothing but silence since the last commit
        self.decoded_samples += n - self._commit_end
        return self._commit_end, n, prompt, False

    def _prompt(self) -> str | None:
        chars = self.settings.prompt_chars
        if not chars or not self._committed:
            return None
        text = self._committed[-chars:]
        if len(self._committed) > chars and " " in text:  # start at a word
            text = text[text.index(" ") + 1:]
        return text or None

    def _scan(self, new: np.ndarray) -> None:
        """Run the VAD over the new samples and record the pause cuts they complete."""
        self._seen += len(new)
        speech = self._vad.process(new)
        for is_speech in speech.tolist():
            frame = self._frames
            self._frames += 1
            if is_speech:
                self._silence_run = 0
                self._speech_since_cut = True
                self._last_speech_frame = frame
                continue
            self._silence_run += 1
            if self._silence_run == self._pause_frames and self._speech_since_cut:
                pause_start = self._frames - self._pause_frames
                self._cuts.append((pause_start + self._pause_frames // 2) * self._frame_len)
                self._speech_since_cut = False

    # -- results ---------------------------------------------------------------------------
    def complete(self, start: int, end: int, text: str, commit: bool) -> str:
        """Take the decode of a planned span; return the interim text to show.

        Parameters
        ----------
        start, end : int
            The span :meth:`plan` returned.
        text : str
            Its transcript (``""`` for an empty span).
        commit : bool
            What :meth:`plan` returned with the span.

        Returns
        -------
        str
            Committed text + the open tail's hypothesis, with the agreed prefix kept. A stale
            result (its span planned before a commit or a newer tail result taken since) changes
            nothing and gets the last interim text back, so results that overlap or arrive out
            of order are harmless; a planned decode that is dropped needs no call at all.

        Raises
        ------
        TypeError
            If `text` is not a str.
        ValueError
            For a commit span that is empty.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self.settings.policy == "full":
            return text
        tail_start, tail_end, tail = self._tail
        if start != self._commit_end and end > start:
            return self._shown  # planned before the last commit
        if commit:
            if end <= start:
                raise ValueError(f"a commit span cannot be empty, got {start}..{end}")
            # Until the tail is decoded again, show the last tail hypothesis's words beyond this
            # chunk's, if that hypothesis covered audio beyond the chunk.
            rest = tail[len(_tokens(text)):] if tail_start == start and tail_end > end else []
            self._committed = _concat(self._committed, text)
            self._commit_end = end
            self._tail = (end, tail_end, rest)
            candidate = _tokens(_concat(self._committed, _join(rest)))
            return self._show(candidate)
        if end > start and tail_start == start and end < tail_end:
            return self._shown  # older than the tail result already taken
        tail = _tokens(text)
        self._tail = (self._commit_end, end, tail)
        candidate = _tokens(_concat(self._committed, text))
        if self._prev is not None:
            # LocalAgreement-2: extend the stable prefix by what the last two passes agree on
            # after it (the stable part itself is kept even if the newer pass disagrees).
            j = _after(self._stable, candidate)
            agreed = _common_prefix(self._prev[_after(self._stable, self._prev):], candidate[j:])
            self._stable.extend(candidate[j:j + agreed])
        self._prev = candidate
        return self._show(candidate)

    def _show(self, candidate: list[str]) -> str:
        # The stable words (as the newest hypothesis writes them where it has the same words
        # in the same places: punctuation and case may change), then the newest hypothesis's
        # words after them.
        j = _after(self._stable, candidate)
        shown = list(self._stable)
        if j == len(shown):
            shown = [c if _norm(c) == _norm(s) else s for s, c in zip(shown, candidate)]
        self._shown = _join(shown + candidate[j:])
        return self._shown


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"ndarray(dtype={x.dtype}, ndim={x.ndim})"
    return type(x).__name__
