"""The pure helpers of the capacity benchmark (benchmarks/_capacity.py): percentiles, prompt
coverage, pooled WER, the capacity rule and the rendered table/verdict."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _capacity import (
    CallRecord,
    LevelResult,
    capacity,
    covered_prompts,
    markdown_table,
    percentile,
    pooled_wer,
    same_transcripts,
    verdict,
)


def test_percentile_is_nearest_rank() -> None:
    xs = [float(x) for x in range(1, 101)]  # 1..100
    assert percentile(xs, 0.5) == 50.0
    assert percentile(xs, 0.95) == 95.0
    assert percentile(xs, 0.99) == 99.0
    assert percentile(xs, 1.0) == 100.0
    assert percentile(reversed(xs), 0.95) == 95.0  # order of the input does not matter
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError, match="q must lie"):
        percentile(xs, 0.0)


def test_a_prompt_counts_only_when_a_final_overlaps_it() -> None:
    prompts = [(1000, 2000), (3000, 4000), (5000, 6000)]
    assert covered_prompts(prompts, [(900, 2100), (2900, 4200), (4900, 6300)]) == 3
    assert covered_prompts(prompts, [(900, 2100), (4900, 6300)]) == 2  # the middle one is lost
    assert covered_prompts(prompts, [(900, 4200)]) == 2  # one final over two prompts covers both
    assert covered_prompts(prompts, [(2050, 2950)]) == 0  # a final in a pause covers nothing
    assert covered_prompts(prompts, [(2050, 2950)], slack_ms=100) == 2


def test_pooled_wer_sums_edit_counts() -> None:
    e = pooled_wer([("one two three four", "one two three four"), ("five six", "five seven")])
    assert (e.errors, e.reference_length) == (1, 6)
    assert pooled_wer([]).reference_length == 0


def test_same_transcripts_compares_normalised_text_of_common_calls() -> None:
    a = {0: "Please hold.", 1: "Goodbye", 2: "only here"}
    b = {0: "please hold", 1: "good bye"}
    assert same_transcripts(a, b) == (1, 2)


def _level(n: int, ttf: float, *, errors: int = 0, lost: int = 0, interim: bool = False,
           text: str = "please hold") -> LevelResult:
    calls = []
    for seed in range(n):
        rec = CallRecord(seed, "please hold the line", ((1000, 2000), (3000, 4000)), 5.0)
        rec.finals.append((900, 2100, ttf, text))
        if seed >= lost:
            rec.finals.append((2900, 4100, ttf, "the line"))
        rec.errors.extend(["SIS.0312"] * (errors if seed == 0 else 0))
        if interim:
            rec.interim_latency_s.extend([0.2, 0.4])
        calls.append(rec)
    return LevelResult("e", interim, n, calls, server_cpu_s=n * 0.5, wall_s=10.0)


def test_level_figures() -> None:
    r = _level(4, 0.9)
    assert (r.expected, r.finals, r.covered) == (8, 8, 8)
    assert r.cpu_per_call_second == pytest.approx(2.0 / 20.0)
    assert r.server_cores == pytest.approx(0.2)
    assert r.ok(1.2) and not r.ok(0.8)
    assert not _level(4, 0.9, errors=1).ok(1.2)
    assert not _level(4, 0.9, lost=1).ok(1.2)  # call 0 lost its second prompt
    assert _level(4, 0.9, lost=1).covered == 7


def test_capacity_stops_at_the_first_level_over_the_bound() -> None:
    levels = [_level(8, 0.8), _level(16, 1.0), _level(32, 1.5), _level(64, 1.1)]
    assert capacity(levels, 1.2) == 16  # 64 passing after 32 failed does not count
    assert capacity(list(reversed(levels)), 1.2) == 16  # order given does not matter
    assert capacity([_level(8, 2.0)], 1.2) == 0


def test_table_and_verdict() -> None:
    levels = [_level(8, 0.8), _level(16, 1.5), _level(8, 0.9, interim=True)]
    alone = {"e": {s: "please hold the line" for s in range(16)}}
    table = markdown_table(levels, alone, 1.2).splitlines()
    assert len(table) == 2 + 3 and table[1].startswith("|---")
    assert all(row.count("|") == table[0].count("|") for row in table)
    assert "| e | finals only | 8 | 0 | 16 / 16 | 0.80 / 0.80 / 0.80 | - |" in table[2]
    assert "over" in table[3] and "0.20 / 0.40" in table[4]
    assert "0.0 % / 0.0 % (8/8 same)" in table[2]  # two finals joined = the call's text alone
    lines = verdict(levels, alone, 1.2, {False: 48, True: 24}, cores=2)
    assert lines[0].startswith("e, finals only: capacity 8 calls (4 per core)") and "MISSED" in lines[0]
    assert "not shown" in lines[1]
    # Under load each call said 'please hold' + 'the line' = alone's text: WER unchanged.
    assert "WER at 8 calls 0.0 % vs 0.0 % alone: unchanged" in lines[0]


def test_verdict_reports_a_wer_change() -> None:
    levels = [_level(8, 0.8, text="please fold")]
    alone = {"e": {s: "please hold the line" for s in range(8)}}
    (line,) = verdict(levels, alone, 1.2, {False: 8, True: 4}, cores=2)
    assert "MET" in line and "25.0 % vs 0.0 % alone: +25.0 points (0/8 transcripts identical)" in line
    assert "25.0 % / 0.0 % (0/8 same)" in markdown_table(levels, alone, 1.2)
    assert "/ - |" in markdown_table(levels, {}, 1.2)  # no reference run: no comparison
    lossy = markdown_table([_level(4, 0.9, lost=1)], {}, 1.2)
    assert "| 7 / 8 (1 prompt without a final) |" in lossy and lossy.endswith("| over |")
