"""``sis-stream bridge``: Asterisk AudioSocket, FreeSWITCH mod_audio_fork and Twilio media streams
into SIS real-time sessions (the embedded local server by default, or any SIS endpoint)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any, Final

from ..bridges import Bridge, JsonLinesSink, LegOptions, SessionSettings, WebhookSink, parse_address
from ..bridges.session import OVERRIDE_KEYS
from ._common import EXIT_OK, EXIT_USAGE, CliError, add_debug_flag, guarded
from .target import add_target_arguments, resolve_target
from .transcribe import open_client

__all__ = ["HELP", "NAME", "bridge_async", "build", "run"]

NAME: Final = "bridge"
HELP: Final = "bridge telephony media (Asterisk AudioSocket, FreeSWITCH mod_audio_fork, Twilio) into SIS sessions"
_KINDS: Final = ("audiosocket", "audio_fork", "twilio")


def _address(value: str) -> tuple[str, int]:
    try:
        return parse_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _set_item(value: str) -> tuple[str, str, str]:
    kind, dot, rest = value.partition(".")
    key, eq, v = rest.partition("=")
    if not dot or not eq or kind not in _KINDS or key not in OVERRIDE_KEYS:
        raise argparse.ArgumentTypeError(
            f"expected LISTENER.KEY=VALUE with LISTENER in {', '.join(_KINDS)} and KEY in {', '.join(OVERRIDE_KEYS)}, "
            f"got {value!r}")
    return kind, key, v


def build(p: argparse.ArgumentParser) -> None:
    """Add the ``bridge`` arguments to `p`."""
    g = p.add_argument_group("listeners (at least one; [HOST:]PORT, host 127.0.0.1 by default, port 0 = any free)")
    g.add_argument("--audiosocket", type=_address, metavar="[HOST:]PORT", help="Asterisk AudioSocket (TCP)")
    g.add_argument("--audio-fork", type=_address, metavar="[HOST:]PORT", help="FreeSWITCH mod_audio_fork (websocket)")
    g.add_argument("--twilio", type=_address, metavar="[HOST:]PORT", help="Twilio media streams (websocket)")
    o = p.add_argument_group("results")
    o.add_argument("--events", metavar="FILE", help="JSON lines of events, appended to FILE ('-' = stdout)")
    o.add_argument("--webhook", metavar="URL", help="POST every event (JSON) to URL, retried with backoff")
    o.add_argument("--metrics", type=_address, metavar="[HOST:]PORT", help="serve Prometheus /metrics there")
    s = p.add_argument_group("SIS session of every call (metadata / customParameters override per call)")
    s.add_argument("--mode", choices=("continue", "sentence", "short"), default="continue")
    s.add_argument("--property", default="english_16k_common",
                   help="SIS property (english_16k_common; chinese_8k_common keeps 8 kHz audio as is)")
    s.add_argument("--interim", action="store_true", help="interim results (partial events)")
    s.add_argument("--punctuation", action="store_true", help="add_punc=yes")
    s.add_argument("--word-info", action="store_true", help="need_word_info=yes")
    s.add_argument("--no-digit-norm", action="store_true", help="digit_norm=no")
    s.add_argument("--vad-head", type=int, metavar="MS")
    s.add_argument("--vad-tail", type=int, metavar="MS")
    s.add_argument("--max-seconds", type=int, metavar="S")
    s.add_argument("--vocabulary-id", metavar="ID")
    s.add_argument("--set", dest="overrides", action="append", type=_set_item, default=[],
                   metavar="LISTENER.KEY=VALUE", help="per-listener setting, e.g. twilio.interim_results=yes")
    t = p.add_argument_group("gateway")
    t.add_argument("--max-buffer-ms", type=int, default=5000, metavar="MS",
                   help="per-channel queue to SIS (drop_oldest beyond it; default 5000)")
    t.add_argument("--final-timeout", type=float, default=10.0, metavar="S",
                   help="after a hangup, wait this long for the last finals (10)")
    t.add_argument("--drain-timeout", type=float, default=30.0, metavar="S",
                   help="on SIGTERM/SIGINT, let calls end for this long before hanging up (30)")
    r = add_target_arguments(p, note="default: the embedded local server")
    r.add_argument("--engine", action="append", metavar="PROPERTY=ENGINE",
                   help="embedded server: engine for a property (repeatable)")
    add_debug_flag(p)


def _settings(args: argparse.Namespace) -> dict[str, SessionSettings]:
    base = SessionSettings(property=args.property, mode=args.mode, interim_results=args.interim,
                           add_punc=args.punctuation, digit_norm=not args.no_digit_norm,
                           need_word_info=args.word_info, vad_head=args.vad_head, vad_tail=args.vad_tail,
                           max_seconds=args.max_seconds, vocabulary_id=args.vocabulary_id)
    per: dict[str, dict[str, str]] = {}
    for kind, key, value in args.overrides:
        per.setdefault(kind, {})[key] = value
    out = {}
    for kind in _KINDS:
        try:
            out[kind] = base.with_overrides(per.get(kind))
        except ValueError as exc:
            raise CliError(f"--set {kind}: {exc}", EXIT_USAGE) from None
    return out


async def bridge_async(args: argparse.Namespace, *, stop: asyncio.Event | None = None) -> int:
    """Run the bridge until SIGTERM/SIGINT (or `stop`), then drain."""
    if not (args.audiosocket or args.audio_fork or args.twilio):
        raise CliError("give at least one listener: --audiosocket, --audio-fork or --twilio", EXIT_USAGE)
    try:
        options = LegOptions(max_buffer_ms=args.max_buffer_ms, final_timeout_s=args.final_timeout)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    settings = _settings(args)
    target = resolve_target(args)
    sinks: list[Any] = []
    if args.events:
        sinks.append(JsonLinesSink(args.events))
    if args.webhook:
        try:
            sinks.append(WebhookSink(args.webhook))
        except ValueError as exc:
            raise CliError(f"--webhook: {exc}", EXIT_USAGE) from None
    out = sys.stderr if args.events == "-" else sys.stdout
    stop = asyncio.Event() if stop is None else stop
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with open_client(target, tuple(args.engine or ()), debug=getattr(args, "debug", False)) as client:
            bridge = Bridge(client, audiosocket=args.audiosocket, audio_fork=args.audio_fork, twilio=args.twilio,
                            settings=settings, sinks=sinks, options=options, metrics=args.metrics)
            addresses = await bridge.start()
            try:
                for kind, (host, port) in addresses.items():
                    print(f"{kind} listening on {host}:{port}", file=out, flush=True)
                print(f"sending to {target.describe()}", file=sys.stderr, flush=True)
                await stop.wait()
                print(f"draining {bridge.calls_active} call(s) (up to {args.drain_timeout:g} s)", file=sys.stderr,
                      flush=True)
            finally:
                await bridge.drain(args.drain_timeout)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(bridge_async(args))


run = guarded(NAME, _run)
run.__doc__ = """Run ``sis-stream bridge``; returns the exit code (0, 2, 4 or 5)."""
