"""Type stub for the compiled resampling kernel (native/resample.pyx); the numpy twin is _reference/resample.py."""

from typing import Final

from typing_extensions import Buffer

#: Instruction set of the inner loop chosen at import ("avx512", "avx2+fma" or "baseline").
ISA: Final[str]

def scratch_length(n_in: int, taps_per_phase: int, down: int, n_out: int) -> int:
    """Minimum length of the float32 ``scratch`` buffer polyphase_process needs for one call."""

def polyphase_process(
    x: Buffer,
    taps: Buffer,
    history: Buffer,
    scratch: Buffer,
    phase: int,
    up: int,
    down: int,
    out: Buffer,
) -> tuple[int, int, int]:
    """Resample chunk ``x`` into all of ``out``; update ``history``; return (n_out, phase, clips).

    ``x`` and ``out`` are each int16 or float32 (C-contiguous, ``x`` may be read-only);
    ``taps`` is float32 (up, taps_per_phase); ``history`` float32 (taps_per_phase - 1,);
    ``scratch`` float32 of at least ``scratch_length(len(x), taps_per_phase, down, len(out))``.
    """
