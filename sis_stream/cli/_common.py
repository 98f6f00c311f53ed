"""Shared CLI plumbing: exit codes, the one-line error policy, audio input (files, raw, stdin)."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import struct
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Final

import numpy as np

from ..audio.formats import SIS_FORMATS, AudioFormat, read_wav
from ..audio.codec import decode
from ..audio.resample import INPUT_RATES
from ..errors import (
    AudioFormatError,
    AuthError,
    EngineError,
    ProtocolError,
    RequestRejected,
    SisApiError,
    SisConnectionError,
    SisStreamError,
)
from ..engines.espeak import EspeakUnavailableError
from ._media import CODECS_HINT, CodecsMissingError, decode_file, sniff_container

__all__ = [
    "EMBEDDED_LOGGERS",
    "EXIT_AUTH",
    "EXIT_INPUT",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SERVER",
    "EXIT_USAGE",
    "AudioSource",
    "CliError",
    "InputError",
    "add_debug_flag",
    "exit_code_for",
    "fmt_name",
    "guarded",
    "install_interrupt",
    "open_audio",
    "read_all",
    "quiet_loggers",
    "register_secret",
    "scrub",
    "sis_format_arg",
    "split_channels",
    "to_mono",
]

EXIT_OK: Final = 0
#: Bad command line (argparse uses 2 too).
EXIT_USAGE: Final = 2
#: The input audio cannot be read: missing, empty, truncated, wrong format tag, ...
EXIT_INPUT: Final = 3
#: Credentials missing for a remote endpoint, or rejected.
EXIT_AUTH: Final = 4
#: The server failed or broke the protocol (SIS error answers, connection failures, engines).
EXIT_SERVER: Final = 5
#: A bug: an exception nobody expected (rerun with --debug for the traceback).
EXIT_INTERNAL: Final = 1
#: Ctrl-C (128 + SIGINT), after the session was ended cleanly and the transcript written.
EXIT_INTERRUPTED: Final = 130

#: Largest non-data chunk read from a streamed WAV header (a bound: stdin may be anything).
_MAX_HEADER_CHUNK: Final = 1 << 20
#: Loggers of the in-process server, quiet in the CLI unless --debug.
EMBEDDED_LOGGERS: Final = ("sis_stream.server", "sis_stream.engines", "aiohttp.server", "aiohttp.web",
                           "aiohttp.access")
#: Blocks (of about 100 ms) between the stdin reader thread and the event loop.
_READ_QUEUE: Final = 32
#: Secrets seen on this command line or in the environment; scrubbed from every error line.
_SECRETS: set[str] = set()


class CliError(SisStreamError):
    """An error the CLI reports as one line with a chosen exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InputError(CliError, ValueError):
    """The input audio cannot be used (exit code 3)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_INPUT)


def register_secret(value: str | None) -> None:
    """Remember a credential so :func:`scrub` removes it from any message printed."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def scrub(text: str) -> str:
    """`text` on one line, with every registered secret replaced by ``***``."""
    for s in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(s, "***")
    return " ".join(text.split())


def exit_code_for(exc: BaseException) -> int:
    """The exit code of an exception: 3 input, 4 auth, 5 server/protocol, 2 usage, 1 other."""
    if isinstance(exc, CliError):
        return exc.exit_code
    if isinstance(exc, AuthError):  # SisAuthError too (before SisApiError)
        return EXIT_AUTH
    if isinstance(exc, (SisApiError, ProtocolError, SisConnectionError, EngineError,
                        EspeakUnavailableError)):
        return EXIT_SERVER
    if isinstance(exc, RequestRejected):  # our own START config check: a bad option value
        return EXIT_USAGE
    if isinstance(exc, (AudioFormatError, FileNotFoundError, IsADirectoryError, PermissionError)):
        return EXIT_INPUT
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
        return EXIT_INTERRUPTED
    return EXIT_INTERNAL


def _message(exc: BaseException) -> str:
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)) and exc.filename:
        return f"cannot read {exc.filename}: {exc.strerror}"
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
        return "interrupted"
    text = str(exc) or type(exc).__name__
    if exit_code_for(exc) == EXIT_INTERNAL:
        return f"internal error: {type(exc).__name__}: {text} (rerun with --debug for the traceback)"
    return text


def guarded(command: str, fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a subcommand's body: exceptions become one clear line on stderr and an exit code.

    With ``--debug`` the traceback is printed too.
    """

    def run(args: argparse.Namespace) -> int:
        if getattr(args, "debug", False):
            logging.getLogger().setLevel(logging.DEBUG)
            if not logging.getLogger().handlers:
                logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            return fn(args)
        # The CLI's error boundary (a second Ctrl-C cancels the main task: CancelledError).
        except (Exception, KeyboardInterrupt, asyncio.CancelledError) as exc:  # noqa: BLE001
            code = exit_code_for(exc)
            if getattr(args, "debug", False):
                traceback.print_exc(file=sys.stderr)
            print(f"sis-stream {command}: error: {scrub(_message(exc))}", file=sys.stderr, flush=True)
            return code

    run.__name__ = f"run_{command}"
    run.__doc__ = fn.__doc__
    return run


@contextlib.contextmanager
def quiet_loggers(names: tuple[str, ...] = EMBEDDED_LOGGERS, enabled: bool = True) -> Iterator[None]:
    """Silence these loggers for the duration (restored after).

    The embedded server reports every failure to the client as a SIS error, which the CLI
    prints as its one error line; its own log lines would only repeat it. ``--debug`` keeps them.
    """
    if not enabled:
        yield
        return
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    for lg, _ in saved:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def install_interrupt(interrupt: asyncio.Event, on_first: Callable[[], None]) -> Callable[[], None]:
    """SIGINT: the first press sets `interrupt` (the command ends its sessions cleanly with END
    cancel and still writes its output), a second press cancels the main task.

    Returns a function removing the handler. Outside the main thread nothing is installed.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    presses = 0

    def handler() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            interrupt.set()
            on_first()
        elif task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, handler)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGINT)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on a subcommand; SUPPRESS so it never overrides a global ``--debug``."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print tracebacks and debug logs")


def sis_format_arg(value: str) -> AudioFormat:
    """argparse type: a SIS ``audio_format`` name (``pcm16k16bit``, ``ulaw8k8bit``, ...)."""
    try:
        return AudioFormat.from_sis(value)
    except AudioFormatError:
        raise argparse.ArgumentTypeError(
            f"unknown audio format {value!r}; expected one of {', '.join(SIS_FORMATS)}"
        ) from None


# --- audio input ---------------------------------------------------------------------------------


@dataclass
class AudioSource:
    """Audio to stream: its format, its length when known, and its bytes in chunks.

    Attributes
    ----------
    name : str
        The input as given (``-`` for stdin).
    format : AudioFormat
        Format of the bytes delivered (mono: several channels are mixed down on the way).
    total_bytes : int or None
        Known length in delivered bytes; None for a live stream without a declared size.
    data : bytes or None
        The whole audio for files; None for stdin (read as it arrives).
    source_format : AudioFormat or None
        The input's own format when it differs from `format` (multi-channel input).
    """

    name: str
    format: AudioFormat
    total_bytes: int | None
    data: bytes | None = None
    _reader: BinaryIO | None = None
    _declared: int | None = None
    source_format: AudioFormat | None = None
    #: Bytes delivered by :meth:`achunks` so far.
    received: int = 0
    #: Set when a streamed WAV ended before its declared data size (the caller reports it).
    truncated: str | None = None
    #: Non-fatal remarks (e.g. stray bytes of a partial sample frame at the end of a stream).
    warnings: list[str] = field(default_factory=list)
    #: Each channel of a multi-channel file as mono 16-bit PCM (``open_audio(keep_channels=True)``).
    channel_data: tuple[bytes, ...] | None = None
    #: How the samples were obtained when not by the WAV reader (``"decoded by FFmpeg"``).
    decoded: str | None = None
    #: Bytes already read from the stream (the raw-input container check), delivered first.
    _prefix: bytes = b""

    @property
    def total_ms(self) -> float | None:
        """Length in ms when known."""
        return None if self.total_bytes is None else self.format.duration_ms(self.total_bytes)

    @property
    def description(self) -> str:
        """The input's format for messages, e.g. ``pcm 44100 Hz 16-bit x2 mixed to mono``."""
        how = f" ({self.decoded})" if self.decoded else ""
        if self.source_format is None:
            return fmt_name(self.format) + how
        return fmt_name(self.source_format) + how + " mixed to mono"

    def chunk_bytes(self, ms: int = 100) -> int:
        """Bytes in `ms` ms of the delivered format (whole sample frames)."""
        return max(1, self.format.rate_hz * ms // 1000) * self.format.bytes_per_frame

    def chunks(self, ms: int = 100) -> Iterator[bytes]:
        """The whole audio of a file in `ms` chunks (files only)."""
        if self.data is None:
            raise TypeError("chunks() is for files; use achunks() for stdin")
        n = self.chunk_bytes(ms)
        for i in range(0, len(self.data), n):
            yield self.data[i : i + n]

    async def achunks(self, ms: int = 100) -> AsyncIterator[bytes]:
        """The audio in chunks of about `ms` (stdin: as it arrives, read off the event loop)."""
        if self.data is not None:
            for c in self.chunks(ms):
                self.received += len(c)
                yield c
            return
        assert self._reader is not None
        src = self.source_format or self.format
        n = max(1, src.rate_hz * ms // 1000) * src.bytes_per_frame
        bpf = src.bytes_per_frame
        carry, self._prefix = self._prefix, b""
        async for block in _threaded_reads(self._reader, n, self._declared):
            buf = carry + block
            cut = len(buf) - len(buf) % bpf
            carry = buf[cut:]
            if cut:
                self.received += cut
                yield buf[:cut] if self.source_format is None else to_mono(buf[:cut], src)[0]
        cut = len(carry) - len(carry) % bpf
        if cut:  # a stream shorter than the bytes read ahead
            self.received += cut
            yield carry[:cut] if self.source_format is None else to_mono(carry[:cut], src)[0]
            carry = carry[cut:]
        if self._declared is not None and self.received < self._declared:
            self.truncated = (f"truncated WAV on {self.name}: the header declares {self._declared} "
                              f"bytes of audio, the stream ended after {self.received}")
        elif carry:
            self.warnings.append(f"{self.name} ended inside a sample frame ({len(carry)} stray "
                                 "byte(s) dropped)")
        if self.received == 0 and self.truncated is None:
            raise InputError(f"input {self.name} holds no audio (empty stream)")


async def _threaded_reads(f: BinaryIO, n: int, limit: int | None) -> AsyncIterator[bytes]:
    """Blocks of at most `n` bytes from a blocking binary stream, read by a daemon thread.

    A daemon thread (not the loop's executor) so a read blocked on a silent pipe never keeps the
    process alive after Ctrl-C. Between the thread and the loop: a bounded queue of
    :data:`_READ_QUEUE` blocks with the ``block`` policy (back-pressure reaches the pipe).
    `limit` stops reading after that many bytes (a WAV data chunk's declared size).
    """
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(_READ_QUEUE)
    stop = threading.Event()
    read = getattr(f, "read1", f.read)

    def put(item: bytes | BaseException | None) -> bool:
        try:
            asyncio.run_coroutine_threadsafe(q.put(item), loop).result()
        except (RuntimeError, concurrent.futures.CancelledError):  # loop closed or cancelled
            return False
        return not stop.is_set()

    def reader() -> None:
        got = 0
        try:
            while not stop.is_set():
                want = n if limit is None else min(n, limit - got)
                if want <= 0:
                    break
                block = read(want)
                if not block:
                    break
                got += len(block)
                if not put(bytes(block)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, raised there
            put(exc)
            return
        put(None)

    threading.Thread(target=reader, name="sis-stream-stdin", daemon=True).start()
    try:
        while True:
            item = await q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not q.empty():  # unblock a reader waiting on a full queue
            q.get_nowait()


def _read_exact(f: BinaryIO, n: int) -> bytes:
    out = b""
    while len(out) < n:
        b = f.read(n - len(out))
        if not b:
            break
        out += b
    return out


def _stream_wav_header(f: BinaryIO, name: str) -> tuple[AudioFormat, int | None, bytes]:
    """Read a WAV header from a stream up to the data chunk; validate it with read_wav."""
    head = _read_exact(f, 12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        container = sniff_container(head)
        if container is not None and head[:4] != b"RIFF":
            raise InputError(f"{name} looks like {container}: compressed audio is read from a file "
                             "(give its path instead of -); a pipe carries WAV or raw audio")
        raise InputError(f"{name}: not a RIFF/WAVE stream (for raw audio give --audio-format)")
    header = bytearray(head)
    while True:
        ch = _read_exact(f, 8)
        if len(ch) < 8:
            raise InputError(f"truncated WAV on {name}: the stream ended before the data chunk")
        cid, size = struct.unpack("<4sI", ch)
        if cid == b"data":
            # read_wav validates everything before 'data'; a placeholder size makes it accept the
            # header alone (the audio follows on the stream).
            fmt = read_wav(bytes(header) + b"data" + struct.pack("<I", 0xFFFFFFFF)).format
            declared = None if size in (0, 0xFFFFFFFF) else size
            return fmt, declared, b""
        if size > _MAX_HEADER_CHUNK:
            raise InputError(f"{name}: WAV chunk {cid!r} of {size} bytes before the data chunk "
                             f"(more than {_MAX_HEADER_CHUNK} is not accepted on a stream)")
        body = _read_exact(f, size + (size & 1))
        if len(body) < size:
            raise InputError(f"truncated WAV on {name}: chunk {cid!r} declares {size} bytes, "
                             f"{len(body)} came")
        header += ch + body


def read_all(source: AudioSource, step_ms: int = 1000) -> bytes:
    """All the audio of `source` as one bytes object (a file, or standard input read to its end
    in `step_ms` chunks); :class:`CliError` (input error) when standard input was cut short."""
    if source.data is not None:
        return source.data

    async def collect() -> bytes:
        return b"".join([c async for c in source.achunks(step_ms)])

    data = asyncio.run(collect())
    if source.truncated is not None:
        raise CliError(source.truncated, EXIT_INPUT)
    return data


def open_audio(name: str, audio_format: AudioFormat | None = None, *,
               stdin: BinaryIO | None = None, keep_channels: bool = False) -> AudioSource:
    """Open INPUT: a WAV file (PCM, u-law, A-law), any file FFmpeg decodes (MP3, Ogg/Opus, FLAC,
    M4A/AAC, AMR, 24-bit and float WAV ...; needs PyAV, the ``codecs`` extra), raw audio with
    `audio_format`, or ``-`` (stdin: WAV or raw).

    Parameters
    ----------
    name : str
        A path, or ``-`` for standard input (WAV or, with `audio_format`, raw).
    audio_format : AudioFormat, optional
        The raw audio's format (``--audio-format``); WAV headers are not looked for then.
    stdin : binary stream, optional
        Standard input to use (default ``sys.stdin.buffer``).
    keep_channels : bool
        Also keep each channel of a multi-channel file (:attr:`AudioSource.channel_data`).

    Raises
    ------
    InputError
        Empty input, not a WAV without `audio_format`, a truncated WAV header, no audio, raw
        input (`audio_format` given) whose first bytes are a container's (ID3, OggS, fLaC, ...).
    AudioFormatError
        A malformed WAV, or a file FFmpeg cannot decode; :class:`CodecsMissingError` when it
        needs PyAV and PyAV is missing.
    OSError
        The file cannot be read.
    """
    if name == "-":
        f = stdin if stdin is not None else sys.stdin.buffer
        if audio_format is not None:
            head = _read_exact(f, 16)
            container = sniff_container(head)
            if container is not None:
                raise InputError(f"stdin looks like {container}, not raw {audio_format.sis_name} "
                                 "samples: drop --audio-format, or give the file's path instead of -")
            return AudioSource("stdin", audio_format, None, None, f, _prefix=head)
        fmt, declared, _ = _stream_wav_header(f, "stdin")
        if fmt.channels == 1:
            return AudioSource("stdin", fmt, declared, None, f, declared)
        mono = AudioFormat(fmt.rate_hz, "pcm", 2)
        total = None if declared is None else declared // fmt.bytes_per_frame * 2
        return AudioSource("stdin", mono, total, None, f, declared, source_format=fmt)
    if os.path.isdir(name):
        raise InputError(f"input {name} is a directory, expected an audio file")
    with open(name, "rb") as fh:
        raw = fh.read()
    if not raw:
        raise InputError(f"input {name} is empty (0 bytes)")
    if audio_format is not None:
        container = sniff_container(raw[:16])
        if container is not None:
            raise InputError(f"{name} looks like {container}, not raw {audio_format.sis_name} "
                             "samples: drop --audio-format to decode it")
        usable = len(raw) - len(raw) % audio_format.bytes_per_frame
        if usable == 0:
            raise InputError(f"input {name} holds less than one {audio_format.sis_name} sample")
        return AudioSource(name, audio_format, usable, raw[:usable])
    data, fmt, by_ffmpeg = _decode(name, raw)
    decoded = "decoded by FFmpeg" if by_ffmpeg else None
    if fmt.channels > 1:
        mixed, mono = to_mono(data, fmt)
        split = split_channels(data, fmt) if keep_channels else None
        return AudioSource(name, mono, len(mixed), mixed, source_format=fmt, channel_data=split,
                           decoded=decoded)
    return AudioSource(name, fmt, len(data), data, decoded=decoded)



def _decode(name: str, raw: bytes) -> tuple[bytes, AudioFormat, bool]:
    """A file's samples and whether FFmpeg decoded them: the strict WAV reader for PCM16/u-law/
    A-law WAV at a rate the resampler takes, PyAV for the rest."""
    container = sniff_container(raw[:16])
    if raw[:4] == b"RIFF":
        try:
            wav = read_wav(raw)
        except AudioFormatError as exc:
            if not str(exc).startswith("unsupported"):
                raise AudioFormatError(f"{name}: {exc}") from exc
            # 24/32-bit, float, ADPCM, GSM ... WAV: FFmpeg reads them.
            try:
                return (*decode_file(name, f"this WAV ({exc})"), True)
            except CodecsMissingError:
                raise
            except AudioFormatError:
                raise AudioFormatError(f"{name}: {exc}") from exc
        if not wav.data:
            raise InputError(f"{name} holds no audio (empty data chunk)")
        if wav.format.rate_hz not in INPUT_RATES:
            # A rate the streaming resampler does not take: FFmpeg brings it to 8 or 16 kHz.
            return (*decode_file(name, f"a WAV at {wav.format.rate_hz} Hz"), True)
        return wav.data, wav.format, False
    try:
        return (*decode_file(name, container or "a file that is not a WAV"), True)
    except CodecsMissingError:
        if container is None:
            raise InputError(f"{name} is not a WAV file; for raw audio give --audio-format "
                             f"({', '.join(SIS_FORMATS)}); for MP3, Ogg, FLAC, M4A, AMR ... "
                             f"{CODECS_HINT}") from None
        raise
    except AudioFormatError:
        if container is None:
            raise InputError(f"{name} is not a WAV file and not audio FFmpeg can read; for raw "
                             f"audio give --audio-format ({', '.join(SIS_FORMATS)})") from None
        raise


def split_channels(data: bytes, fmt: AudioFormat) -> tuple[bytes, ...]:
    """Interleaved multi-channel audio as one mono 16-bit PCM buffer per channel."""
    pcm = np.frombuffer(data if fmt.encoding == "pcm" else decode(data, fmt.encoding), "<i2")
    frames = pcm.reshape(-1, fmt.channels)
    return tuple(np.ascontiguousarray(frames[:, c]).tobytes() for c in range(fmt.channels))


def to_mono(data: bytes, fmt: AudioFormat) -> tuple[bytes, AudioFormat]:
    """Mix interleaved multi-channel audio down to mono 16-bit PCM (mean of the channels,
    rounded half to even). Mono input is returned unchanged.
    """
    if fmt.channels == 1:
        return data, fmt
    pcm = np.frombuffer(data if fmt.encoding == "pcm" else decode(data, fmt.encoding), "<i2")
    frames = pcm.reshape(-1, fmt.channels).astype(np.int32)
    mixed = np.round(frames.mean(axis=1)).astype("<i2")
    return mixed.tobytes(), AudioFormat(fmt.rate_hz, "pcm", 2, 1)


def fmt_name(fmt: AudioFormat) -> str:
    """A short description: the SIS name when there is one, else e.g. ``pcm 44100 Hz x2``."""
    try:
        return fmt.sis_name
    except AudioFormatError:
        ch = f" x{fmt.channels}" if fmt.channels != 1 else ""
        return f"{fmt.encoding} {fmt.rate_hz} Hz {8 * fmt.sample_width}-bit{ch}"

