"""``sis-stream convert``, ``vad`` and ``bench`` in-process (signals generated in code)."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sis_stream.audio.codec import ulaw_decode
from sis_stream.audio.formats import AudioFormat, read_wav, wav_bytes
from sis_stream.cli import bench
from sis_stream.cli import vad as vad_cmd
from sis_stream.cli.commands import add_subcommands


def main(argv: list[str]) -> int:
    """In-test stand-in for ``sis_stream.cli.main``."""
    p = argparse.ArgumentParser(prog="sis-stream")
    add_subcommands(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.func(args)


def _bursts(rate_hz: int, spans_s: list[tuple[float, float]], total_s: float, seed: int = 1) -> np.ndarray:
    """Tone-plus-noise bursts (speech-band energy) at `spans_s` over quiet noise, int16."""
    rng = np.random.default_rng(seed)
    n = int(rate_hz * total_s)
    t = np.arange(n) / rate_hz
    x = rng.normal(0, 30, n)
    for a, b in spans_s:
        m = (t >= a) & (t < b)
        x[m] += 8000 * np.sin(2 * np.pi * 440 * t[m]) + 3000 * np.sin(2 * np.pi * 1200 * t[m])
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


SPANS = [(0.5, 1.5), (2.5, 3.2)]


@pytest.fixture
def bursts_wav(tmp_path: Path) -> Path:
    p = tmp_path / "bursts.wav"
    p.write_bytes(wav_bytes(AudioFormat.from_sis("pcm16k16bit"), _bursts(16000, SPANS, 4.0).tobytes()))
    return p


def _one_error_line(err: str, command: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"sis-stream {command}: error: "), err
    return lines[0]


# --- vad -------------------------------------------------------------------------------------------


def test_vad_json_finds_the_bursts(bursts_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Two bursts -> two segments whose onsets and ends sit within two frames + tail of the truth.
    assert main(["vad", str(bursts_wav), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rate_hz"] == 16000 and doc["audio_ms"] == pytest.approx(4000)
    segs = doc["segments"]
    assert len(segs) == 2
    for seg, (a, b) in zip(segs, SPANS):
        assert abs(seg["start_ms"] - a * 1000) <= 30
        assert abs(seg["end_ms"] - b * 1000) <= 30
        assert seg["reason"] == "vad_tail" and seg["detected_ms"] >= seg["end_ms"] + 500
    assert doc["events"] == []  # continuous mode sends no VOICE_* events


def test_vad_sentence_mode_table(bursts_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Sentence mode: one sentence, VOICE_START/VOICE_END events, later audio ignored.
    assert main(["vad", str(bursts_wav), "--mode", "sentence", "--vad-tail", "300"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{bursts_wav}: pcm16k16bit, 4.00 s; mode sentence, vad_head 10000 ms, vad_tail 300 ms")
    assert out[1].split() == ["#", "start", "end", "length", "reason"]
    assert out[2].split()[:2] == ["0", "00:00.500"] and out[2].split()[-1] == "vad_tail"
    assert out[3].startswith("event VOICE_START at 00:00.500")
    assert out[4].startswith("event VOICE_END at 00:01.5")  # end of speech, to the 10 ms frame
    assert out[5].startswith("1 segment(s), speech 1.0")


def test_vad_head_silence_in_sentence_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "quiet.wav"
    p.write_bytes(wav_bytes(AudioFormat.from_sis("pcm8k16bit"), _bursts(8000, [], 2.0).tobytes()))
    assert main(["vad", str(p), "--mode", "sentence", "--vad-head", "1000", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["segments"] == [] and doc["events"][0]["event"] == "EXCEEDED_SILENCE"
    assert doc["events"][0]["timestamp_ms"] == 1000


def test_vad_bad_values_and_inputs(bursts_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vad", str(bursts_wav), "--vad-tail", "5000"]) == 2
    assert "vad_tail" in _one_error_line(capsys.readouterr().err, "vad")
    empty = tmp_path / "e.wav"
    empty.write_bytes(b"")
    assert main(["vad", str(empty)]) == 3
    assert "is empty" in _one_error_line(capsys.readouterr().err, "vad")


def test_vad_raw_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pcm = _bursts(16000, SPANS, 4.0).tobytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm)))
    assert main(["vad", "-", "--audio-format", "pcm16k16bit", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["segments"]) == 2


def test_vad_plot(bursts_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import matplotlib  # noqa: F401  (installed by the test extra)
    png = tmp_path / "vad.png"
    assert main(["vad", str(bursts_wav), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.splitlines()[-1] == f"plot written to {png}"


def test_vad_plot_without_matplotlib_is_a_clear_error(bursts_wav: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(vad_cmd.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["vad", str(bursts_wav), "--plot", str(tmp_path / "x.png")]) == 2
    assert "needs matplotlib" in _one_error_line(capsys.readouterr().err, "vad")
    assert not (tmp_path / "x.png").exists()


# --- bench -----------------------------------------------------------------------------------------


def test_bench_json_rows(capsys: pytest.CaptureFixture[str]) -> None:
    # A bounded run of the G.711 cases: speeds are positive, the ratio is ours / anchor.
    assert main(["bench", "--only", "u-law", "--budget", "0.01", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["backend"] in ("native", "reference")
    assert [r["case"] for r in doc["rows"]] == ["G.711 u-law encode, 8 kHz", "G.711 u-law decode, 8 kHz"]
    for r in doc["rows"]:
        assert r["ours_x_realtime"] > 0
        if r["anchor_x_realtime"] is not None:
            assert r["ratio"] == pytest.approx(r["ours_x_realtime"] / r["anchor_x_realtime"], rel=0.01)


def test_bench_table_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--only", "VAD", "--budget", "0.01"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sis_stream audio core, backend ")
    assert out[2].startswith("VAD 16 kHz, 10 ms frames")
    assert main(["bench", "--only", "nothing-matches"]) == 2
    assert "no benchmark case" in _one_error_line(capsys.readouterr().err, "bench")
    assert main(["bench", "--budget", "0"]) == 2
    capsys.readouterr()


def test_bench_speed_uses_the_best_call() -> None:
    # Calls of 2 s, 1 s, 0.5 s of clock time: the budget of 3.2 s stops it after the third.
    ticks = iter([0.0, 2.0, 2.0, 3.0, 3.0, 3.5])
    assert bench._speed(lambda: None, budget_s=3.2, clock=lambda: next(ticks)) == pytest.approx(
        bench.AUDIO_S / 0.5)


# --- convert ---------------------------------------------------------------------------------------


@pytest.fixture
def transcoder() -> None:
    import sis_stream.audio.transcode  # noqa: F401  (installed by the test extra)


def test_convert_wav_to_ulaw8k_wav(transcoder: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 44.1 kHz stereo PCM -> mono 8 kHz u-law WAV: same duration, the tone survives.
    n = 44100 * 2
    t = np.arange(n) / 44100
    tone = np.round(8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    stereo = np.stack([tone, tone], axis=1).ravel()
    src = tmp_path / "in.wav"
    src.write_bytes(wav_bytes(AudioFormat(44100, "pcm", 2, 2), stereo.tobytes()))
    dst = tmp_path / "out.wav"
    assert main(["convert", str(src), str(dst), "--to", "ulaw8k8bit"]) == 0
    wav = read_wav(dst)
    assert wav.format == AudioFormat.from_sis("ulaw8k8bit")
    assert wav.duration_ms == pytest.approx(2000, abs=5)
    pcm = np.frombuffer(ulaw_decode(wav.data), "<i2").astype(np.float64)
    spec = np.abs(np.fft.rfft(pcm[800:-800]))
    freqs = np.fft.rfftfreq(len(pcm) - 1600, 1 / 8000)
    assert abs(freqs[np.argmax(spec)] - 440) < 2
    assert "-> " + str(dst) + " (ulaw8k8bit, WAV, 16000 bytes)" in capsys.readouterr().err


def test_convert_raw_output_by_extension(transcoder: None, tmp_path: Path) -> None:
    src = tmp_path / "in.wav"
    src.write_bytes(wav_bytes(AudioFormat.from_sis("pcm16k16bit"), _bursts(16000, SPANS, 1.0).tobytes()))
    dst = tmp_path / "out.alaw"
    assert main(["convert", str(src), str(dst), "--to", "alaw8k8bit", "-q"]) == 0
    assert len(dst.read_bytes()) == pytest.approx(8000, abs=8)  # raw codes, no header


def test_convert_same_format_is_a_copy(tmp_path: Path) -> None:
    # No Transcoder is needed when the formats already match.
    pcm = _bursts(8000, SPANS, 1.0).tobytes()
    src = tmp_path / "in.raw"
    src.write_bytes(pcm)
    dst = tmp_path / "out.wav"
    assert main(["convert", str(src), str(dst), "--audio-format", "pcm8k16bit", "--to", "pcm8k16bit", "-q"]) == 0
    assert read_wav(dst).data == pcm


def test_convert_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVE")
    assert main(["convert", str(bad), str(tmp_path / "o.wav"), "--to", "ulaw8k8bit"]) == 3
    assert "no fmt chunk" in _one_error_line(capsys.readouterr().err, "convert")
    good = tmp_path / "g.raw"
    good.write_bytes(b"\x00\x00" * 800)
    assert main(["convert", str(good), str(tmp_path / "nodir" / "o.wav"), "--audio-format", "pcm8k16bit",
                 "--to", "pcm8k16bit"]) == 3
    assert "cannot write" in _one_error_line(capsys.readouterr().err, "convert")
    with pytest.raises(SystemExit) as info:
        main(["convert", str(good), "o.wav", "--to", "mp3"])
    assert info.value.code == 2
