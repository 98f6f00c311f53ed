"""``sis-stream demo`` in-process: espeak-ng -> 8 kHz u-law -> embedded server (whisper) -> WER."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import espeakng_loader  # noqa: F401  (installed by the test extra)
import faster_whisper  # noqa: F401  (installed by the test extra)
import pytest
from helpers import run_cli

import sis_stream.audio.transcode  # noqa: F401  (installed by the test extra)
from sis_stream.audio.formats import AudioFormat, read_wav
from sis_stream.cli import transcribe
from sis_stream.cli.demo import DEFAULT_TEXT
from sis_stream.server.embedded import embedded_server

pytestmark = [pytest.mark.slow, pytest.mark.engine]


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch, whisper_registry: Any) -> None:
    monkeypatch.setattr(transcribe, "embedded_server", lambda **kw: embedded_server(registry=whisper_registry))


def test_demo_recognises_at_least_half_the_words(shared: None, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # The main job end to end: synthesised speech carried as 8 kHz u-law, upsampled to the
    # english_16k_common session by the client, recognised by whisper on the embedded server.
    save = tmp_path / "phone.wav"
    assert run_cli(["demo", "--json", "--save", str(save)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["text"] == DEFAULT_TEXT
    assert doc["wer"] <= 0.5, doc["recognised"]
    assert doc["reference_words"] == len(DEFAULT_TEXT.split())
    wav = read_wav(save)
    assert wav.format == AudioFormat.from_sis("ulaw8k8bit")
    assert wav.duration_ms == pytest.approx(doc["speech_s"] * 1000, abs=20)
    assert doc["segments"] and doc["segments"][-1]["end_ms"] <= wav.duration_ms + 10


def test_demo_report_lines(shared: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["demo", "--text", "Thank you very much for your help."]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("synthesised ") and "8 kHz u-law" in out[0]
    report = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in out
              if line.split(":", 1)[0].strip() in ("input text", "recognised", "WER", "session")}
    assert report["input text"] == "Thank you very much for your help."
    assert report["WER"].endswith("of 7 words)")
    assert float(report["WER"].split("%")[0]) <= 50
    assert report["session"].startswith("1 segment")
