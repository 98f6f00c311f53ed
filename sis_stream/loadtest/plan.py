"""How many streams run when: a ramp rate (streams added per second) or a step plan (``10,20,40``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_STREAMS", "RampPlan", "parse_ramp"]

#: Most concurrent streams one run may ask for (a bound, not a promise that a box carries them).
MAX_STREAMS: Final = 20_000
#: Streams added per second when no ramp is given.
DEFAULT_RAMP_PER_S: Final = 50.0


@dataclass(frozen=True)
class RampPlan:
    """Target concurrency over the run.

    Either ``rate`` streams per second up to ``streams`` (the first starts at once), or
    ``steps``: concurrency levels held ``step_s`` seconds each, in order.
    """

    streams: int
    rate: float | None = None
    steps: tuple[int, ...] = ()
    step_s: float = 0.0

    def target(self, t_s: float) -> int:
        """Concurrency wanted `t_s` seconds into the run."""
        if self.steps:
            i = min(len(self.steps) - 1, int(t_s // self.step_s)) if self.step_s > 0 else 0
            return self.steps[max(0, i)]
        assert self.rate is not None
        return min(self.streams, 1 + math.floor(max(0.0, t_s) * self.rate))

    def level_windows(self) -> list[tuple[int, float, float]]:
        """``(level, t_from, t_to)`` of every step (empty for a rate ramp)."""
        return [(lv, i * self.step_s, (i + 1) * self.step_s) for i, lv in enumerate(self.steps)]


def parse_ramp(value: str | None, streams: int, duration_s: float, step_s: float | None = None) -> RampPlan:
    """Parse ``--ramp``: None (default rate), a rate such as ``25`` (streams/s) or a step plan
    ``10,20,40,80`` (each level held `step_s`, default ``duration_s / len(steps)``).

    Raises
    ------
    ValueError
        A malformed value, a level outside ``[1, MAX_STREAMS]``, a rate <= 0.
    """
    if not 1 <= streams <= MAX_STREAMS:
        raise ValueError(f"--streams must be in [1, {MAX_STREAMS}], got {streams}")
    if value is None or not value.strip():
        return RampPlan(streams, rate=DEFAULT_RAMP_PER_S)
    v = value.strip()
    if "," in v:
        try:
            steps = tuple(int(x) for x in v.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"--ramp step plan must be integers separated by commas (10,20,40), got {value!r}") from None
        if not steps or any(not 1 <= s <= MAX_STREAMS for s in steps):
            raise ValueError(f"--ramp levels must be in [1, {MAX_STREAMS}], got {value!r}")
        hold = step_s if step_s is not None else duration_s / len(steps)
        if not hold > 0:
            raise ValueError(f"each ramp step must last > 0 s, got {hold}")
        return RampPlan(max(steps), steps=steps, step_s=float(hold))
    try:
        rate = float(v)
    except ValueError:
        raise ValueError(f"--ramp must be streams per second (25) or a step plan (10,20,40), got {value!r}") from None
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"--ramp rate must be > 0 streams per second, got {value!r}")
    return RampPlan(streams, rate=rate)
