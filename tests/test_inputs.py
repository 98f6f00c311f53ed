"""Inputs users actually have (issue 15 §2): compressed files through PyAV, 24-bit / float WAV,
odd sample rates, containers refused as raw audio, several inputs in one call, stereo split,
and ``convert`` choosing its container from the output extension.

Test audio is made in code from real recorded speech (``realspeech.asterisk_prompts``), encoded
with PyAV; the embedded server runs on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import struct
import sys
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from helpers import cli_parser, run_cli
from realspeech import asterisk_prompts

from sis_stream.audio.formats import AudioFormat, wav_bytes
from sis_stream.cli import transcribe
from sis_stream.cli._common import open_audio
from sis_stream.server.embedded import embedded_server
from sis_stream.text import wer

PCM8K = AudioFormat.from_sis("pcm8k16bit")


def _encode(path: Path, pcm: np.ndarray, rate: int, fmt: str, codec: str,
            sample_fmt: str = "s16", channels: int = 1) -> Path:
    """Encode int16 samples (n,) or (n, channels) with PyAV."""
    layout = "mono" if channels == 1 else "stereo"
    out = av.open(str(path), "w", format=fmt)
    stream = out.add_stream(codec, rate=rate, layout=layout)
    if codec in ("libmp3lame", "libopus", "aac"):
        stream.bit_rate = 32000 * channels  # the 8 kbit/s default mangles speech
    elif codec == "libopencore_amrnb":
        stream.bit_rate = 12200
    inter = pcm.reshape(-1, channels)
    for i in range(0, len(inter), rate):
        block = inter[i : i + rate]
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1).copy(), format="s16", layout=layout)
        frame.rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    return path


@pytest.fixture(scope="module")
def prompts() -> tuple[Any, Any]:
    """Two real telephone prompts (8 kHz) of at least 6 words."""
    ps = [u for u in asterisk_prompts(6) if 3.0 <= u.seconds <= 7.0]
    pad = np.zeros(4800, np.int16)  # 0.6 s of silence after the speech, as on a call
    return tuple(dataclasses.replace(u, pcm=np.concatenate([u.pcm, pad])) for u in ps[:2])


@pytest.fixture
def server_count(monkeypatch: pytest.MonkeyPatch, whisper_registry: Any) -> list[int]:
    """The CLI's embedded server on the shared Whisper registry; counts the servers started."""
    for var in transcribe.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    count = [0]

    def factory(**kwargs: Any) -> Any:
        count[0] += 1
        return embedded_server(registry=whisper_registry)

    monkeypatch.setattr(transcribe, "embedded_server", factory)
    return count


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


# --- decoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ext", "fmt", "codec", "rate"), [
    (".mp3", "mp3", "libmp3lame", 8000),
    (".ogg", "ogg", "libopus", 16000),
    (".flac", "flac", "flac", 8000),
    (".m4a", "ipod", "aac", 16000),
    (".amr", "amr", "libopencore_amrnb", 8000),
])
def test_compressed_files_decode(ext: str, fmt: str, codec: str, rate: int, prompts: Any,
                                 tmp_path: Path) -> None:
    u = prompts[0]
    pcm = u.pcm if rate == 8000 else np.repeat(u.pcm, 2)  # 16 kHz: crude but real speech
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg has no {codec} encoder")
    path = _encode(tmp_path / f"call{ext}", pcm, rate, fmt, codec)
    src = open_audio(str(path))
    assert src.format.encoding == "pcm" and src.format.channels == 1
    assert abs(src.total_ms - 1000 * len(pcm) / rate) < 150  # codec padding only
    if ext == ".flac":  # lossless: the same samples
        assert np.array_equal(np.frombuffer(src.data, "<i2"), pcm)


def _wav_header(tag: int, channels: int, rate: int, bits: int, n_bytes: int) -> bytes:
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 36 + n_bytes) + b"WAVE" + b"fmt "
            + struct.pack("<IHHIIHH", 16, tag, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", n_bytes))


def test_24bit_and_float_wav(prompts: Any, tmp_path: Path) -> None:
    pcm = prompts[0].pcm
    x24 = pcm.astype(np.int32) << 8
    b24 = b"".join(int(v).to_bytes(3, "little", signed=True) for v in x24[:8000])
    p24 = tmp_path / "s24.wav"
    p24.write_bytes(_wav_header(1, 1, 8000, 24, len(b24)) + b24)
    f32 = (pcm[:8000].astype(np.float32) / 32768).astype("<f4").tobytes()
    pf = tmp_path / "f32.wav"
    pf.write_bytes(_wav_header(3, 1, 8000, 32, len(f32)) + f32)
    for path in (p24, pf):
        src = open_audio(str(path))
        assert src.format == PCM8K
        assert np.abs(np.frombuffer(src.data, "<i2").astype(int) - pcm[:8000]).max() <= 1


@pytest.mark.parametrize("rate", [12000, 96000])
def test_any_sample_rate(rate: int, prompts: Any, tmp_path: Path) -> None:
    # 12 and 96 kHz are not rates the streaming resampler takes: FFmpeg brings them to 16 kHz.
    from scipy.signal import resample_poly

    pcm = prompts[0].pcm
    up = np.round(resample_poly(pcm.astype(np.float64), rate // 1000, 8)).clip(-32768, 32767).astype(np.int16)
    path = tmp_path / f"r{rate}.wav"
    path.write_bytes(wav_bytes(AudioFormat(rate, "pcm", 2), up.tobytes()))
    src = open_audio(str(path))
    assert src.format.rate_hz == 16000
    back = resample_poly(np.frombuffer(src.data, "<i2").astype(np.float64), 1, 2)
    assert _corr(back, pcm) > 0.9


def test_without_pyav_one_line_names_the_codecs_extra(prompts: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = _encode(tmp_path / "call.mp3", prompts[0].pcm, 8000, "mp3", "libmp3lame")
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    monkeypatch.setattr(transcribe, "embedded_server", None)  # never reached
    assert run_cli(["transcribe", str(path)]) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "MP3" in err and "sis-stream[codecs]" in err and "Traceback" not in err


def test_raw_input_that_is_a_container_is_refused(prompts: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(transcribe, "embedded_server", None)
    mp3 = _encode(tmp_path / "call.mp3", prompts[0].pcm, 8000, "mp3", "libmp3lame")
    flac = _encode(tmp_path / "call.flac", prompts[0].pcm, 8000, "flac", "flac")
    wav = tmp_path / "call.wav"
    wav.write_bytes(wav_bytes(PCM8K, prompts[0].pcm.tobytes()))
    for path, what in ((mp3, "MP3"), (flac, "FLAC"), (wav, "WAV")):
        assert run_cli(["transcribe", str(path), "--audio-format", "ulaw8k8bit"]) == 3
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and what in err and "drop --audio-format" in err
    # the same on standard input
    for extra in (["--audio-format", "ulaw8k8bit"], []):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(mp3.read_bytes())))
        assert run_cli(["transcribe", "-", *extra]) == 3
        err = capsys.readouterr().err
        assert "stdin looks like an MP3 file" in err and "Traceback" not in err


# --- the main job on these inputs ----------------------------------------------------------------


@pytest.mark.slow
def test_batch_of_files_and_a_directory_one_server(prompts: Any, tmp_path: Path,
                                                   server_count: list[int]) -> None:
    a, b = prompts
    d = tmp_path / "calls"
    d.mkdir()
    (tmp_path / "a.wav").write_bytes(wav_bytes(PCM8K, a.pcm.tobytes()))
    _encode(tmp_path / "b.mp3", b.pcm, 8000, "mp3", "libmp3lame")
    _encode(d / "c.ogg", a.pcm, 8000, "ogg", "libopus")
    (d / "notes.txt").write_text("not audio")
    out = tmp_path / "out"
    args = cli_parser().parse_args(["transcribe", str(tmp_path / "a.wav"), str(tmp_path / "b.mp3"),
                                 str(d), "-o", str(out), "--format", "jsonl"])
    err = _Tty()
    code = asyncio.run(transcribe.transcribe_async(args, stderr=err))
    assert code == 0, err.getvalue()
    assert server_count[0] == 1  # one embedded server, one model load for the batch
    assert sorted(p.name for p in out.iterdir()) == ["a.jsonl", "b.jsonl", "c.jsonl"]
    for name, utt in (("a", a), ("b", b), ("c", a)):
        segs = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        assert wer(utt.text, " ".join(s["text"] for s in segs)) < 0.5, (name, segs)
    bar = err.getvalue()
    assert "3/3 files" in bar and "[####################]" in bar and "\r" in bar
    # -q: no bar at all
    args = cli_parser().parse_args(["transcribe", str(tmp_path / "a.wav"), str(tmp_path / "b.mp3"),
                                 "-o", str(out), "-q"])
    err = _Tty()
    assert asyncio.run(transcribe.transcribe_async(args, stderr=err)) == 0
    assert err.getvalue() == ""
    assert (out / "a.txt").read_text().strip()


def test_batch_refuses_clashing_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(transcribe, "embedded_server", None)
    (tmp_path / "x").mkdir()
    for p in (tmp_path / "a.wav", tmp_path / "x" / "a.wav"):
        p.write_bytes(wav_bytes(PCM8K, np.zeros(800, np.int16).tobytes()))
    assert run_cli(["transcribe", str(tmp_path / "a.wav"), str(tmp_path / "x" / "a.wav"),
                 "-o", str(tmp_path / "out")]) == 2
    assert "would both write" in capsys.readouterr().err
    assert run_cli(["transcribe", str(tmp_path / "a.wav"), "-"]) == 2
    assert "cannot be combined" in capsys.readouterr().err


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.slow
def test_stereo_split_labels_agent_and_user(prompts: Any, tmp_path: Path,
                                            server_count: list[int]) -> None:
    a, b = prompts
    n = max(len(a.pcm), len(b.pcm)) + 8000
    left = np.zeros(n, np.int16)
    right = np.zeros(n, np.int16)
    left[: len(a.pcm)] = a.pcm
    right[4000 : 4000 + len(b.pcm)] = b.pcm
    stereo = np.stack([left, right], axis=1).reshape(-1)
    path = _encode(tmp_path / "call.mp3", stereo, 8000, "mp3", "libmp3lame", channels=2)
    out = tmp_path / "call.json"
    assert run_cli(["transcribe", str(path), "--channels", "split", "--format", "json",
                 "-o", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    by = {"AGENT": [], "USER": []}
    for s in doc["segments"]:
        by[s["speaker"]].append(s["text"])
    assert wer(a.text, " ".join(by["AGENT"])) < 0.5, doc
    assert wer(b.text, " ".join(by["USER"])) < 0.5, doc
    assert doc["channels"] == "split"
    # mixed (the default): one voice over the other, no labels
    assert run_cli(["transcribe", str(path), "--format", "json", "-o", str(out), "-q"]) == 0
    assert all("speaker" not in s for s in json.loads(out.read_text())["segments"])


# --- convert: the container from the extension -------------------------------------------------


@pytest.mark.parametrize(("ext", "codec"), [(".flac", "flac"), (".ogg", "opus"), (".mp3", "mp3")])
def test_convert_writes_the_extensions_container(ext: str, codec: str, prompts: Any,
                                                 tmp_path: Path) -> None:
    src = tmp_path / "in.wav"
    src.write_bytes(wav_bytes(PCM8K, prompts[0].pcm.tobytes()))
    dst = tmp_path / f"out{ext}"
    assert run_cli(["convert", str(src), str(dst), "--to", "pcm16k16bit", "-q"]) == 0
    with av.open(str(dst)) as c:
        st = c.streams.audio[0]
        assert st.codec_context.name.startswith(codec)  # mp3 decodes with mp3float
        assert st.codec_context.sample_rate in (16000, 48000)  # Opus decodes at 48 kHz
    back = open_audio(str(dst))
    assert abs(back.total_ms - prompts[0].seconds * 1000) < 150


def test_convert_refuses_unknown_or_mismatched_extensions(prompts: Any, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.wav"
    src.write_bytes(wav_bytes(PCM8K, prompts[0].pcm.tobytes()))
    for name, to, msg in (("out.xyz", "ulaw8k8bit", "cannot tell the output container"),
                          ("out", "ulaw8k8bit", "cannot tell the output container"),
                          ("out.ul", "pcm8k16bit", "holds ulaw samples")):
        assert run_cli(["convert", str(src), str(tmp_path / name), "--to", to]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / name).exists()
    assert run_cli(["convert", str(src), str(tmp_path / "o.ul"), "--to", "ulaw8k8bit", "-q"]) == 0
    assert len((tmp_path / "o.ul").read_bytes()) == len(prompts[0].pcm)


def test_vad_reads_compressed_input(prompts: Any, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = _encode(tmp_path / "call.ogg", prompts[0].pcm, 8000, "ogg", "libopus")
    assert run_cli(["vad", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["segments"] and abs(doc["audio_ms"] - prompts[0].seconds * 1000) < 150


@pytest.mark.slow
def test_batch_goes_on_after_a_bad_input(prompts: Any, tmp_path: Path, server_count: list[int],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.wav").write_bytes(wav_bytes(PCM8K, prompts[0].pcm.tobytes()))
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (tmp_path / "c.wav").write_bytes(wav_bytes(PCM8K, prompts[1].pcm.tobytes()))
    out = tmp_path / "out"
    assert run_cli(["transcribe", str(tmp_path), "-o", str(out)]) == 3
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "broken.wav" in errors[0] and "Traceback" not in err
    assert "2 of 3 input(s) transcribed, 1 failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "c.txt"]
    assert server_count[0] == 1
