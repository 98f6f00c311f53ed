"""``sis-stream demo``: speak a sentence with espeak-ng, send it as a phone line would carry it
(8 kHz u-law) through the embedded local server, and compare the transcript with the text."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Final, TextIO

from ..audio.formats import AudioFormat, write_wav
from .console import LiveDisplay
from ..text import word_errors
from ._common import (
    EXIT_OK,
    AudioSource,
    add_debug_flag,
    guarded,
)
from .transcribe import (
    Target,
    add_session_arguments,
    open_client,
    session_format_for,
    start_config,
    stream_audio,
)

__all__ = ["DEFAULT_TEXT", "HELP", "NAME", "build", "phone_audio", "run"]

NAME: Final = "demo"
HELP: Final = ("synthesise an English sentence, send it as 8 kHz u-law phone audio through the "
               "embedded local server, and compare the transcript with the text")

#: The sentence spoken by default: a call-centre greeting, as a phone line would carry it.
DEFAULT_TEXT: Final = ("Hello, thank you for calling. Please tell me how I can help you today, "
                       "and I will connect you to the right team.")
#: The phone-line format the demo converts to.
PHONE_FORMAT: Final = "ulaw8k8bit"


def build(p: argparse.ArgumentParser) -> None:
    """Add the ``demo`` arguments to `p`."""
    p.add_argument("--text", default=DEFAULT_TEXT, help="English text to speak (default: a greeting)")
    p.add_argument("--voice", default="en-us+m3", help="espeak-ng voice (default en-us+m3)")
    p.add_argument("--rate-wpm", type=int, default=150, help="speaking rate, words per minute (150)")
    p.add_argument("--save", metavar="FILE.wav", help="also write the 8 kHz u-law audio to this WAV file")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_session_arguments(p)
    p.set_defaults(punctuation=True)  # the demo shows sentences as whisper writes them
    add_debug_flag(p)



def phone_audio(text: str, voice: str = "en-us+m3", rate_wpm: int = 150) -> tuple[bytes, float]:
    """Speak `text` with espeak-ng and convert it to 8 kHz u-law with our resampler and codec.

    Returns
    -------
    (bytes, float)
        The u-law codes and the synthesised speech's duration in seconds.

    Raises
    ------
    EspeakUnavailableError
        The ``tts`` extra (espeakng-loader) is not installed.
    """
    from ..engines.espeak import synthesize
    from ..audio.transcode import Transcoder

    syn = synthesize(text, voice, rate_wpm=rate_wpm)
    src = AudioFormat(int(syn.rate_hz), "pcm", 2)
    tc = Transcoder(src, AudioFormat.from_sis(PHONE_FORMAT))
    codes = tc.process(syn.samples.astype("<i2").tobytes()) + tc.flush()
    return codes, float(syn.duration_s)


def _print_report(out: TextIO, text: str, hyp: str, counts: Any, summary_line: str) -> None:
    width = 12
    out.write(f"\n{'input text':<{width}}: {text}\n")
    out.write(f"{'recognised':<{width}}: {hyp or '(nothing)'}\n")
    out.write(f"{'WER':<{width}}: {counts.rate:.1%} ({counts.substitutions} substituted, "
              f"{counts.deletions} deleted, {counts.insertions} inserted of "
              f"{counts.reference_length} words)\n")
    out.write(f"{'session':<{width}}: {summary_line}\n")
    out.flush()


async def demo_async(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """The body of ``sis-stream demo``."""
    out = sys.stdout if stdout is None else stdout
    codes, speech_s = phone_audio(args.text, args.voice, args.rate_wpm)
    fmt = AudioFormat.from_sis(PHONE_FORMAT)
    if args.save:
        write_wav(args.save, fmt, codes)
    source = AudioSource(f"espeak-ng ({args.voice}, {args.rate_wpm} wpm)", fmt, len(codes), codes)
    session_format = args.session_format or session_format_for(fmt, args.property)
    display = LiveDisplay(sys.stderr if args.json else out, interim=args.interim,
                          total_ms=source.total_ms)
    display.note(f"synthesised {speech_s:.1f} s of speech with espeak-ng; converted to 8 kHz u-law "
                 f"({len(codes)} bytes, as a phone line carries it)")
    display.note(f"streaming it to the embedded local server as {session_format.sis_name} "
                 f"({args.mode}, {args.property})...")
    async with open_client(Target("embedded"), tuple(args.engine or ()),
                           debug=getattr(args, "debug", False)) as client:
        result = await stream_audio(
            client, source, mode=args.mode, config=start_config(args, session_format),
            session_format=session_format, pacing=args.speed, frame_ms=args.frame_ms,
            display=display, writer=None, interrupt=asyncio.Event())
    display.close()
    if result.error is not None:
        raise result.error
    hyp = result.transcript.text
    counts = word_errors(args.text, hyp)
    if args.json:
        doc = {"text": args.text, "recognised": hyp, "wer": counts.rate,
               "substitutions": counts.substitutions, "deletions": counts.deletions,
               "insertions": counts.insertions, "reference_words": counts.reference_length,
               "speech_s": round(speech_s, 3), "phone_format": PHONE_FORMAT,
               "session_format": session_format.sis_name,
               "segments": [s.to_dict() for s in result.transcript.segments]}
        out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        out.flush()
    else:
        _print_report(out, args.text, hyp, counts, result.summary.line())
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(demo_async(args))


run = guarded(NAME, _run)
run.__doc__ = """Run ``sis-stream demo``; returns the exit code."""
