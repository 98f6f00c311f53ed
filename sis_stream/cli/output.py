"""Transcript writers (txt, json, jsonl, srt, vtt) and the srt/vtt parsers that read them back."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

__all__ = [
    "FORMATS",
    "CaptionParseError",
    "Cue",
    "Transcript",
    "TranscriptSegment",
    "TranscriptWriter",
    "Word",
    "format_timestamp",
    "format_transcript",
    "parse_srt",
    "parse_vtt",
    "segments_from_dicts",
]

#: Output formats of ``sis-stream transcribe --format``.
FORMATS: Final = ("txt", "json", "jsonl", "srt", "vtt")
#: Formats whose segments can be written as they arrive (the rest are written at the end).
_STREAMING: Final = frozenset({"txt", "jsonl", "srt", "vtt"})
_MS_PER_HOUR: Final = 3_600_000


class CaptionParseError(ValueError):
    """An SRT/WebVTT text does not follow the format (the message names the line)."""


@dataclass(frozen=True)
class Word:
    """One recognised word with its times (ms on the session audio clock)."""

    word: str
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(frozen=True)
class TranscriptSegment:
    """One final result: a sentence with its times on the session audio clock.

    Attributes
    ----------
    index : int
        0, 1, 2, ... in arrival order.
    start_ms, end_ms : int
        Start and end of the sentence in ms of the input audio (``end_ms >= start_ms >= 0``).
    text : str
        The recognised text (may be empty: the engine heard nothing it could decode).
    score : float or None
        Confidence 0..1 when the server gives one.
    words : tuple of Word
        Word timings when the server sent ``word_info``.
    speaker : str or None
        The channel's role with ``--channels split`` (``"AGENT"`` for the left channel,
        ``"USER"`` for the right, like the transcriber's roles); None for one channel.
    """

    index: int
    start_ms: int
    end_ms: int
    text: str
    score: float | None = None
    words: tuple[Word, ...] = ()
    speaker: str | None = None

    def __post_init__(self) -> None:
        for name in ("index", "start_ms", "end_ms"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"TranscriptSegment.{name} must be an int, got {type(v).__name__}")
        if self.index < 0 or self.start_ms < 0:
            raise ValueError(
                f"index and start_ms must be >= 0, got index={self.index}, start_ms={self.start_ms}"
            )
        if self.end_ms < self.start_ms:
            raise ValueError(
                f"end_ms must be >= start_ms, got start_ms={self.start_ms}, end_ms={self.end_ms}"
            )
        if not isinstance(self.text, str):
            raise TypeError(f"TranscriptSegment.text must be a str, got {type(self.text).__name__}")
        if isinstance(self.words, list):
            object.__setattr__(self, "words", tuple(self.words))

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``index``, ``start_ms``, ``end_ms``, ``text`` (+ ``score``, ``words``)."""
        d: dict[str, Any] = {
            "index": self.index,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "text": self.text,
        }
        if self.score is not None:
            d["score"] = self.score
        if self.speaker is not None:
            d["speaker"] = self.speaker
        if self.words:
            d["words"] = [
                {"word": w.word, "start_ms": w.start_ms, "end_ms": w.end_ms} for w in self.words
            ]
        return d


@dataclass
class Transcript:
    """The finals of one transcription and what it was run with.

    Attributes
    ----------
    segments : list of TranscriptSegment
        In arrival order.
    audio_ms : float
        Audio sent (ms of input audio).
    meta : dict
        Free-form facts written into the JSON form (input, mode, property, trace id, stats...).
        Never put credentials here.
    """

    segments: list[TranscriptSegment] = field(default_factory=list)
    audio_ms: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """All non-empty segment texts joined by single spaces."""
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``text``, ``segments``, ``audio_ms`` and the ``meta`` items."""
        return {
            "text": self.text,
            "audio_ms": round(float(self.audio_ms), 3),
            "segments": [s.to_dict() for s in self.segments],
            **self.meta,
        }


def format_timestamp(ms: float, style: str = "srt") -> str:
    """Caption timestamp of `ms` milliseconds.

    Parameters
    ----------
    ms : int or float
        Time (>= 0), rounded to the nearest millisecond.
    style : {"srt", "vtt", "clock"}
        ``"srt"``: ``HH:MM:SS,mmm``; ``"vtt"``: ``HH:MM:SS.mmm``; ``"clock"``: ``MM:SS.mmm``
        below an hour, else ``H:MM:SS.mmm`` (console display).

    Returns
    -------
    str

    Raises
    ------
    ValueError
        Negative time or unknown style.
    """
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        raise TypeError(f"ms must be a number, got {type(ms).__name__}")
    if ms < 0:
        raise ValueError(f"timestamp must be >= 0 ms, got {ms}")
    total = int(round(ms))  # noqa: RUF046 - numpy floats round to floats
    h, rest = divmod(total, _MS_PER_HOUR)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    if style == "srt":
        return f"{h:02d}:{m:02d}:{s:02d},{milli:03d}"
    if style == "vtt":
        return f"{h:02d}:{m:02d}:{s:02d}.{milli:03d}"
    if style == "clock":
        return f"{h}:{m:02d}:{s:02d}.{milli:03d}" if h else f"{m:02d}:{s:02d}.{milli:03d}"
    raise ValueError(f"style must be 'srt', 'vtt' or 'clock', got {style!r}")


def _caption_text(text: str) -> str:
    # A blank line ends a cue and "-->" starts a timing line: keep the text on one safe line.
    one = " ".join(text.split())
    return one.replace("-->", "->")


class TranscriptWriter:
    """Write segments to a text stream in one of :data:`FORMATS`, as they arrive where possible.

    ``txt`` (one line per segment), ``jsonl`` (one JSON object per segment), ``srt`` and ``vtt``
    (one cue per non-empty segment) are written segment by segment, so a transcript interrupted
    by Ctrl-C keeps what was recognised; ``json`` (one document) is written by :meth:`close`.

    Parameters
    ----------
    out : text stream
        Where to write (not closed by the writer).
    fmt : {"txt", "json", "jsonl", "srt", "vtt"}

    Raises
    ------
    ValueError
        Unknown format.
    """

    def __init__(self, out: TextIO, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"output format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.out = out
        self.fmt = fmt
        self._cues = 0
        self._segments: list[TranscriptSegment] = []
        self._closed = False
        if fmt == "vtt":
            out.write("WEBVTT\n\n")

    @property
    def streaming(self) -> bool:
        """True when segments are written as they arrive (every format but ``json``)."""
        return self.fmt in _STREAMING

    def write(self, seg: TranscriptSegment) -> None:
        """Write (or, for ``json``, keep) one segment."""
        if self._closed:
            raise ValueError("TranscriptWriter.write() after close()")
        if not isinstance(seg, TranscriptSegment):
            raise TypeError(f"expected a TranscriptSegment, got {type(seg).__name__}")
        self._segments.append(seg)
        fmt = self.fmt
        label = f"{seg.speaker}: " if seg.speaker else ""
        if fmt == "txt":
            self.out.write(label + seg.text.strip() + "\n")
        elif fmt == "jsonl":
            self.out.write(json.dumps(seg.to_dict(), ensure_ascii=False) + "\n")
        elif fmt in ("srt", "vtt"):
            text = _caption_text(seg.text)
            if not text:
                return  # an empty cue is not valid SRT/WebVTT
            self._cues += 1
            start = format_timestamp(seg.start_ms, fmt)
            end = format_timestamp(seg.end_ms, fmt)
            self.out.write(f"{self._cues}\n{start} --> {end}\n{label}{text}\n\n")
        else:
            return
        self.out.flush()

    def close(self, transcript: Transcript | None = None) -> None:
        """Finish the output: the ``json`` document (from `transcript` if given, else the
        segments written). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.fmt == "json":
            doc = transcript if transcript is not None else Transcript(list(self._segments))
            self.out.write(json.dumps(doc.to_dict(), ensure_ascii=False, indent=2) + "\n")
            self.out.flush()


def format_transcript(transcript: Transcript, fmt: str) -> str:
    """The whole transcript in format `fmt` as a string (see :class:`TranscriptWriter`).

    Raises
    ------
    ValueError
        Unknown format.
    """
    buf = io.StringIO()
    w = TranscriptWriter(buf, fmt)
    for seg in transcript.segments:
        w.write(seg)
    w.close(transcript)
    return buf.getvalue()


# --- parsers (tests and tools read captions back) -----------------------------------------------


@dataclass(frozen=True)
class Cue:
    """One caption cue: identifier (SRT counter or WebVTT id, may be ``""``), times, text."""

    ident: str
    start_ms: int
    end_ms: int
    text: str


_SRT_TIME: Final = re.compile(r"^(\d{2,}):([0-5]\d):([0-5]\d),(\d{3})$")
_VTT_TIME: Final = re.compile(r"^(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})$")


def _time_ms(token: str, pattern: re.Pattern[str], line_no: int, what: str) -> int:
    m = pattern.match(token)
    if m is None:
        raise CaptionParseError(f"{what} line {line_no}: bad timestamp {token!r}")
    h, mi, s, ms = m.groups()
    return ((int(h or 0) * 60 + int(mi)) * 60 + int(s)) * 1000 + int(ms)


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[tuple[int, list[str]]] = []
    cur: list[str] = []
    start = 0
    for i, line in enumerate(lines, 1):
        if line.strip():
            if not cur:
                start = i
            cur.append(line)
        elif cur:
            out.append((start, cur))
            cur = []
    if cur:
        out.append((start, cur))
    return out


def _timing(line: str, pattern: re.Pattern[str], line_no: int, what: str) -> tuple[int, int]:
    parts = line.split("-->")
    if len(parts) != 2:
        raise CaptionParseError(f"{what} line {line_no}: expected 'START --> END', got {line!r}")
    start = _time_ms(parts[0].strip(), pattern, line_no, what)
    end_tok = parts[1].strip().split()  # WebVTT cue settings may follow the end time
    if not end_tok:
        raise CaptionParseError(f"{what} line {line_no}: missing end time in {line!r}")
    end = _time_ms(end_tok[0], pattern, line_no, what)
    if end < start:
        raise CaptionParseError(f"{what} line {line_no}: end {end_tok[0]} is before the start")
    return start, end


def parse_srt(text: str) -> list[Cue]:
    """Parse SubRip text: blocks of a counter line, ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` and text.

    Raises
    ------
    CaptionParseError
        A block without a numeric counter or timing line, or a malformed timestamp.
    """
    cues: list[Cue] = []
    for line_no, block in _blocks(text.lstrip("\ufeff")):
        if len(block) < 2:
            raise CaptionParseError(f"SRT line {line_no}: a cue needs a counter and a timing line")
        ident = block[0].strip()
        if not ident.isdigit():
            raise CaptionParseError(f"SRT line {line_no}: expected a numeric counter, got {ident!r}")
        start, end = _timing(block[1], _SRT_TIME, line_no + 1, "SRT")
        cues.append(Cue(ident, start, end, "\n".join(block[2:])))
    return cues


def parse_vtt(text: str) -> list[Cue]:
    """Parse WebVTT text: a ``WEBVTT`` header, then cues (optional id line, timing, text).

    ``NOTE``, ``STYLE`` and ``REGION`` blocks are skipped.

    Raises
    ------
    CaptionParseError
        No ``WEBVTT`` header, a cue without a timing line, or a malformed timestamp.
    """
    blocks = _blocks(text.lstrip("\ufeff"))
    if not blocks or not blocks[0][1][0].startswith("WEBVTT"):
        raise CaptionParseError("WebVTT line 1: the file must start with 'WEBVTT'")
    cues: list[Cue] = []
    for line_no, block in blocks[1:]:
        head = block[0]
        if head.startswith(("NOTE", "STYLE", "REGION")) and "-->" not in head:
            continue
        if "-->" in head:
            ident, timing_at = "", 0
        elif len(block) >= 2 and "-->" in block[1]:
            ident, timing_at = head.strip(), 1
        else:
            raise CaptionParseError(f"WebVTT line {line_no}: a cue needs a timing line")
        start, end = _timing(block[timing_at], _VTT_TIME, line_no + timing_at, "WebVTT")
        cues.append(Cue(ident, start, end, "\n".join(block[timing_at + 1 :])))
    return cues


def segments_from_dicts(items: Iterable[dict[str, Any]]) -> list[TranscriptSegment]:
    """Rebuild segments from their :meth:`TranscriptSegment.to_dict` forms (json/jsonl output)."""
    out: list[TranscriptSegment] = []
    for d in items:
        words = tuple(Word(w["word"], w.get("start_ms"), w.get("end_ms")) for w in d.get("words", ()))
        out.append(
            TranscriptSegment(
                int(d["index"]), int(d["start_ms"]), int(d["end_ms"]), str(d["text"]),
                d.get("score"), words,
            )
        )
    return out

