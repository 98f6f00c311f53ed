"""Test helpers shared across the suite: an in-memory client/server session pair, a fake clock, and
the ``sis-stream`` command line driven in-process."""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from sis_stream.protocol import ClientSession, Mode, ServerSession

__all__ = ["ConnectionPair", "FakeClock", "RecordingProxy", "cli_parser", "pcm_silence", "run_cli"]


class FakeClock:
    """A settable monotonic clock: ``clock()`` returns ``clock.now``; ``advance(s)`` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class RecordingProxy:
    """Stands in for a kernel module: forwards every attribute of `real`, and appends the name
    of each function called through it to `calls` (to see which backend a wrapper reached)."""

    def __init__(self, real: Any, calls: list[str]) -> None:
        self._real = real
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr

        def record(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(name)
            return attr(*args, **kwargs)

        return record


def cli_parser() -> argparse.ArgumentParser:
    """A ``sis-stream`` parser built with ``add_subcommands`` (the registration the CLI uses), so
    tests of a subcommand do not depend on the top-level CLI."""
    from sis_stream.cli.commands import add_subcommands

    p = argparse.ArgumentParser(prog="sis-stream")
    p.add_argument("--debug", action="store_true")
    add_subcommands(p.add_subparsers(dest="command", required=True))
    return p


def run_cli(argv: list[str]) -> int:
    """In-test stand-in for ``sis_stream.cli.main``: parse `argv` and run the subcommand."""
    args = cli_parser().parse_args(argv)
    return args.func(args)


def pcm_silence(n_bytes: int) -> bytes:
    """``n_bytes`` of zero-valued audio (any encoding's byte pattern does for protocol tests)."""
    return bytes(n_bytes)


class ConnectionPair:
    """A :class:`ClientSession` and a :class:`ServerSession` joined by a fake link (h11 style).

    Every frame one side produces is fed to the other at once. ``wire`` records the traffic as
    ``("c2s" | "s2c", frame)`` tuples. Trace ids are deterministic (``trace-1``, ``trace-2``...;
    the connection's own id is ``trace-0``).

    Parameters
    ----------
    mode : Mode or str
    early_audio : bool
        Passed to the client (behave like the official SDK).
    **server_kwargs
        Passed to :class:`ServerSession` (``max_audio_ms``, ``idle_timeout_s``...). A
        :class:`FakeClock` is used unless ``clock`` is given.
    """

    def __init__(self, mode: Mode | str = Mode.CONTINUE_STREAM, *, early_audio: bool = False,
                 **server_kwargs: Any) -> None:
        counter = itertools.count()
        self.clock = server_kwargs.pop("clock", FakeClock())
        self.client = ClientSession(mode, early_audio=early_audio)
        self.server = ServerSession(mode, trace_id_factory=lambda: f"trace-{next(counter)}",
                                    clock=self.clock, **server_kwargs)
        self.wire: list[tuple[str, str | bytes]] = []

    def _to_client(self, frames: list[str]) -> list[object]:
        for f in frames:
            self.wire.append(("s2c", f))
            self.client.receive(f)
        return list(self.client.events())

    def client_send(self, event: object) -> list[object]:
        """Client sends ``event``; the server receives it (auto replies go back to the client).

        Returns the server events produced. Client events from auto replies stay queued on the
        client (read them with :meth:`client_events`).
        """
        for frame in self.client.send(event):  # type: ignore[arg-type]
            self.wire.append(("c2s", frame))
            for reply in self.server.receive(frame):
                self.wire.append(("s2c", reply))
                self.client.receive(reply)
        return list(self.server.events())

    def raw_to_server(self, frame: str | bytes) -> list[object]:
        """Feed a raw frame to the server (bypassing the client session, e.g. the exact SDK
        strings); replies are recorded in ``wire`` but not given to the client. Returns the
        server events."""
        self.wire.append(("c2s", frame))
        for reply in self.server.receive(frame):
            self.wire.append(("s2c", reply))
        return list(self.server.events())

    def server_send(self, response: object) -> list[object]:
        """The server app sends ``response``; the client receives it. Returns the client events
        (including any queued from earlier auto replies)."""
        return self._to_client(self.server.send(response))  # type: ignore[arg-type]

    def client_events(self) -> list[object]:
        """Drain the client's pending events."""
        return list(self.client.events())

    def server_events(self) -> list[object]:
        """Drain the server's pending events."""
        return list(self.server.events())

    def s2c(self) -> list[str]:
        """Every text frame the server sent so far."""
        return [f for d, f in self.wire if d == "s2c"]  # type: ignore[misc]


def espeak_mandarin(text: str, rate_wpm: int = 150):
    """`text` spoken by espeak-ng's Mandarin voice as int16 16 kHz PCM (skips without espeak-ng)."""
    import numpy as np
    import pytest

    from sis_stream.audio.resample import resample
    from sis_stream.engines import espeak

    if not espeak.available():
        pytest.skip("espeak-ng (the tts extra) is not installed")
    syn = espeak.synthesize(text, voice="cmn", rate_wpm=rate_wpm)
    x = np.asarray(resample(syn.samples, 22050, 16000))
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def to_16k(pcm, rate_hz: int):
    """int16 `pcm` at `rate_hz` resampled to 16 kHz with the library's StreamResampler (as is at 16 kHz)."""
    import numpy as np

    from sis_stream.audio.resample import StreamResampler

    if rate_hz == 16000:
        return pcm
    rs = StreamResampler(rate_hz, 16000, dtype=np.int16)
    return np.concatenate([rs.process(pcm), rs.flush()])
