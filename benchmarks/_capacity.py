"""Pure helpers of ``bench_capacity.py``: what one call and one load level measured,
percentiles, prompt coverage, pooled WER, the capacity rule, the README table and the verdict.

No I/O, no server, no clock: the benchmark fills :class:`CallRecord` and :class:`LevelResult`,
these functions only compute and render (unit-tested in ``tests/test_bench_helpers.py``).
Import it as ``from _capacity import ...`` (this directory is on ``sys.path`` under pytest).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sis_stream.text import ErrorCounts, normalize_text, word_errors

__all__ = [
    "CallRecord",
    "LevelResult",
    "capacity",
    "covered_prompts",
    "markdown_table",
    "percentile",
    "pooled_wer",
    "same_transcripts",
    "verdict",
]


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank `q`-quantile of `values`: the smallest value with at least a fraction `q`
    of the values at or below it (NaN when there are none).

    Raises
    ------
    ValueError
        If `q` is not in ``(0, 1]``.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q must lie in (0, 1], got {q!r}")
    xs = sorted(values)
    if not xs:
        return math.nan
    return xs[max(1, math.ceil(q * len(xs) - 1e-9)) - 1]


def covered_prompts(prompts: Sequence[tuple[int, int]], finals: Sequence[tuple[int, int]],
                    *, slack_ms: int = 0) -> int:
    """How many prompt spans ``(start_ms, end_ms)`` overlap at least one final's span.

    A prompt no final overlaps was never finalised (lost, or still pending when the call
    ended); one final spanning two prompts covers both. `slack_ms` widens every final on both
    sides (timestamps of an endpointer are not sample-exact).
    """
    return sum(1 for ps, pe in prompts
               if any(fs - slack_ms < pe and fe + slack_ms > ps for fs, fe in finals))


def pooled_wer(pairs: Iterable[tuple[str, str]]) -> ErrorCounts:
    """Corpus-level word errors of ``(reference, hypothesis)`` pairs (edit counts summed)."""
    total = ErrorCounts(0, 0, 0, 0)
    for ref, hyp in pairs:
        total = total + word_errors(ref, hyp)
    return total


def same_transcripts(a: Mapping[int, str], b: Mapping[int, str]) -> tuple[int, int]:
    """``(equal, compared)``: calls (keys in both) whose normalised transcripts are identical."""
    keys = sorted(set(a) & set(b))
    return sum(normalize_text(a[k]) == normalize_text(b[k]) for k in keys), len(keys)


@dataclass
class CallRecord:
    """What one call measured.

    Attributes
    ----------
    seed : int
        The call (``long_call(seconds, seed=seed)``).
    reference : str
        The prompts' transcripts, in order.
    prompts : tuple of (int, int)
        ``(start_ms, end_ms)`` of every prompt in the call.
    audio_s : float
        Length of the call's audio.
    finals : list of (int, int, float, str)
        ``(start_ms, end_ms, ttf_s, text)`` per final result, in arrival order.
    interim_latency_s : list of float
        Per interim result: arrival minus the moment its ``end_time`` was due on the wire.
    errors : list of str
        Error kinds (SIS codes, ``timeout``, ``connect:<class>``, ``closed``...).
    """

    seed: int
    reference: str
    prompts: tuple[tuple[int, int], ...]
    audio_s: float
    finals: list[tuple[int, int, float, str]] = field(default_factory=list)
    interim_latency_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def hypothesis(self) -> str:
        """The final texts joined in arrival order."""
        return " ".join(t for *_, t in self.finals if t)

    @property
    def covered(self) -> int:
        """Prompts with a final (see :func:`covered_prompts`)."""
        return covered_prompts(self.prompts, [(s, e) for s, e, _, _ in self.finals], slack_ms=100)


@dataclass
class LevelResult:
    """One load level: `n` concurrent calls against a fresh server.

    ``server_cpu_s`` and ``client_cpu_s`` are the CPU seconds of the server process and of the
    load generator over ``wall_s`` (first call started to last call over); ``pump_late_*`` are
    the client pump's lateness against its real-time schedule (all streams pooled);
    ``load_avg`` the box's 1-minute load average before and after.
    """

    engine: str
    interim: bool
    n: int
    calls: list[CallRecord]
    server_cpu_s: float
    wall_s: float
    client_cpu_s: float = math.nan
    pump_late_p95_s: float = math.nan
    pump_late_max_s: float = math.nan
    load_avg: tuple[float, float] = (math.nan, math.nan)

    @property
    def expected(self) -> int:
        return sum(len(c.prompts) for c in self.calls)

    @property
    def finals(self) -> int:
        return sum(len(c.finals) for c in self.calls)

    @property
    def covered(self) -> int:
        return sum(c.covered for c in self.calls)

    @property
    def errors(self) -> list[str]:
        return [e for c in self.calls for e in c.errors]

    @property
    def ttf_s(self) -> list[float]:
        return [t for c in self.calls for _, _, t, _ in c.finals]

    @property
    def interim_latency_s(self) -> list[float]:
        return [t for c in self.calls for t in c.interim_latency_s]

    @property
    def call_seconds(self) -> float:
        return sum(c.audio_s for c in self.calls)

    @property
    def cpu_per_call_second(self) -> float:
        """Server CPU seconds per second of call audio."""
        return self.server_cpu_s / self.call_seconds if self.call_seconds else math.nan

    @property
    def server_cores(self) -> float:
        """Server CPU seconds per wall second (cores in use on average)."""
        return self.server_cpu_s / self.wall_s if self.wall_s > 0 else math.nan

    def hypotheses(self) -> dict[int, str]:
        return {c.seed: c.hypothesis for c in self.calls}

    def ok(self, bound_s: float) -> bool:
        """No error, every prompt finalised, p95 time-to-final within `bound_s`."""
        p95 = percentile(self.ttf_s, 0.95)
        return not self.errors and self.covered == self.expected and p95 <= bound_s


def capacity(levels: Sequence[LevelResult], bound_s: float) -> int:
    """The largest N such that the level with N calls and every smaller level tried are
    :meth:`LevelResult.ok` (0 when the smallest fails)."""
    best = 0
    for r in sorted(levels, key=lambda r: r.n):
        if not r.ok(bound_s):
            break
        best = r.n
    return best


def _pct(errs: ErrorCounts) -> str:
    return f"{100 * errs.rate:.1f} %" if errs.reference_length else "-"


def _wer_cell(r: LevelResult, alone: Mapping[int, str]) -> str:
    load = pooled_wer((c.reference, c.hypothesis) for c in r.calls)
    refs = {c.seed: c.reference for c in r.calls}
    if not all(c.seed in alone for c in r.calls):
        return f"{_pct(load)} / -"
    single = pooled_wer((refs[s], alone[s]) for s in refs)
    same, n = same_transcripts(r.hypotheses(), alone)
    return f"{_pct(load)} / {_pct(single)} ({same}/{n} same)"


def _lost(r: LevelResult) -> str:
    lost = r.expected - r.covered
    return f" ({lost} prompt{'s' if lost > 1 else ''} without a final)" if lost else ""


def _s(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def markdown_table(levels: Sequence[LevelResult], alone: Mapping[str, Mapping[int, str]],
                   bound_s: float) -> str:
    """The README table: one row per level; `alone` maps engine -> seed -> the transcript the
    call got when it was the only call on the server."""
    lines = [
        ("| engine | results | calls | errors | finals / prompts | TTF p50 / p95 / p99 (s) | "
         "interim latency p50 / p95 (s) | server CPU s per call-s | server cores | "
         f"WER under load / alone | p95 TTF <= {bound_s:g} s |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in levels:
        ttf, il = r.ttf_s, r.interim_latency_s
        lines.append(
            f"| {r.engine} | {'interim 1 Hz' if r.interim else 'finals only'} | {r.n} | "
            f"{len(r.errors)} | {r.finals} / {r.expected}{_lost(r)} | "
            f"{_s(percentile(ttf, 0.5))} / {_s(percentile(ttf, 0.95))} / {_s(percentile(ttf, 0.99))} | "
            + (f"{_s(percentile(il, 0.5))} / {_s(percentile(il, 0.95))}" if r.interim else "-")
            + f" | {r.cpu_per_call_second:.3f} | {r.server_cores:.2f} | "
            f"{_wer_cell(r, alone.get(r.engine, {}))} | {'ok' if r.ok(bound_s) else 'over'} |")
    return "\n".join(lines)


def verdict(levels: Sequence[LevelResult], alone: Mapping[str, Mapping[int, str]], bound_s: float,
            targets: Mapping[bool, int], *, cores: int) -> list[str]:
    """One line per (engine, results) tried: capacity vs its target (``targets[interim]``
    calls), and whether the transcripts at that capacity match the single-call ones."""
    out = []
    keys = list(dict.fromkeys((r.engine, r.interim) for r in levels))
    for engine, interim in keys:
        rows = [r for r in levels if (r.engine, r.interim) == (engine, interim)]
        cap = capacity(rows, bound_s)
        target = targets[interim]
        tried = max(r.n for r in rows)
        if cap >= target:
            met = "MET"
        elif cap == tried:
            met = f"not shown (every level passed, the largest tried was {tried})"
        else:
            met = "MISSED"
        line = (f"{engine}, {'interim 1 Hz' if interim else 'finals only'}: capacity {cap} calls "
                f"({cap / cores:g} per core) at p95 TTF <= {bound_s:g} s, 0 errors, all finals; "
                f"target >= {target}: {met}")
        at = [r for r in rows if r.n == cap]
        eng_alone = alone.get(engine, {})
        if at and all(c.seed in eng_alone for c in at[0].calls):
            r = at[0]
            load = pooled_wer((c.reference, c.hypothesis) for c in r.calls)
            single = pooled_wer((c.reference, eng_alone[c.seed]) for c in r.calls)
            same, n = same_transcripts(r.hypotheses(), eng_alone)
            change = ("unchanged" if load.errors <= single.errors
                      else f"{100 * (load.rate - single.rate):+.1f} points")
            line += (f"; WER at {cap} calls {_pct(load)} vs {_pct(single)} alone: {change} "
                     f"({same}/{n} transcripts identical)")
        out.append(line)
    return out
