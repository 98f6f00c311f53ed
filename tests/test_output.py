"""Transcript writers (txt/json/jsonl/srt/vtt) and the srt/vtt parsers."""

from __future__ import annotations

import io
import json

import pytest

from sis_stream.cli.output import (
    FORMATS,
    CaptionParseError,
    Cue,
    Transcript,
    TranscriptSegment,
    TranscriptWriter,
    Word,
    format_timestamp,
    format_transcript,
    parse_srt,
    parse_vtt,
    segments_from_dicts,
)


def _transcript() -> Transcript:
    return Transcript(
        [
            TranscriptSegment(0, 120, 2340, "Hello, thank you for calling.", 0.9,
                              (Word("hello", 120, 500), Word("thank", 600, 800))),
            TranscriptSegment(1, 2900, 2900, ""),  # an empty final (nothing decoded)
            TranscriptSegment(2, 3_601_005, 3_604_999, "  Please  hold --> the line. "),
        ],
        audio_ms=3_605_000.0,
        meta={"mode": "continue"},
    )


@pytest.mark.parametrize(
    ("ms", "style", "text"),
    [
        (0, "srt", "00:00:00,000"),
        (1234, "vtt", "00:00:01.234"),
        (3_723_004, "srt", "01:02:03,004"),
        (59_999.6, "clock", "01:00.000"),
        (3_723_004, "clock", "1:02:03.004"),
        (360_000_000, "srt", "100:00:00,000"),
    ],
)
def test_format_timestamp(ms: float, style: str, text: str) -> None:
    # Rounds to the millisecond; hours are not wrapped at 99.
    assert format_timestamp(ms, style) == text


def test_format_timestamp_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=">= 0 ms"):
        format_timestamp(-1)
    with pytest.raises(ValueError, match="style must be"):
        format_timestamp(1, "ass")
    with pytest.raises(TypeError, match="number"):
        format_timestamp("1")  # type: ignore[arg-type]


def test_srt_round_trip() -> None:
    # Empty segments get no cue (an empty cue is invalid); "-->" in text cannot break the timing.
    text = format_transcript(_transcript(), "srt")
    cues = parse_srt(text)
    assert cues == [
        Cue("1", 120, 2340, "Hello, thank you for calling."),
        Cue("2", 3_601_005, 3_604_999, "Please hold -> the line."),
    ]
    assert "01:00:01,005 --> 01:00:04,999" in text


def test_vtt_round_trip() -> None:
    text = format_transcript(_transcript(), "vtt")
    assert text.startswith("WEBVTT\n\n")
    cues = parse_vtt(text)
    assert [(c.start_ms, c.end_ms, c.text) for c in cues] == [
        (120, 2340, "Hello, thank you for calling."),
        (3_601_005, 3_604_999, "Please hold -> the line."),
    ]
    assert "00:00:00.120 --> 00:00:02.340" in text


def test_txt_one_line_per_segment() -> None:
    assert format_transcript(_transcript(), "txt").splitlines() == [
        "Hello, thank you for calling.", "", "Please  hold --> the line."]


def test_json_and_jsonl_parse_back() -> None:
    t = _transcript()
    doc = json.loads(format_transcript(t, "json"))
    assert doc["text"] == "Hello, thank you for calling. Please  hold --> the line."
    assert doc["mode"] == "continue" and doc["audio_ms"] == 3_605_000.0
    assert segments_from_dicts(doc["segments"]) == t.segments
    lines = format_transcript(t, "jsonl").splitlines()
    assert segments_from_dicts(json.loads(line) for line in lines) == t.segments


def test_writer_streams_segments_as_they_come() -> None:
    # txt/jsonl/srt/vtt write each segment at once (a Ctrl-C keeps them); json waits for close().
    for fmt in FORMATS:
        buf = io.StringIO()
        w = TranscriptWriter(buf, fmt)
        w.write(_transcript().segments[0])
        assert ("Hello" in buf.getvalue()) == (fmt != "json"), fmt
        assert w.streaming == (fmt != "json")
        w.close()
        w.close()  # idempotent
        assert "Hello" in buf.getvalue()
        with pytest.raises(ValueError, match="after close"):
            w.write(_transcript().segments[0])


def test_writer_validation() -> None:
    with pytest.raises(ValueError, match="txt, json, jsonl, srt, vtt"):
        TranscriptWriter(io.StringIO(), "docx")
    w = TranscriptWriter(io.StringIO(), "txt")
    with pytest.raises(TypeError, match="TranscriptSegment"):
        w.write("hello")  # type: ignore[arg-type]


def test_segment_validation() -> None:
    with pytest.raises(ValueError, match="end_ms must be >= start_ms"):
        TranscriptSegment(0, 10, 5, "x")
    with pytest.raises(ValueError, match=">= 0"):
        TranscriptSegment(0, -1, 5, "x")
    with pytest.raises(TypeError, match="start_ms must be an int"):
        TranscriptSegment(0, 1.5, 5, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a str"):
        TranscriptSegment(0, 1, 5, None)  # type: ignore[arg-type]


def test_parse_srt_errors_name_the_line() -> None:
    with pytest.raises(CaptionParseError, match="line 1: expected a numeric counter"):
        parse_srt("one\n00:00:00,000 --> 00:00:01,000\nx\n")
    with pytest.raises(CaptionParseError, match="line 2: bad timestamp"):
        parse_srt("1\n00:00:00.000 --> 00:00:01,000\nx\n")
    with pytest.raises(CaptionParseError, match="line 2: end .* before the start"):
        parse_srt("1\n00:00:02,000 --> 00:00:01,000\nx\n")
    with pytest.raises(CaptionParseError, match="needs a counter and a timing line"):
        parse_srt("1\n")


def test_parse_vtt_features_and_errors() -> None:
    # Cue ids, cue settings, NOTE blocks, short MM:SS.mmm times and CRLF are accepted.
    text = ("WEBVTT - test\r\n\r\nNOTE made by hand\r\n\r\nintro\r\n00:01.000 --> 00:02.500 "
            "align:start\r\nhi there\r\n\r\n00:00:03.000 --> 00:00:04.000\r\nbye\r\n")
    assert parse_vtt(text) == [Cue("intro", 1000, 2500, "hi there"), Cue("", 3000, 4000, "bye")]
    with pytest.raises(CaptionParseError, match="must start with 'WEBVTT'"):
        parse_vtt("1\n00:00:00.000 --> 00:00:01.000\nx\n")
    with pytest.raises(CaptionParseError, match="needs a timing line"):
        parse_vtt("WEBVTT\n\nid\nno timing here\n")
