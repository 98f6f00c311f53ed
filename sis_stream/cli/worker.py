"""``sis-stream worker --redis URL``: run transcriber jobs from Redis, with no listener
(docs/deploy.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

__all__ = ["HELP", "NAME", "build", "run"]

NAME: Final = "worker"
HELP: Final = "run transcriber jobs from Redis (no listener): scale engine capacity apart from 'serve'"


def build(p: argparse.ArgumentParser) -> None:
    """Add the ``worker`` arguments."""
    p.add_argument("--redis", required=True, metavar="URL", help="redis://HOST:PORT/DB shared with the serve processes")
    p.add_argument("--job-lease", type=float, default=30.0, metavar="S",
                   help="seconds after which a silent job owner's job is taken over (default 30)")
    p.add_argument("--job-checkpoint", type=float, default=60.0, metavar="S",
                   help="save a job's progress every S seconds of audio; a job taken over resumes there (default 60)")
    p.add_argument("--transcriber-workers", type=int, default=2, metavar="N", help="jobs run at once (default 2)")
    p.add_argument("--workers", type=int, metavar="N", help="engine worker threads (default: cores)")
    p.add_argument("--engine", action="append", metavar="PROPERTY=ENGINE",
                   help="route a property to an engine (as for serve); repeatable")
    p.add_argument("--engine-option", action="append", metavar="ENGINE.OPTION=VALUE",
                   help="engine constructor option (as for serve); repeatable")
    p.add_argument("--fetch-allow", metavar="HOST[:PORT],...",
                   help="hosts data_url and callbacks may use (default: loopback only)")
    p.add_argument("--fetch-dir", type=Path, metavar="DIR",
                   help="local folder whose files data_url may name as file:// URLs (default: none)")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="local scratch directory (default: temporary)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")


def run(args: argparse.Namespace) -> int:
    """Run the worker until SIGINT/SIGTERM; returns the exit code."""
    from ..server.settings import ServerSettings, parse_engine_options
    from ..server.worker import run_worker

    kwargs: dict[str, object] = {}
    if args.fetch_allow is not None:
        from ..server.fetch import parse_fetch_allow

        kwargs["fetch_allow"] = parse_fetch_allow(args.fetch_allow)
    settings = ServerSettings(
        no_auth=True, port=0, redis_url=args.redis, job_lease_s=args.job_lease, job_checkpoint_s=args.job_checkpoint,
        transcriber_workers=args.transcriber_workers, engine_workers=args.workers,
        engine_overrides=tuple(args.engine or ()), engine_options=parse_engine_options(args.engine_option or []),
        fetch_dir=args.fetch_dir, data_dir=args.data_dir, **kwargs)  # type: ignore[arg-type]
    return run_worker(settings)
