"""``sis-stream convert``: transcode and resample an audio file to a SIS audio format."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, BinaryIO, Final

from ..audio.codec import decode
from ..audio.formats import SIS_FORMATS, AudioFormat, wav_bytes
from ._media import ENCODED_EXTENSIONS, encode_file
from .console import LiveDisplay
from ._common import (
    EXIT_INPUT,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_debug_flag,
    guarded,
    open_audio,
    read_all,
    sis_format_arg,
    to_mono,
)

__all__ = ["HELP", "NAME", "build", "convert_bytes", "run", "to_mono"]

NAME: Final = "convert"
HELP: Final = ("transcode and resample audio to a SIS format (e.g. --to ulaw8k8bit); the output's "
               "extension picks the container: .wav, .raw/.ul/.al, .flac/.ogg/.mp3")
#: Audio converted per step (one progress update each).
_STEP_MS: Final = 1000


def build(p: argparse.ArgumentParser) -> None:
    """Add the ``convert`` arguments to `p`."""
    p.add_argument("input", metavar="IN", help="WAV file (PCM, u-law, A-law; any rate, mono or "
                   "stereo), MP3/Ogg/FLAC/M4A/AMR/24-bit or float WAV (codecs extra), raw audio "
                   "with --audio-format, or - for stdin")
    p.add_argument("output", metavar="OUT",
                   help="output file; its extension picks the container: .wav, raw samples "
                        "(.raw, .pcm, .ul/.ulaw, .al/.alaw), .flac, .ogg/.opus (Opus), .mp3 "
                        "(codecs extra); - for raw on stdout")
    p.add_argument("--to", type=sis_format_arg, required=True, metavar="FMT",
                   help="target SIS format: pcm16k16bit, pcm8k16bit, ulaw8k8bit, ulaw16k8bit, "
                        "alaw8k8bit, alaw16k8bit")
    p.add_argument("--audio-format", type=sis_format_arg, metavar="FMT", help="IN is raw audio in this format")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    add_debug_flag(p)



def convert_bytes(data: bytes, src: AudioFormat, dst: AudioFormat,
                  progress: Any = None) -> bytes:
    """Convert all of `data` from `src` to `dst` with the streaming Transcoder, step by step.

    Parameters
    ----------
    data : bytes
        Whole sample frames of `src`.
    src, dst : AudioFormat
        `dst` is mono at 8 or 16 kHz (a SIS format); `src` may have several channels (mixed
        down first).
    progress : callable, optional
        Called with the input milliseconds converted so far after every step.

    Returns
    -------
    bytes
        The converted audio.
    """
    data, src = to_mono(data, src)
    if src == dst:
        if progress is not None:
            progress(src.duration_ms(len(data)))
        return data
    from ..audio.transcode import Transcoder

    tc = Transcoder(src, dst)
    step = max(1, src.rate_hz * _STEP_MS // 1000) * src.bytes_per_frame
    parts: list[bytes] = []
    for i in range(0, len(data), step):
        parts.append(tc.process(data[i : i + step]))
        if progress is not None:
            progress(src.duration_ms(min(len(data), i + step)))
    parts.append(tc.flush())
    return b"".join(parts)


#: Output extensions of raw samples, and the encoding each one requires (None: any).
RAW_EXTENSIONS: Final[dict[str, str | None]] = {".raw": None, ".pcm": "pcm", ".ul": "ulaw",
                                                 ".ulaw": "ulaw", ".al": "alaw", ".alaw": "alaw"}


def container_for(path: str, dst: AudioFormat) -> str:
    """The container `path`'s extension asks for: ``"raw"`` (``-`` too), ``"wav"`` or one of
    :data:`ENCODED_EXTENSIONS` (``".flac"``, ...).

    Raises
    ------
    CliError
        Exit 2: an extension nothing here writes, or a raw extension that names another encoding
        than `dst` (``out.ul`` with ``--to pcm16k16bit``).
    """
    if path == "-":
        return "raw"
    ext = os.path.splitext(path)[1].lower()
    if ext == ".wav":
        return "wav"
    if ext in ENCODED_EXTENSIONS:
        return ext
    if ext in RAW_EXTENSIONS:
        need = RAW_EXTENSIONS[ext]
        if need is not None and need != dst.encoding:
            names = [n for n in SIS_FORMATS if AudioFormat.from_sis(n).encoding == need]
            raise CliError(f"{path}: a {ext} file holds {need} samples, but --to is "
                           f"{dst.sis_name}; give --to {' or '.join(names)}, or name the output "
                           ".raw", EXIT_USAGE)
        return "raw"
    known = ", ".join([".wav", *RAW_EXTENSIONS, *ENCODED_EXTENSIONS])
    raise CliError(f"cannot tell the output container from {path!r}: use one of {known} "
                   "(or - for raw samples on stdout)", EXIT_USAGE)


def _write(path: str, dst: AudioFormat, out: bytes, stdout: BinaryIO | None) -> str:
    container = container_for(path, dst)
    if path == "-":
        sink = stdout if stdout is not None else sys.stdout.buffer
        sink.write(out)
        sink.flush()
        return "raw on stdout"
    try:
        if container in ENCODED_EXTENSIONS:
            pcm = out if dst.encoding == "pcm" else decode(out, dst.encoding)
            return encode_file(path, pcm, dst.rate_hz)
        with open(path, "wb") as f:
            f.write(wav_bytes(dst, out) if container == "wav" else out)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}", EXIT_INPUT) from exc
    return "WAV" if container == "wav" else "raw"


def convert_main(args: argparse.Namespace, *, stdin: BinaryIO | None = None,
                 stdout: BinaryIO | None = None, stderr: Any = None) -> int:
    """The body of ``sis-stream convert``."""
    err = sys.stderr if stderr is None else stderr
    container_for(args.output, args.to)  # refuse an unknown extension before any work
    source = open_audio(args.input, args.audio_format, stdin=stdin)
    data = read_all(source, _STEP_MS)
    if not data:
        raise CliError(f"input {source.name} holds no audio", EXIT_INPUT)
    src = source.format
    total_ms = src.duration_ms(len(data))
    quiet = args.quiet
    display = LiveDisplay(err, interim=False, finals=False, total_ms=total_ms)
    t0 = time.perf_counter()
    out = convert_bytes(data, src, args.to, None if args.quiet else display.progress)
    container = _write(args.output, args.to, out, stdout)
    display.close()
    if not quiet:
        dt = time.perf_counter() - t0
        err.write(f"{source.name} ({source.description}, {total_ms / 1000:.2f} s) -> {args.output} "
                  f"({args.to.sis_name}, {container}, {len(out)} bytes) in {dt:.3f} s\n")
        err.flush()
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    return convert_main(args)


run = guarded(NAME, _run)
run.__doc__ = """Run ``sis-stream convert``; returns the exit code."""
