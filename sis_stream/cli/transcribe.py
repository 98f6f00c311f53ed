"""``sis-stream transcribe``: stream audio to SIS (the embedded local server by default) and write
the transcript."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import re
import struct
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from ..audio.formats import AudioFormat
from .target import ENV_VARS, Target, add_target_arguments, resolve_target
from .batch import BatchDisplay, expand_inputs, output_paths
from .console import LiveDisplay, Summary
from ..errors import AudioFormatError, RequestRejected, SisConnectionError
from .output import FORMATS, Transcript, TranscriptSegment, TranscriptWriter, Word
from ..client.pacing import Pacer
from ..protocol import (
    ConnectionClosed,
    Ended,
    ExceededAudio,
    ExceededSilence,
    FinalResult,
    PartialResult,
    ServerError,
    Started,
    VoiceEnd,
    VoiceStart,
    validate_config,
)
from ._common import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    AudioSource,
    CliError,
    InputError,
    add_debug_flag,
    exit_code_for,
    guarded,
    install_interrupt,
    open_audio,
    quiet_loggers,
    scrub,
    sis_format_arg,
)

__all__ = [
    "ENV_VARS",
    "HELP",
    "NAME",
    "SessionResult",
    "Target",
    "build",
    
    "resolve_target",
    "run",
    "session_format_for",
    "speed_arg",
    "stream_audio",
]

NAME: Final = "transcribe"
HELP: Final = ("transcribe audio files (WAV, MP3, Ogg, FLAC, M4A, ..., raw, or stdin) on the embedded "
               "local server or Huawei Cloud SIS")

DEFAULT_PROPERTY: Final = "english_16k_common"
_MODES: Final = ("continue", "sentence", "short")
_RATE_RE: Final = re.compile(r"_(8|16)k_")


# --- arguments -----------------------------------------------------------------------------------


def speed_arg(value: str) -> str | None:
    """argparse type for ``--speed``: ``realtime``, ``xN`` (N in [1, 1000]) or ``max`` (None)."""
    v = value.strip().lower()
    if v == "max":
        return None
    try:
        Pacer(0.1, policy=v)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(
            f"speed must be 'realtime', 'xN' (e.g. x4) or 'max', got {value!r}"
        ) from None
    return v


def _engine_item(value: str) -> str:
    prop, eq, engine = value.partition("=")
    if not eq or not prop.strip() or not engine.strip():
        raise argparse.ArgumentTypeError(f"expected PROPERTY=ENGINE, got {value!r}")
    return f"{prop.strip()}={engine.strip()}"


def add_session_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``transcribe`` and ``demo``: recognition config and the local server."""
    g = p.add_argument_group("recognition")
    g.add_argument("--mode", choices=_MODES, default="continue",
                   help="RASR mode: continue-stream (default), sentence-stream, short-stream")
    g.add_argument("--property", default=DEFAULT_PROPERTY,
                   help=f"SIS property (model), default {DEFAULT_PROPERTY}")
    g.add_argument("--interim", action="store_true", help="ask for and show interim results")
    g.add_argument("--punctuation", action="store_true", help="add_punc=yes")
    g.add_argument("--word-info", action="store_true", help="need_word_info=yes (word timings)")
    g.add_argument("--no-digit-norm", action="store_true", help="digit_norm=no")
    g.add_argument("--vad-head", type=int, metavar="MS", help="leading silence limit, ms (SIS default 10000)")
    g.add_argument("--vad-tail", type=int, metavar="MS", help="trailing silence ending a sentence, ms (500)")
    g.add_argument("--max-seconds", type=int, metavar="S", help="longest sentence, s (30)")
    g.add_argument("--speed", type=speed_arg, default=None, metavar="realtime|xN|max",
                   help="sending pace: realtime (like a call), xN (N times faster), max (default)")
    g.add_argument("--frame-ms", type=int, default=100, metavar="MS", help="audio frame length (100)")
    g.add_argument("--session-format", type=sis_format_arg, metavar="FMT",
                   help="audio_format on the wire (default: the input's if the property's rate "
                        "matches, else PCM at the property's rate)")
    s = p.add_argument_group("local server (used when no endpoint is given)")
    s.add_argument("--engine", action="append", type=_engine_item, metavar="PROPERTY=ENGINE",
                   help="route a property to an engine (moonshine-whisper, moonshine, whisper, "
                        "whisper-base, pocketsphinx, none); repeatable")


def build(p: argparse.ArgumentParser) -> None:
    """Add the ``transcribe`` arguments to `p`."""
    p.add_argument("input", metavar="INPUT", nargs="+",
                   help="audio file(s) or directories: WAV (PCM, u-law, A-law); MP3, Ogg/Opus, FLAC, "
                        "M4A/AAC, AMR, 24-bit or float WAV (the codecs extra, PyAV); raw audio with "
                        "--audio-format; or - for stdin. Several inputs give one transcript each "
                        "(beside the input, or in the -o directory)")
    p.add_argument("--audio-format", type=sis_format_arg, metavar="FMT",
                   help="INPUT is raw audio in this format (pcm16k16bit, pcm8k16bit, ulaw8k8bit, "
                        "ulaw16k8bit, alaw8k8bit, alaw16k8bit)")
    p.add_argument("--format", choices=FORMATS, default="txt", help="transcript format (txt)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the transcript here (default stdout); with several inputs a "
                        "directory (created if missing) for one <input name>.<format> each")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no live display or batch progress bar (errors only)")
    p.add_argument("--channels", choices=("mix", "split"), default="mix",
                   help="multi-channel files: mix to mono (default), or split: one session per "
                        "channel, segments labelled AGENT (left) and USER (right)")
    add_session_arguments(p)
    add_target_arguments(p)
    add_debug_flag(p)



# --- one recognition session ---------------------------------------------------------------------


def property_rate_hz(prop: str) -> int:
    """The sample rate a SIS property name carries (``english_16k_common`` -> 16000; else 16000)."""
    m = _RATE_RE.search(prop)
    return int(m.group(1)) * 1000 if m else 16000


def session_format_for(input_format: AudioFormat, prop: str) -> AudioFormat:
    """The wire ``audio_format``: the input's own when SIS accepts it at the property's rate,
    else 16-bit PCM at that rate (the client transcodes and resamples on the way)."""
    rate = property_rate_hz(prop)
    if input_format.channels == 1 and input_format.rate_hz == rate:
        try:
            return AudioFormat.from_sis(input_format.sis_name)
        except AudioFormatError:
            pass
    return AudioFormat.from_sis(f"pcm{rate // 1000}k16bit")


def start_config(args: argparse.Namespace, session_format: AudioFormat) -> dict[str, Any]:
    """The START config (wire names) from the command-line options."""
    cfg: dict[str, Any] = {
        "audio_format": session_format.sis_name,
        "property": args.property,
        "interim_results": "yes" if args.interim else "no",
        "add_punc": "yes" if getattr(args, "punctuation", False) else "no",
        "need_word_info": "yes" if getattr(args, "word_info", False) else "no",
        "digit_norm": "no" if getattr(args, "no_digit_norm", False) else "yes",
    }
    for opt in ("vad_head", "vad_tail", "max_seconds"):
        v = getattr(args, opt, None)
        if v is not None:
            cfg[opt] = v
    return cfg


def check_config(config: Mapping[str, Any], mode: str) -> None:
    """Validate the START config as a server would, before anything starts.

    Raises
    ------
    CliError
        Exit 2, with the SIS message (e.g. ``SIS.0032: 'vad_tail' is invalid``).
    """
    from ..client.rasr import MODES

    try:
        validate_config(dict(config), MODES[mode])
    except RequestRejected as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc


@dataclass
class SessionResult:
    """What one session produced: transcript, summary, and the error that ended it, if any."""

    transcript: Transcript
    summary: Summary
    error: BaseException | None = None
    interrupted: bool = False
    trace_id: str | None = None
    events: list[str] = field(default_factory=list)


def _segment(index: int, ev: FinalResult) -> TranscriptSegment:
    seg = ev.segment
    res = seg.result
    words: tuple[Word, ...] = ()
    if res is not None and res.word_info:
        words = tuple(Word(w.word or "", w.start_time, w.end_time) for w in res.word_info)
    start = max(0, int(seg.start_time))
    return TranscriptSegment(index, start, max(start, int(seg.end_time)), ev.text,
                             res.score if res is not None else None, words)


@contextlib.asynccontextmanager
async def open_client(target: Target, engine_overrides: tuple[str, ...] = (), *,
                      debug: bool = False) -> AsyncIterator[Any]:
    """A connected :class:`~sis_stream.client.rasr.RasrClient` for `target` (starting the embedded
    server for ``"embedded"``, its log lines silenced unless `debug`)."""
    from ..client.rasr import RasrClient
    from ..client.transport import TransportOptions

    if target.kind == "embedded":
        with quiet_loggers(enabled=not debug):
            async with embedded_server(engine_overrides=engine_overrides) as server, \
                    server.client() as client:
                yield client
        return
    assert target.endpoint and target.project_id and target.auth is not None
    options = TransportOptions(verify_tls=not target.insecure)
    async with RasrClient(target.endpoint, target.project_id, target.auth, options=options) as client:
        yield client


def embedded_server(**kwargs: Any) -> Any:
    """The embedded server factory (:func:`sis_stream.server.embedded.embedded_server`); tests replace
    this module attribute to share one engine registry between runs."""
    from ..server.embedded import embedded_server as factory

    return factory(**kwargs)


async def stream_audio(
    client: Any,
    source: AudioSource,
    *,
    mode: str,
    config: Mapping[str, Any],
    session_format: AudioFormat,
    pacing: str | None,
    frame_ms: int,
    display: LiveDisplay,
    writer: TranscriptWriter | None,
    interrupt: asyncio.Event,
) -> SessionResult:
    """Run one session: feed `source`, collect finals, drive the display.

    Ctrl-C (`interrupt` set) stops feeding and sends END with cancel; the finals received so far
    are kept. A server ERROR ends the session and is returned in :attr:`SessionResult.error`
    (exceptions from connecting or from the transport propagate).
    """
    transcript = Transcript()
    result = SessionResult(transcript, Summary(0, 0.0, 0.0))
    input_format = None if source.format == session_format else source.format
    ttfs: float | None = None
    server_done = asyncio.Event()
    async with client.stream(mode, config=dict(config), input_format=input_format,
                             frame_ms=frame_ms, pacing=pacing) as stream:

        feed_error: list[BaseException] = []

        async def sender() -> None:
            display.start()
            try:
                async for chunk in source.achunks(frame_ms):
                    if interrupt.is_set() or server_done.is_set():
                        break
                    await stream.send(chunk)
                # end() returns once the buffered frames and END are on the wire; a Ctrl-C
                # meanwhile turns it into END with cancel (the watcher's end(cancel=True)).
                if not interrupt.is_set():
                    await stream.end()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - re-raised once the session is over
                feed_error.append(exc)
                with contextlib.suppress(Exception):
                    await stream.end(cancel=True)

        async def watcher() -> None:
            await interrupt.wait()
            result.interrupted = True
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed
            await stream.end(cancel=True)

        async def ticker() -> None:
            while True:
                display.progress(stream.stats.audio_ms_sent)
                await asyncio.sleep(0.1)

        feed = asyncio.create_task(sender(), name="sis-stream-cli-sender")
        watch = asyncio.create_task(watcher(), name="sis-stream-cli-interrupt")
        tick = asyncio.create_task(ticker(), name="sis-stream-cli-progress") if display.tty else None
        try:
            async for ev in stream:
                if isinstance(ev, Started):
                    result.trace_id = ev.trace_id
                elif isinstance(ev, PartialResult):
                    display.interim(ev.text, ev.segment.start_time)
                elif isinstance(ev, FinalResult):
                    if ttfs is None:
                        ttfs = display.elapsed_s
                    seg = _segment(len(transcript.segments), ev)
                    transcript.segments.append(seg)
                    if writer is not None:
                        writer.write(seg)
                    display.final(seg)
                elif isinstance(ev, (VoiceStart, VoiceEnd, ExceededSilence, ExceededAudio)):
                    name = {VoiceStart: "VOICE_START", VoiceEnd: "VOICE_END",
                            ExceededSilence: "EXCEEDED_SILENCE", ExceededAudio: "EXCEEDED_AUDIO"}[type(ev)]
                    at = f" at {ev.timestamp / 1000:.2f} s" if ev.timestamp is not None else ""
                    result.events.append(name)
                    display.note(f"event {name}{at}")
                    if not isinstance(ev, VoiceStart):
                        server_done.set()  # the server ignores later audio: stop and END
                elif isinstance(ev, ServerError):
                    result.error = ev.to_exception()
                    server_done.set()
                elif isinstance(ev, ConnectionClosed):
                    if ev.during_session and result.error is None and not result.interrupted:
                        result.error = SisConnectionError(
                            "the connection was closed during the session"
                            + (f" ({ev.error_code})" if ev.error_code else ""))
                    server_done.set()
                elif isinstance(ev, Ended):
                    server_done.set()
                else:  # Reconnected / RolledOver from the transport
                    lost = getattr(ev, "lost_ms", None)
                    if lost is not None:
                        display.note(f"reconnected: {getattr(ev, 'replayed_ms', 0):.0f} ms replayed, "
                                     f"{lost:.0f} ms lost")
            if not feed.done() and server_done.is_set():
                feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed
            if feed_error:
                raise feed_error[0]
        finally:
            for t in (watch, tick, feed):
                if t is not None and not t.done():
                    t.cancel()
            await asyncio.gather(*(t for t in (watch, tick, feed) if t is not None),
                                 return_exceptions=True)
            stats = stream.stats
            transcript.audio_ms = float(stats.audio_ms_sent)
            display.progress(stats.audio_ms_sent)
            result.summary = Summary(
                segments=len(transcript.segments), audio_s=stats.audio_ms_sent / 1000.0,
                wall_s=display.elapsed_s, ttfs_s=ttfs, lost_ms=float(stats.lost_ms),
                reconnects=int(stats.reconnects), interrupted=result.interrupted)
    return result


# --- the command ---------------------------------------------------------------------------------


def _open_output(path: str | None) -> tuple[TextIO, bool]:
    if path is None or path == "-":
        return sys.stdout, False
    try:
        return open(path, "w", encoding="utf-8", newline="\n"), True
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}", EXIT_INPUT) from exc


async def transcribe_async(args: argparse.Namespace, *, interrupt: asyncio.Event | None = None,
                           stdin: Any = None, stdout: TextIO | None = None,
                           stderr: TextIO | None = None) -> int:
    """The body of ``sis-stream transcribe`` (tests call it with their own streams and event).

    One INPUT file (or ``-``) gives one transcript on stdout or ``-o FILE``; several inputs or a
    directory give one transcript per input (see :func:`batch.output_paths`), all on one
    client and one embedded server (one model load).
    """
    items = args.input if isinstance(args.input, (list, tuple)) else [args.input]
    inputs = expand_inputs(items, raw=args.audio_format is not None)
    if len(inputs) > 1 or any(i != "-" and os.path.isdir(i) for i in items):
        return await _transcribe_batch(args, inputs, interrupt=interrupt, stderr=stderr)
    return await _transcribe_one(args, inputs[0], interrupt=interrupt, stdin=stdin, stdout=stdout,
                                 stderr=stderr)


def _prepare(args: argparse.Namespace, source: AudioSource) -> tuple[AudioFormat, dict[str, Any]]:
    """The wire format and START config for `source` (checked as a server would)."""
    if args.channels == "split" and source.channel_data is None and source.source_format is not None:
        raise CliError(f"--channels split needs a file: {source.name} is a stream; save it first "
                       "or use --channels mix", EXIT_USAGE)
    fmt = source.format
    if args.channels == "split" and source.channel_data is not None:
        fmt = AudioFormat(source.format.rate_hz, "pcm", 2)
    session_format = args.session_format or session_format_for(fmt, args.property)
    config = start_config(args, session_format)
    check_config(config, args.mode)
    return session_format, config


def _open_source(args: argparse.Namespace, name: str, stdin: Any = None) -> AudioSource:
    return open_audio(name, args.audio_format, stdin=stdin,
                      keep_channels=getattr(args, "channels", "mix") == "split")


async def run_source(client: Any, source: AudioSource, args: argparse.Namespace, *,
                     session_format: AudioFormat, config: Mapping[str, Any], display: LiveDisplay,
                     writer: TranscriptWriter | None, interrupt: asyncio.Event) -> SessionResult:
    """Transcribe one input: one session, or with ``--channels split`` one session per channel
    at the same time (labelled ``AGENT`` / ``USER`` like the transcriber's roles; more than
    two channels ``CH1``, ``CH2``, ...), the segments merged by start time."""
    kwargs: dict[str, Any] = {"mode": args.mode, "config": config, "session_format": session_format,
                              "pacing": args.speed, "frame_ms": args.frame_ms, "interrupt": interrupt}
    channels = source.channel_data if args.channels == "split" else None
    if not channels:
        return await stream_audio(client, source, display=display, writer=writer, **kwargs)
    labels = ("AGENT", "USER") if len(channels) == 2 else tuple(f"CH{i + 1}" for i in range(len(channels)))
    mono = AudioFormat(source.format.rate_hz, "pcm", 2)
    parts = [AudioSource(f"{source.name} [{label}]", mono, len(data), data)
             for label, data in zip(labels, channels)]
    quiet = LiveDisplay(_Null(), tty=False, interim=False, finals=False)
    display.start()
    results = await asyncio.gather(*(
        stream_audio(client, part, display=display if i == 0 else quiet, writer=None, **kwargs)
        for i, part in enumerate(parts)))
    merged = sorted(((seg, label) for r, label in zip(results, labels) for seg in r.transcript.segments),
                    key=lambda x: (x[0].start_ms, x[0].end_ms, x[1]))
    transcript = Transcript(audio_ms=max(r.transcript.audio_ms for r in results))
    for i, (seg, label) in enumerate(merged):
        seg = dataclasses.replace(seg, index=i, speaker=label)
        transcript.segments.append(seg)
        if writer is not None:
            writer.write(seg)
        display.final(seg)
    first = results[0]
    summary = dataclasses.replace(first.summary, segments=len(transcript.segments),
                                  wall_s=display.elapsed_s)
    error = next((r.error for r in results if r.error is not None), None)
    return SessionResult(transcript, summary, error, any(r.interrupted for r in results),
                         first.trace_id, [e for r in results for e in r.events])


def _finish(result: SessionResult | None, writer: TranscriptWriter, source: AudioSource,
            args: argparse.Namespace, session_format: AudioFormat, target: Target) -> None:
    if result is None:
        writer.close()
        return
    result.transcript.meta.update({
        "input": source.name, "input_format": source.description,
        "session_format": session_format.sis_name, "mode": args.mode,
        "property": args.property, "endpoint": target.describe(),
        "trace_id": result.trace_id, "interrupted": result.interrupted,
        "summary": {"segments": result.summary.segments,
                    "audio_s": round(result.summary.audio_s, 3),
                    "wall_s": round(result.summary.wall_s, 3),
                    "ttfs_s": None if result.summary.ttfs_s is None else round(result.summary.ttfs_s, 3),
                    "lost_ms": result.summary.lost_ms},
    })
    if args.channels == "split" and source.channel_data:
        result.transcript.meta["channels"] = "split"
    if result.error is not None:
        result.transcript.meta["error"] = scrub(str(result.error))
    writer.close(result.transcript)


async def _transcribe_one(args: argparse.Namespace, name: str, *, interrupt: asyncio.Event | None,
                          stdin: Any, stdout: TextIO | None, stderr: TextIO | None) -> int:
    err = sys.stderr if stderr is None else stderr
    source = _open_source(args, name, stdin)
    target = resolve_target(args)
    session_format, config = _prepare(args, source)
    if stdout is not None and (args.output is None or args.output == "-"):
        out, close_out = stdout, False
    else:
        out, close_out = _open_output(args.output)
    to_terminal = out is sys.stdout and bool(getattr(sys.stdout, "isatty", lambda: False)())
    display = LiveDisplay(
        None if args.quiet else err, interim=args.interim, finals=not to_terminal,
        total_ms=source.total_ms)
    if args.quiet:
        display = LiveDisplay(_Null(), tty=False, interim=False, finals=False)
    interrupt = asyncio.Event() if interrupt is None else interrupt
    remove = install_interrupt(
        interrupt, lambda: display.note("interrupted: ending the session (Ctrl-C again to abort)"))
    writer = TranscriptWriter(out, args.format)
    result: SessionResult | None = None
    try:
        display.note(f"{source.name}: {source.description}"
                     + (f", {source.total_ms / 1000:.1f} s" if source.total_ms is not None else "")
                     + f" -> {session_format.sis_name} ({args.mode}, {args.property}) on "
                     + target.describe())
        async with open_client(target, tuple(args.engine or ()),
                               debug=getattr(args, "debug", False)) as client:
            result = await run_source(client, source, args, session_format=session_format,
                                      config=config, display=display, writer=writer,
                                      interrupt=interrupt)
    finally:
        remove()
        _finish(result, writer, source, args, session_format, target)
        if close_out:
            out.close()
        display.close()
    assert result is not None
    display.summary(result.summary)
    for w in source.warnings:
        display.note(f"warning: {w}")
    if result.error is not None:
        raise result.error
    if source.truncated is not None:
        raise CliError(source.truncated + " (the transcript of what came was written)", EXIT_INPUT)
    return EXIT_INTERRUPTED if result.interrupted else EXIT_OK


def _known_ms(args: argparse.Namespace, name: str) -> float:
    """Audio length of an input for the batch bar, from its size when that is cheap (WAV and
    raw); 0 when unknown."""
    try:
        size = os.path.getsize(name)
    except OSError:
        return 0.0
    fmt = args.audio_format
    if fmt is not None:
        return fmt.duration_ms(size - size % fmt.bytes_per_frame)
    try:
        with open(name, "rb") as fh:
            head = fh.read(44)
        if head[:4] == b"RIFF" and head[36:40] == b"data":
            (byte_rate,) = struct.unpack_from("<I", head, 28)
            return 1000.0 * (size - 44) / byte_rate if byte_rate else 0.0
    except (OSError, struct.error):
        return 0.0
    return 0.0


async def _transcribe_batch(args: argparse.Namespace, inputs: list[str], *,
                            interrupt: asyncio.Event | None, stderr: TextIO | None) -> int:
    err = sys.stderr if stderr is None else stderr
    target = resolve_target(args)
    outputs = output_paths(inputs, args.format, args.output)
    start_config(args, args.session_format or AudioFormat.from_sis("pcm16k16bit"))
    for name in inputs:
        if not os.path.isfile(name):
            raise InputError(f"cannot read {name}: no such file")
    lengths = [_known_ms(args, n) for n in inputs]
    total_ms = sum(lengths) if all(lengths) else 0.0  # else the bar counts files
    bar = BatchDisplay(_Null() if args.quiet else err, total_ms=total_ms, files=len(inputs))
    if args.quiet:
        bar.tty = False
    interrupt = asyncio.Event() if interrupt is None else interrupt
    remove = install_interrupt(
        interrupt, lambda: bar.note("interrupted: ending the session (Ctrl-C again to abort)"))
    failures: list[tuple[str, BaseException]] = []
    done = 0
    try:
        async with open_client(target, tuple(args.engine or ()),
                               debug=getattr(args, "debug", False)) as client:
            for i, (name, path) in enumerate(zip(inputs, outputs)):
                if interrupt.is_set():
                    break
                bar.begin(i, name)
                try:
                    source = _open_source(args, name)
                    bar.begin(i, name, source.total_ms)
                    session_format, config = _prepare(args, source)
                    out, _ = _open_output(path)
                except Exception as exc:  # noqa: BLE001 - one bad input does not stop the batch
                    failures.append((name, exc))
                    msg = _describe(exc)
                    bar.note(f"sis-stream transcribe: error: {scrub(msg if name in msg else f'{name}: {msg}')}")
                    bar.finish(lengths[i])
                    continue
                writer = TranscriptWriter(out, args.format)
                result: SessionResult | None = None
                try:
                    result = await run_source(client, source, args, session_format=session_format,
                                              config=config, display=bar, writer=writer,
                                              interrupt=interrupt)
                finally:
                    _finish(result, writer, source, args, session_format, target)
                    out.close()
                bar.finish(source.total_ms or 0.0)
                if result.error is not None:
                    failures.append((name, result.error))
                    bar.note(f"sis-stream transcribe: error: {name}: {scrub(_describe(result.error))}")
                else:
                    done += 1
                    if not bar.tty and not args.quiet:
                        bar.note(f"{name} -> {path} ({result.summary.segments} segment(s), "
                                 f"{result.summary.audio_s:.1f} s audio)")
    finally:
        remove()
        bar.close()
    if not args.quiet:
        err.write(f"{done} of {len(inputs)} input(s) transcribed"
                  + (f", {len(failures)} failed" if failures else "")
                  + (", interrupted" if interrupt.is_set() else "") + "\n")
        err.flush()
    if interrupt.is_set():
        return EXIT_INTERRUPTED
    if failures:
        return max(exit_code_for(exc) for _, exc in failures)
    return EXIT_OK


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot read {exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


class _Null:
    def write(self, _s: str) -> int:
        return 0

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _run(args: argparse.Namespace) -> int:
    if args.frame_ms <= 0:
        raise CliError(f"--frame-ms must be > 0, got {args.frame_ms}", EXIT_USAGE)
    return asyncio.run(transcribe_async(args))


run = guarded(NAME, _run)
run.__doc__ = """Run ``sis-stream transcribe``; returns the exit code (0, 2, 3, 4, 5 or 130)."""
