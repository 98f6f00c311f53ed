"""The CLI as a subprocess (``python -m sis_stream ...``) against the embedded local server.

The CLI must register ``transcribe`` (``sis_stream.cli.commands.add_subcommands``): if it stops
doing so, these tests fail (they are never skipped for it). Loopback only: the embedded server
binds 127.0.0.1. Every wait is bounded by a generous deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sis_stream.audio.formats import AudioFormat, wav_bytes


def _subcommands() -> set[str]:
    from sis_stream.cli.main import build_parser

    return {name for action in build_parser()._actions
            if isinstance(action, argparse._SubParsersAction) for name in action.choices}


def test_cli_registers_transcribe() -> None:
    # The feature under test: a CLI without it fails here (and below), it is not skipped.
    assert "transcribe" in _subcommands(), (
        "sis_stream.cli does not register 'transcribe': wire "
        "sis_stream.cli.commands.add_subcommands into the top-level parser")


NONE_ENGINE = ["--engine", "english_16k_common=none"]
SPANS = [(0.5, 1.5), (2.5, 3.2)]


def _bursts(spans: list[tuple[float, float]], seconds: float, path: Path) -> Path:
    """Tone bursts at `spans` over quiet noise, 16 kHz PCM WAV (segments for the none engine)."""
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * 16000)) / 16000
    x = rng.normal(0, 30, len(t))
    for a, b in spans:
        m = (t >= a) & (t < b)
        x[m] += 8000 * np.sin(2 * np.pi * 440 * t[m])
    path.write_bytes(wav_bytes(AudioFormat.from_sis("pcm16k16bit"), np.round(x).astype(np.int16).tobytes()))
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIS_") or k.startswith("SIS_STREAM_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def sis(*argv: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "sis_stream", *argv], input=stdin, capture_output=True,
                          timeout=timeout, env=_env(), check=False)


@pytest.fixture(scope="module")
def bursts_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tone bursts over quiet noise, 16 kHz PCM (segments for the none engine)."""
    return _bursts(SPANS, 4.0, tmp_path_factory.mktemp("sub") / "bursts.wav")


def test_transcribe_file_jsonl(bursts_wav: Path) -> None:
    r = sis("transcribe", str(bursts_wav), *NONE_ENGINE, "--format", "jsonl")
    assert r.returncode == 0, r.stderr.decode()
    segs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [s["index"] for s in segs] == [0, 1]
    assert abs(segs[0]["start_ms"] - 500) <= 50 and abs(segs[1]["end_ms"] - 3200) <= 50
    assert "2 segments" in r.stderr.decode()


def test_transcribe_stdin_pipe(bursts_wav: Path) -> None:
    r = sis("transcribe", "-", *NONE_ENGINE, "--format", "json", stdin=bursts_wav.read_bytes())
    assert r.returncode == 0, r.stderr.decode()
    doc = json.loads(r.stdout)
    assert doc["input"] == "stdin" and len(doc["segments"]) == 2


@pytest.mark.parametrize(("blob", "msg"), [(b"", "is empty"), (b"RIFF\x10\x00\x00\x00WAVEfmt ", "truncated")])
def test_bad_file_exit_3_one_line(tmp_path: Path, blob: bytes, msg: str) -> None:
    p = tmp_path / "bad.wav"
    p.write_bytes(blob)
    r = sis("transcribe", str(p))
    assert r.returncode == 3
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sis-stream transcribe: error:") and msg in lines[0]


def test_missing_credentials_exit_4(bursts_wav: Path) -> None:
    r = sis("transcribe", str(bursts_wav), "--region", "cn-north-4", "--ak", "AK_NOT_PRINTED")
    assert r.returncode == 4
    err = r.stderr.decode()
    assert len(err.strip().splitlines()) == 1 and "AK_NOT_PRINTED" not in err


def test_ctrl_c_keeps_the_first_final(tmp_path: Path) -> None:
    # SIGINT after the first final: END cancel, the final is kept, exit 130. The second burst
    # ends 20 s of real time after the first one, so a slow machine has ample time to deliver
    # the signal before a second final could exist (event-driven: no fixed sleeps).
    wav = _bursts([(0.5, 1.5), (21.0, 22.0)], 23.0, tmp_path / "far.wav")
    proc = subprocess.Popen([sys.executable, "-m", "sis_stream", "transcribe", str(wav), *NONE_ENGINE,
                             "--speed", "realtime", "--format", "jsonl"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no final within 60 s"
        first = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    assert json.loads(first)["index"] == 0 and out == b""
    assert "interrupted" in err.decode().strip().splitlines()[-1]


def test_vad_and_bench_run(bursts_wav: Path) -> None:
    r = sis("vad", str(bursts_wav), "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["segments"]) == 2
    r = sis("bench", "--only", "u-law encode", "--budget", "0.01")
    assert r.returncode == 0 and "G.711 u-law encode" in r.stdout.decode()


def test_convert_runs(bursts_wav: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.wav"
    r = sis("convert", str(bursts_wav), str(out), "--to", "ulaw8k8bit")
    assert r.returncode == 0, r.stderr.decode()
    assert out.read_bytes()[:4] == b"RIFF"


@pytest.mark.slow
@pytest.mark.engine
def test_demo_recognises_half_the_words() -> None:
    # faster-whisper and espeak-ng (espeakng-loader) come with the test extra: no skip guards.
    r = sis("demo", "--json", timeout=300)  # a bound on a hung demo, not a speed claim
    assert r.returncode == 0, r.stderr.decode()
    doc = json.loads(r.stdout)
    assert doc["wer"] <= 0.5, doc
    assert doc["phone_format"] == "ulaw8k8bit" and doc["session_format"] == "pcm16k16bit"
