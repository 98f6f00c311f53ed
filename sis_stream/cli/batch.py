"""Several inputs in one ``transcribe`` call: expanding directories, naming one output per input,
and the progress bar over the whole batch."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TextIO

from ._common import EXIT_USAGE, CliError, InputError
from .console import LiveDisplay, progress_bar

__all__ = ["AUDIO_EXTENSIONS", "OUTPUT_EXTENSIONS", "BatchDisplay", "expand_inputs", "output_paths"]

#: File extensions a directory input contributes (with ``--audio-format``: every file).
AUDIO_EXTENSIONS: Final = frozenset({
    ".wav", ".wave", ".mp3", ".ogg", ".oga", ".opus", ".flac", ".m4a", ".mp4", ".aac", ".amr",
    ".webm", ".mka", ".aif", ".aiff", ".au", ".caf", ".wma",
})
#: The transcript file extension of each ``--format``.
OUTPUT_EXTENSIONS: Final = {"txt": ".txt", "json": ".json", "jsonl": ".jsonl", "srt": ".srt",
                            "vtt": ".vtt"}


def expand_inputs(items: Sequence[str], raw: bool = False) -> list[str]:
    """The input files of a call: files as given, directories as their audio files (sorted,
    hidden files left out, not recursive).

    Parameters
    ----------
    items : sequence of str
        INPUT arguments; ``-`` (stdin) only alone.
    raw : bool
        ``--audio-format`` was given: every regular file of a directory is an input.

    Raises
    ------
    CliError
        Exit 2 for ``-`` among other inputs; :class:`InputError` (exit 3) for a directory
        without audio files.
    """
    if "-" in items and len(items) > 1:
        raise CliError("- (standard input) cannot be combined with other inputs", EXIT_USAGE)
    out: list[str] = []
    for item in items:
        if item != "-" and os.path.isdir(item):
            files = sorted(str(p) for p in Path(item).iterdir()
                           if p.is_file() and not p.name.startswith(".")
                           and (raw or p.suffix.lower() in AUDIO_EXTENSIONS))
            if not files:
                raise InputError(f"directory {item} holds no audio files (looked for "
                                 f"{', '.join(sorted(AUDIO_EXTENSIONS))})")
            out.extend(files)
        else:
            out.append(item)
    return out


def output_paths(inputs: Sequence[str], fmt: str, output: str | None) -> list[str]:
    """One transcript path per input of a batch: ``<stem><.fmt>`` in `output` (a directory,
    created if missing) or, without it, beside each input.

    Raises
    ------
    CliError
        Exit 2: `output` is an existing file, two inputs would write the same transcript, or a
        transcript would overwrite an input.
    """
    ext = OUTPUT_EXTENSIONS[fmt]
    if output is not None:
        if output == "-":
            raise CliError("with several inputs -o names a directory (one transcript per input), "
                           "not -", EXIT_USAGE)
        if os.path.exists(output) and not os.path.isdir(output):
            raise CliError(f"with several inputs -o names a directory (one transcript per input); "
                           f"{output} is a file", EXIT_USAGE)
    paths: list[str] = []
    seen: dict[str, str] = {}
    inputs_real = {os.path.realpath(i) for i in inputs}
    for item in inputs:
        folder = output if output is not None else os.path.dirname(item) or "."
        path = os.path.join(folder, Path(item).stem + ext)
        real = os.path.realpath(path)
        if real in seen:
            raise CliError(f"{seen[real]} and {item} would both write {path}; give them "
                           "different names or transcribe them separately", EXIT_USAGE)
        if real in inputs_real:
            raise CliError(f"the transcript of {item} would overwrite the input {path}; "
                           "give -o DIR", EXIT_USAGE)
        seen[real] = item
        paths.append(path)
    if output is not None:
        os.makedirs(output, exist_ok=True)
    return paths


class BatchDisplay(LiveDisplay):
    """The progress bar over a batch (stderr, terminal only): files done, share of the audio,
    elapsed and remaining time, current file. Finals are not echoed (they go to the files);
    notes (a failed input) are printed above the bar.

    Parameters
    ----------
    stream : text stream
        Usually stderr.
    total_ms : float
        Audio of all inputs when every length is known cheaply, else 0: the bar then counts
        files, each in proportion to how much of it was sent.
    files : int
        Number of inputs.
    """

    def __init__(self, stream: TextIO | None, *, total_ms: float, files: int,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(sys.stderr if stream is None else stream, tty=tty, interim=False,
                         finals=False, total_ms=None, clock=clock)
        self.batch_ms = float(total_ms)
        self.files = files
        self.index = 0
        self.name = ""
        self._done_ms = 0.0
        self._file_ms: float | None = None
        self._batch_t0 = clock()

    def begin(self, index: int, name: str, audio_ms: float | None = None) -> None:
        """Input `index` (0-based) named `name` starts; `audio_ms` its length when known."""
        self.index = index
        self.name = name
        self._file_ms = audio_ms
        self._sent_ms = 0.0
        self._redraw(force=True)

    def finish(self, audio_ms: float) -> None:
        """The current input is done (`audio_ms` of it counted)."""
        self._done_ms += float(audio_ms)
        self._sent_ms = 0.0
        self.index += 1
        self._redraw(force=True)

    def status_text(self) -> str:
        """``[#####.....] 2/5 files  34%  0:12 elapsed, ~0:23 left  name``."""
        if self.batch_ms > 0:
            frac = (self._done_ms + self._sent_ms) / self.batch_ms
        else:
            part = min(1.0, self._sent_ms / self._file_ms) if self._file_ms else 0.0
            frac = (min(self.index, self.files) + part) / max(1, self.files)
        frac = min(1.0, max(0.0, frac))
        el = self._clock() - self._batch_t0
        left = f", ~{_clock(el * (1 - frac) / frac)} left" if 0.01 < frac < 1 else ""
        line = (f"{progress_bar(frac, 20)} {self.index}/{self.files} files  {frac:4.0%}  "
                f"{_clock(el)} elapsed{left}  {self.name}")
        room = max(10, self.width - 1)
        return line if len(line) <= room else line[: room - 3] + "..."


def _clock(s: float) -> str:
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
