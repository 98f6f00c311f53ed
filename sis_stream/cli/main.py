"""``sis-stream`` command line: ``main(argv=None) -> int``.

Subcommands register themselves in :data:`COMMANDS` with :func:`command`: each gets a builder
``(subparsers) -> ArgumentParser`` and a runner ``(args) -> int``. To add one (``transcribe``,
``convert``, ``vad``, ``bench``, ``demo``)::

    @command("transcribe", help="transcribe a file")
    def _transcribe_parser(p: argparse.ArgumentParser) -> None:
        p.add_argument("path")

    def _transcribe(args: argparse.Namespace) -> int: ...
    COMMANDS["transcribe"].run = _transcribe

or more simply pass ``run=`` to :func:`command`. Exit codes: 0 ok, 2 usage, 3 input error,
4 auth error, 5 server/protocol error (:data:`EXIT_OK` ...); runners raise and :func:`main` maps
the exception classes to them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import (
    AudioFormatError,
    AuthError,
    EngineConfigError,
    ProtocolError,
    SisApiError,
    SisStreamError,
)
from ._common import EXIT_AUTH, EXIT_INPUT, EXIT_OK, EXIT_SERVER, EXIT_USAGE

__all__ = [
    "COMMANDS",
    "EXIT_AUTH",
    "EXIT_INPUT",
    "EXIT_OK",
    "EXIT_SERVER",
    "EXIT_USAGE",
    "build_parser",
    "command",
    "main",
]



@dataclass
class Command:
    """One subcommand: argument builder and runner."""

    name: str
    help: str
    build: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int] | None = None


#: Registered subcommands, in help order.
COMMANDS: dict[str, Command] = {}


def command(name: str, *, help: str, run: Callable[[argparse.Namespace], int] | None = None
            ) -> Callable[[Callable[[argparse.ArgumentParser], None]], Callable[[argparse.ArgumentParser], None]]:
    """Register a subcommand whose arguments the decorated function adds to its parser."""
    def deco(build: Callable[[argparse.ArgumentParser], None]) -> Callable[[argparse.ArgumentParser], None]:
        COMMANDS[name] = Command(name, help, build, run)
        return build
    return deco


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise _UsageError(message)


# -- serve ----------------------------------------------------------------------------------------

def _env_credentials() -> bool:
    """Whether the environment names credentials for ``serve`` (what load_credentials reads)."""
    env = os.environ
    return bool(env.get("SIS_STREAM_CREDENTIALS") or env.get("SIS_STREAM_AK") or env.get("SIS_STREAM_SK"))


def _serve(args: argparse.Namespace) -> int:
    from ..server.serve import run
    from ..server.settings import ServerSettings, parse_engine_options

    if (args.tls_cert is None) != (args.tls_key is None):
        raise _UsageError("--tls-cert and --tls-key go together")
    if args.credentials is not None and not args.credentials.is_file():
        raise FileNotFoundError(f"credentials file not found: {args.credentials}")
    if args.credentials is not None and args.no_auth:
        raise _UsageError("--credentials and --no-auth exclude each other")
    if args.credentials is None and not args.no_auth and not _env_credentials():
        raise _UsageError("no credentials: give --credentials creds.json (or set SIS_STREAM_CREDENTIALS, "
                          "or SIS_STREAM_AK/SIS_STREAM_SK/SIS_STREAM_PROJECT_ID), or --no-auth for "
                          "development; without them every request would be rejected")
    try:
        options = parse_engine_options(args.engine_option or [])
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    kwargs = {}
    if args.max_sessions is not None:
        kwargs["max_sessions"] = args.max_sessions
    if args.fetch_allow is not None:
        from ..server.fetch import parse_fetch_allow

        try:
            kwargs["fetch_allow"] = parse_fetch_allow(args.fetch_allow)
        except ValueError as exc:
            raise _UsageError(str(exc)) from None
    if args.fetch_dir is not None:
        kwargs["fetch_dir"] = args.fetch_dir
    if args.redis is not None:
        kwargs.update(redis_url=args.redis, job_lease_s=args.job_lease, run_jobs=not args.no_job_workers,
                      job_checkpoint_s=args.job_checkpoint)
    elif args.no_job_workers:
        raise _UsageError("--no-job-workers needs --redis (jobs then run in 'sis-stream worker' processes)")
    if args.drain_grace is not None:
        kwargs["drain_grace_s"] = args.drain_grace
    if args.ttf_bound_ms is not None:
        kwargs["ttf_bound_ms"] = args.ttf_bound_ms
    for name in ("batch_window_ms", "max_batch", "decode_workers"):  # batched decoding
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    settings = ServerSettings(
        host=args.host, port=args.port, credentials_file=args.credentials, data_dir=args.data_dir,
        tls_cert=args.tls_cert, tls_key=args.tls_key, no_auth=args.no_auth,
        engine_overrides=tuple(args.engine or ()), engine_options=options,
        engine_workers=args.workers, interim_interval_s=args.interim_interval,
        flash_store=args.flash_store, transcriber_workers=args.transcriber_workers, **kwargs)
    return run(settings)


@command("serve", help="run the SIS-compatible local server", run=_serve)
def _serve_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="TCP port; 0 picks a free one (default 8080)")
    p.add_argument("--credentials", type=Path, metavar="FILE",
                   help='creds.json: {"access_keys": [{"ak","sk","project_id"}], "users": [{"name","password",'
                        '"domain","project_id","region"}]} (default: $SIS_STREAM_CREDENTIALS or '
                        "$SIS_STREAM_AK/$SIS_STREAM_SK/$SIS_STREAM_PROJECT_ID)")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="where vocabularies and jobs are kept")
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate (https/wss)")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key")
    p.add_argument("--no-auth", action="store_true", help="accept requests without credentials (development)")
    p.add_argument("--engine", action="append", metavar="PROPERTY=ENGINE",
                   help="route a property to an engine (moonshine-whisper, moonshine, whisper, "
                        "whisper-base, pocketsphinx, none); repeatable")
    p.add_argument("--engine-option", action="append", metavar="ENGINE.OPTION=VALUE",
                   help="engine constructor option, e.g. whisper.model_dir=/models/base; repeatable")
    p.add_argument("--max-sessions", type=int, metavar="N", help="concurrency limit (SIS.0312 beyond)")
    p.add_argument("--workers", type=int, metavar="N", help="engine worker threads (default: cores)")
    p.add_argument("--batch-window-ms", type=float, metavar="MS",
                   help="batched decoding: wait this long after a due decode for others to join it (default 20)")
    p.add_argument("--max-batch", type=int, metavar="N", help="largest decode batch (default 16)")
    p.add_argument("--decode-workers", type=int, metavar="N", help="decode batcher threads (default: cores)")
    p.add_argument("--ttf-bound-ms", type=float, metavar="MS",
                   help="admission control: refuse a new session (SIS.0312) when the measured decode budget "
                        "says it would push end-of-speech-to-final time over MS (default 1200)")
    p.add_argument("--fetch-allow", metavar="HOST[:PORT],...",
                   help="hosts data_url may be fetched from (default: none, loopback included)")
    p.add_argument("--fetch-dir", type=Path, metavar="DIR",
                   help="local folder whose files data_url may name as file:// URLs (default: none)")
    p.add_argument("--flash-store", type=Path, metavar="DIR", help="folder standing in for OBS (flash ASR)")
    p.add_argument("--transcriber-workers", type=int, metavar="N", help="concurrent transcriber jobs")
    p.add_argument("--interim-interval", type=float, default=1.0, metavar="S",
                   help="minimum seconds between interim results of one stream (default 1.0)")
    p.add_argument("--redis", metavar="URL",
                   help="redis://HOST:PORT/DB: transcriber jobs on Redis Streams, shared with other serve/worker "
                        "processes (default: this process's own on-disk store)")
    p.add_argument("--job-lease", type=float, default=30.0, metavar="S",
                   help="with --redis: seconds after which a silent job owner's job is taken over (default 30)")
    p.add_argument("--job-checkpoint", type=float, default=60.0, metavar="S",
                   help="with --redis: save a job's progress every S seconds of audio; a job taken over "
                        "after a crash resumes there (default 60)")
    p.add_argument("--drain-grace", type=float, metavar="S",
                   help="on SIGTERM: /healthz answers 503 and open sessions get up to S seconds to finish "
                        "before the shutdown ends them (default 0)")
    p.add_argument("--no-job-workers", action="store_true",
                   help="with --redis: accept and answer jobs but run none here (use 'sis-stream worker')")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")


# -- main -----------------------------------------------------------------------------------------

def _register_command_modules() -> None:
    """Register the subcommands of :mod:`sis_stream.cli.commands` (transcribe, demo, convert, vad,
    bench) when that package is present; ``serve`` stays defined here."""
    try:
        from .commands import COMMAND_SPECS
    except ImportError as exc:
        logging.getLogger(__name__).debug("sis_stream.cli.commands not available: %s", exc)
        return
    for name, help_, build, run in COMMAND_SPECS:
        if name not in COMMANDS:
            COMMANDS[name] = Command(name, help_, build, run)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    _register_command_modules()
    parser = _Parser(prog="sis-stream", description="Real-time speech recognition over the Huawei Cloud SIS protocols.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.build(p)
    return parser


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, (AuthError,)):
        return EXIT_AUTH
    if isinstance(exc, SisApiError):
        return EXIT_AUTH if getattr(exc, "error_code", "").startswith("APIG") else EXIT_SERVER
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, AudioFormatError, EngineConfigError, ValueError)):
        return EXIT_INPUT
    if isinstance(exc, (ProtocolError, SisStreamError, OSError)):
        return EXIT_SERVER
    return EXIT_SERVER


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 usage, 3 input, 4 auth, 5 server/protocol)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError:
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    level = {0: logging.WARNING, 1: logging.INFO}.get(getattr(args, "verbose", 0), logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cmd = COMMANDS[args.command]
    if cmd.run is None:
        print(f"sis-stream {cmd.name}: not implemented yet", file=sys.stderr)
        return EXIT_USAGE
    try:
        return cmd.run(args)
    except _UsageError as exc:
        print(f"sis-stream {cmd.name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message and an exit code
        print(f"sis-stream {cmd.name}: error: {exc}", file=sys.stderr)
        return _exit_code(exc)
