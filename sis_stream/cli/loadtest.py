"""``sis-stream loadtest``: many real-time calls at once against a SIS endpoint (or the embedded
local server); latency, accuracy, errors and the harness's own health (docs/loadtest.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TextIO

from ..audio.formats import AudioFormat
from ..client.pacing import Pacer
from ..errors import RequestRejected
from ..loadtest import (
    CallSpec,
    CapacityOptions,
    CapacitySearch,
    LoadTarget,
    LoadTest,
    LoadTestOptions,
    Progress,
    TargetRefused,
    load_corpus,
    parse_ramp,
    summarize,
    synthetic_corpus,
    write_json,
    write_report,
)
from ..loadtest.corpus import property_rate_hz, scores_by_characters
from ..loadtest.plan import MAX_STREAMS
from ..loadtest.report import matplotlib_available
from ..protocol import validate_config
from ._common import (
    EXIT_AUTH,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_USAGE,
    CliError,
    add_debug_flag,
    guarded,
    install_interrupt,
    open_audio,
    quiet_loggers,
    sis_format_arg,
)
from .target import add_target_arguments, resolve_endpoint, resolve_target

__all__ = ["HELP", "NAME", "build", "loadtest_async", "resolve_load_target", "run"]

NAME: Final = "loadtest"
HELP: Final = "load-test a SIS endpoint (or the embedded server) with many real-time calls"
#: Longest run accepted (a bound: the timeline keeps one row per second).
MAX_DURATION_S: Final = 86_400.0


def embedded_server(**kwargs: Any) -> Any:
    """The embedded server factory (:func:`sis_stream.server.embedded.embedded_server`)."""
    from ..server.embedded import embedded_server as factory

    return factory(**kwargs)


def _engine_item(value: str) -> str:
    prop, eq, engine = value.partition("=")
    if not eq or not prop.strip() or not engine.strip():
        raise argparse.ArgumentTypeError(f"expected PROPERTY=ENGINE, got {value!r}")
    return f"{prop.strip()}={engine.strip()}"


def _pace(value: str) -> str:
    v = value.strip().lower()
    if v == "max":
        raise argparse.ArgumentTypeError("--pace max is not implemented: a load test paces its calls "
                                         "(use realtime, xN such as x4, or burst-then-realtime)")
    try:
        Pacer(0.1, policy=v)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"--pace must be realtime, xN (e.g. x4) or burst-then-realtime, got {value!r}") from None
    return v


def build(p: argparse.ArgumentParser) -> None:
    """Add the ``loadtest`` arguments to `p`."""
    p.add_argument("corpus", nargs="?", metavar="CORPUS",
                   help="folder of audio files (WAV, or raw with --audio-format) with NAME.txt "
                        "references or one refs.tsv; default: the built-in synthetic set (no WER)")
    p.add_argument("--audio-format", type=sis_format_arg, metavar="FMT",
                   help="the corpus files are raw audio in this format")
    p.add_argument("--synthetic-files", type=int, default=4, metavar="N",
                   help="clips in the built-in synthetic set (default 4)")
    p.add_argument("--synthetic-seconds", type=float, default=30.0, metavar="S",
                   help="length of each synthetic clip (default 30, a short phone call)")
    w = p.add_argument_group("load")
    w.add_argument("--streams", type=int, default=10, metavar="N", help="concurrent calls (default 10)")
    w.add_argument("--ramp", metavar="RATE|PLAN",
                   help="streams added per second (default 50), or a step plan such as 10,20,40,80")
    w.add_argument("--step-s", type=float, metavar="S",
                   help="seconds per step of a step plan or a capacity level (default: duration / "
                        "steps; 20 for --find-capacity)")
    w.add_argument("--duration", type=float, default=60.0, metavar="S",
                   help="calls start again from the corpus until S seconds have passed (default 60)")
    w.add_argument("--drain-s", type=float, metavar="S",
                   help="how long calls still running at the end may finish before they are cut "
                        "(default: the longest file plus 10 s)")
    w.add_argument("--pace", type=_pace, default="realtime", metavar="realtime|xN|burst-then-realtime",
                   help="sending pace (default realtime, as a phone line)")
    w.add_argument("--frame-ms", type=int, default=100, metavar="MS", help="audio per frame (100)")
    w.add_argument("--session-format", type=sis_format_arg, metavar="FMT",
                   help="audio_format on the wire, e.g. ulaw8k8bit as a phone line sends (default: "
                        "the files' own if the property's rate matches, else PCM at that rate)")
    g = p.add_argument_group("recognition")
    g.add_argument("--mode", choices=("continue", "sentence", "short"), default="continue")
    g.add_argument("--property", default="english_16k_common", help="SIS property (english_16k_common)")
    g.add_argument("--interim", action="store_true", help="interim_results=yes")
    g.add_argument("--vad-head", type=int, metavar="MS", help="vad_head of START")
    g.add_argument("--vad-tail", type=int, metavar="MS",
                   help="vad_tail of START, also used for the corpus' own ends of speech (500)")
    g.add_argument("--max-seconds", type=int, metavar="S", help="max_seconds of START (30)")
    c = p.add_argument_group("capacity search")
    c.add_argument("--find-capacity", action="store_true",
                   help="raise the load level by level until the p95 time to final passes --slo-ms "
                        "or errors appear; report the knee (--streams is the highest level tried)")
    c.add_argument("--slo-ms", type=float, default=2000.0, metavar="MS",
                   help="p95 bound on the time from end of speech to final (default 2000)")
    c.add_argument("--start-streams", type=int, default=1, metavar="N", help="first level (1)")
    c.add_argument("--growth", type=float, default=2.0, metavar="F", help="level factor (2)")
    c.add_argument("--refine", type=int, default=2, metavar="N",
                   help="bisection steps between the last good and first bad level (2)")
    c.add_argument("--warmup-s", type=float, default=10.0, metavar="S",
                   help="one stream for S seconds before the first level, not judged (10)")
    c.add_argument("--min-finals", type=int, default=5, metavar="N",
                   help="final latencies a level needs before it is judged (5; a level is held up "
                        "to three steps to get them)")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="write the full results as JSON")
    o.add_argument("--report", metavar="DIR", help="write an HTML report with plots (needs matplotlib)")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    s = p.add_argument_group("embedded local server (when no endpoint is given)")
    s.add_argument("--engine", action="append", type=_engine_item, metavar="PROPERTY=ENGINE",
                   help="route a property to an engine (moonshine-whisper, moonshine, whisper, "
                        "whisper-base, pocketsphinx, none); repeatable")
    s.add_argument("--max-sessions", type=int, metavar="N",
                   help="the embedded server's concurrency limit (default: streams + 16)")
    add_target_arguments(p, note="a non-loopback endpoint is refused without credentials")
    add_debug_flag(p)


# --- target -------------------------------------------------------------------------------------


def resolve_load_target(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> LoadTarget:
    """The target of ``loadtest`` (same options and variables as ``transcribe``).

    Loopback endpoints may go without credentials (project id ``local`` by default); any other
    endpoint needs a project id and AK/SK or a token, else the run is refused (exit 4).
    """
    engines = tuple(args.engine or ())
    if resolve_endpoint(args, environ) is None:
        settings: dict[str, Any] = {}
        if getattr(args, "max_sessions", None) is not None:
            settings["max_sessions"] = args.max_sessions
        return LoadTarget(engine_overrides=engines, server_settings=settings, server_factory=embedded_server)
    if engines:  # a usage error comes before any about credentials
        raise CliError("--engine routes the embedded server; it cannot be used with a remote endpoint",
                       EXIT_USAGE)
    target = resolve_target(args, environ, credentials_optional_on_loopback=True)
    assert target.endpoint is not None and target.project_id is not None
    return LoadTarget(target.endpoint, target.project_id, target.auth, verify_tls=not target.insecure)


# --- the command --------------------------------------------------------------------------------


def _check_args(args: argparse.Namespace) -> None:
    if not 1 <= args.streams <= MAX_STREAMS:
        raise CliError(f"--streams must be in [1, {MAX_STREAMS}], got {args.streams}", EXIT_USAGE)
    if not 0 < args.duration <= MAX_DURATION_S:
        raise CliError(f"--duration must be in (0, {MAX_DURATION_S:g}] s, got {args.duration}", EXIT_USAGE)
    if args.drain_s is not None and not 0 <= args.drain_s <= 3600:
        raise CliError(f"--drain-s must be in [0, 3600] s, got {args.drain_s}", EXIT_USAGE)
    if args.frame_ms <= 0:
        raise CliError(f"--frame-ms must be > 0, got {args.frame_ms}", EXIT_USAGE)
    if not 1 <= args.synthetic_files <= 100:
        raise CliError(f"--synthetic-files must be in [1, 100], got {args.synthetic_files}", EXIT_USAGE)
    if not 1 <= args.synthetic_seconds <= 600:
        raise CliError(f"--synthetic-seconds must be in [1, 600], got {args.synthetic_seconds}", EXIT_USAGE)
    if args.report and not matplotlib_available():
        raise CliError("--report needs matplotlib, which is not installed (pip install 'sis-stream[plot]')",
                       EXIT_USAGE)


def _config(args: argparse.Namespace, wire: AudioFormat) -> dict[str, Any]:
    cfg: dict[str, Any] = {"audio_format": wire.sis_name, "property": args.property,
                           "interim_results": "yes" if args.interim else "no"}
    for opt in ("vad_head", "vad_tail", "max_seconds"):
        v = getattr(args, opt)
        if v is not None:
            cfg[opt] = v
    from ..client.rasr import MODES

    try:
        validate_config(dict(cfg), MODES[args.mode])
    except RequestRejected as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    return cfg


def _read(path: Path, audio_format: AudioFormat | None) -> tuple[bytes, AudioFormat]:
    src = open_audio(str(path), audio_format)
    assert src.data is not None
    return src.data, src.format


async def loadtest_async(args: argparse.Namespace, *, stop: asyncio.Event | None = None,
                         stderr: TextIO | None = None) -> int:
    """The body of ``sis-stream loadtest`` (tests call it with their own `stop` event)."""
    err = sys.stderr if stderr is None else stderr
    _check_args(args)
    target = resolve_load_target(args)
    vad_tail = args.vad_tail if args.vad_tail is not None else 500
    max_seconds = args.max_seconds if args.max_seconds is not None else 30
    if args.corpus:
        corpus = load_corpus(args.corpus, prop=args.property, session_format=args.session_format,
                             audio_format=args.audio_format, reader=_read, vad_tail=vad_tail,
                             max_seconds=max_seconds)
    else:
        wire = args.session_format or AudioFormat.from_sis(f"pcm{property_rate_hz(args.property) // 1000}k16bit")
        corpus = synthetic_corpus(wire, files=args.synthetic_files, seconds=args.synthetic_seconds,
                                  vad_tail=vad_tail, max_seconds=max_seconds)
    if corpus.audio_format.rate_hz != property_rate_hz(args.property):
        raise CliError(f"the wire format {corpus.audio_format.sis_name} does not match the rate of "
                       f"{args.property} (SIS.0301); give --session-format", EXIT_USAGE)
    spec = CallSpec(args.mode, _config(args, corpus.audio_format), frame_ms=args.frame_ms, pace=args.pace,
                    by_chars=scores_by_characters(args.property))
    search = None
    if args.find_capacity:
        step_s = args.step_s if args.step_s is not None else 20.0
        levels: tuple[int, ...] = ()
        if args.ramp and "," in args.ramp:
            levels = parse_ramp(args.ramp, args.streams, args.duration, step_s).steps
        try:
            search = CapacitySearch(CapacityOptions(args.slo_ms, max_streams=max(args.streams, *levels, 1),
                                                    start=min(args.start_streams, args.streams),
                                                    growth=args.growth, step_s=step_s, refine=args.refine,
                                                    min_samples=args.min_finals, warmup_s=args.warmup_s,
                                                    levels=levels))
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from exc
        plan = parse_ramp(None, search.options.max_streams, args.duration)
    else:
        try:
            plan = parse_ramp(args.ramp, args.streams, args.duration, args.step_s)
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from exc
    progress = None if args.quiet else Progress(err)
    try:
        test = LoadTest(target, corpus, LoadTestOptions(spec, args.duration, plan, drain_s=args.drain_s,
                                                                freeze_gc=True),
                        on_tick=progress)
    except TargetRefused as exc:
        raise CliError(str(exc), EXIT_AUTH) from exc
    note = progress.note if progress is not None else (lambda _m: None)
    note(f"loadtest: {len(corpus.items)} file(s) ({corpus.scored} with references, "
         f"{corpus.audio_s:.1f} s) as {corpus.audio_format.sis_name}, {args.mode}, {args.property}, "
         f"pace {args.pace} on {target.describe()}"
         + (f"; capacity search, SLO p95 {args.slo_ms:g} ms" if search else
            f"; {plan.streams} streams for {args.duration:g} s"))
    stop = asyncio.Event() if stop is None else stop
    remove = install_interrupt(stop, lambda: note("interrupted: ending every call (Ctrl-C again to abort)"))
    try:
        with quiet_loggers(enabled=not getattr(args, "debug", False) and target.embedded):
            await test.run(stop, controller=search)
    finally:
        remove()
        if progress is not None:
            progress.close()
    result = summarize(test, capacity=search.result() if search is not None else None)
    if args.json:
        write_json(result, args.json)
    if args.report:
        index = write_report(test, result, args.report)
        note(f"report: {index}")
    lat, pacing = result["final_latency_ms"], result["harness_pacing_ms"]
    note(f"calls {result['calls']['started']} (ok {result['calls']['ok']}, errors {result['calls']['error']}, "
         f"cut {result['calls']['cut']}); final p50/p95 {lat['p50']}/{lat['p95']} ms; errors "
         f"{result['errors'] or 'none'}; wer {result['wer']}; harness pacing p99 {pacing['p99']} ms, "
         f"cpu {result['harness_cpu_pct']}%" + (" (includes the embedded server)" if target.embedded else "")
         + (f"; knee {result['capacity']['knee_streams']} streams" if search else ""))
    if result["harness_limited"]:
        note("warning: the harness may have been the limit (pacing p99 > 10 ms or CPU > 90 %)")
    if test.state.interrupted:
        return EXIT_INTERRUPTED
    if result["calls"]["started"] and result["calls"]["ok"] == 0 and result["calls"]["error"]:
        raise CliError(f"every call failed: {result['errors']}", EXIT_SERVER)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(loadtest_async(args))


run = guarded(NAME, _run)
run.__doc__ = """Run ``sis-stream loadtest``; returns the exit code (0, 2, 3, 4, 5 or 130)."""
