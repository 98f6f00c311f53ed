"""``sis-stream transcribe`` in-process against the embedded local server (loopback only).

The commands are driven through a small argparse parser built with ``add_subcommands`` (the
same registration ``sis_stream.cli`` uses), so these tests do not depend on the top-level CLI.
The embedded server factory is pointed at one shared engine registry per engine so the Whisper
model is loaded once per module.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import cli_parser, run_cli

from sis_stream.audio.formats import AudioFormat, wav_bytes
from sis_stream.cli import transcribe
from sis_stream.cli._common import exit_code_for, open_audio
from sis_stream.cli.output import parse_srt, parse_vtt, segments_from_dicts
from sis_stream.errors import SisAuthError
from sis_stream.server.embedded import embedded_server
from sis_stream.text import wer

SENTENCES = ("Please call me back tomorrow morning.", "My phone number has changed since last year.")
PCM16K = AudioFormat.from_sis("pcm16k16bit")


def _speech_16k(text: str) -> np.ndarray:
    from scipy.signal import resample_poly

    from sis_stream.engines.espeak import synthesize

    syn = synthesize(text)
    assert syn.rate_hz == 22050
    return np.round(resample_poly(syn.samples.astype(np.float64), 320, 441)).astype(np.int16)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """Two espeak-ng sentences with a 1 s pause, 16 kHz PCM WAV; returns (path, seconds)."""
    import espeakng_loader  # noqa: F401  (installed by the test extra)
    gap = np.zeros(16000, np.int16)
    pcm = np.concatenate([gap[:4000], _speech_16k(SENTENCES[0]), gap, _speech_16k(SENTENCES[1]),
                          gap[:8000]])
    path = tmp_path_factory.mktemp("audio") / "two_sentences.wav"
    path.write_bytes(wav_bytes(PCM16K, pcm.tobytes()))
    return path, len(pcm) / 16000


@pytest.fixture(scope="module")
def registries() -> Any:
    from sis_stream.engines.registry import EngineRegistry

    # chinese_16k_common on the English-only tiny.en: the server answers SIS.0032 (a server error)
    mandarin_on_tiny = "chinese_16k_common=whisper"
    regs = {"whisper": EngineRegistry([mandarin_on_tiny]),
            "none": EngineRegistry(["english_16k_common=none", mandarin_on_tiny])}
    yield regs
    for r in regs.values():
        r.close()


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, registries: Any, request: pytest.FixtureRequest) -> str:
    """Route the CLI's embedded server to a shared registry: ``@pytest.mark.parametrize('engine',
    ['none'], indirect=True)``; default whisper."""
    name = getattr(request, "param", "whisper")
    if name == "whisper":
        import faster_whisper  # noqa: F401  (installed by the test extra)
    for var in transcribe.ENV_VARS:
        monkeypatch.delenv(var, raising=False)

    def factory(**kwargs: Any) -> Any:
        return embedded_server(registry=registries[name])

    monkeypatch.setattr(transcribe, "embedded_server", factory)
    return name


def _one_error_line(err: str, command: str = "transcribe") -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sis-stream {command}: error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]


# --- the main job --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.engine
def test_transcribe_wav_to_json_recognises_the_sentences(
    engine: str, speech_wav: tuple[Path, float], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # The whole path: WAV -> embedded server (whisper) -> finals on the audio clock -> JSON file.
    path, seconds = speech_wav
    out = tmp_path / "t.json"
    assert run_cli(["transcribe", str(path), "--format", "json", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert wer(" ".join(SENTENCES), doc["text"]) <= 0.5, doc["text"]
    segs = segments_from_dicts(doc["segments"])
    assert len(segs) == 2
    assert 0 <= segs[0].start_ms < segs[0].end_ms <= segs[1].start_ms < segs[1].end_ms <= seconds * 1000
    assert doc["audio_ms"] == pytest.approx(seconds * 1000, abs=100)
    assert doc["summary"]["segments"] == 2 and doc["summary"]["ttfs_s"] is not None
    assert doc["endpoint"] == "embedded local server" and doc["session_format"] == "pcm16k16bit"
    err = capsys.readouterr().err
    assert "2 segments" in err and "TTFS" in err and "lost 0 ms" in err  # the summary line


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_srt_and_vtt_parse_back(
    engine: str, speech_wav: tuple[Path, float], tmp_path: Path, fmt: str,
) -> None:
    path, seconds = speech_wav
    out = tmp_path / f"t.{fmt}"
    assert run_cli(["transcribe", str(path), "--format", fmt, "-o", str(out), "-q"]) == 0
    cues = (parse_srt if fmt == "srt" else parse_vtt)(out.read_text())
    assert len(cues) == 2
    assert 0 <= cues[0].start_ms < cues[0].end_ms <= cues[1].start_ms < cues[1].end_ms <= seconds * 1000
    assert wer(" ".join(SENTENCES), " ".join(c.text for c in cues)) <= 0.5


@pytest.mark.parametrize("engine", ["none"], indirect=True)
def test_txt_and_jsonl_to_stdout(engine: str, speech_wav: tuple[Path, float],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    # The none engine gives real segment times with empty text: one line per segment either way.
    path, seconds = speech_wav
    assert run_cli(["transcribe", str(path), "--format", "txt"]) == 0
    assert capsys.readouterr().out == "\n\n"
    assert run_cli(["transcribe", str(path), "--format", "jsonl"]) == 0
    segs = segments_from_dicts(json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert [s.index for s in segs] == [0, 1] and segs[1].end_ms <= seconds * 1000


@pytest.mark.parametrize("engine", ["none"], indirect=True)
def test_stdin_wav(engine: str, speech_wav: tuple[Path, float], monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    # `-` reads a WAV from stdin as it arrives; the none engine still gives real segment times.
    path, seconds = speech_wav
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
    assert run_cli(["transcribe", "-", "--format", "jsonl"]) == 0
    cap = capsys.readouterr()
    segs = segments_from_dicts(json.loads(line) for line in cap.out.splitlines())
    assert len(segs) == 2 and all(s.text == "" for s in segs)
    assert segs[1].end_ms <= seconds * 1000
    assert "stdin: pcm16k16bit" in cap.err


@pytest.mark.parametrize("engine", ["none"], indirect=True)
def test_stdin_raw_ulaw_with_audio_format(engine: str, speech_wav: tuple[Path, float],
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # Raw u-law at 16 kHz goes on the wire as is (ulaw16k8bit: the property's rate).
    from sis_stream.audio.codec import ulaw_encode

    path, _ = speech_wav
    pcm = open_audio(str(path)).data
    assert pcm is not None
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(ulaw_encode(pcm))))
    assert run_cli(["transcribe", "-", "--audio-format", "ulaw16k8bit", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["session_format"] == "ulaw16k8bit" and doc["input"] == "stdin"
    assert len(doc["segments"]) == 2


@pytest.mark.parametrize("engine", ["none"], indirect=True)
def test_truncated_wav_on_stdin_keeps_the_transcript_and_exits_3(
    engine: str, speech_wav: tuple[Path, float], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = speech_wav
    data = path.read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data[: len(data) * 2 // 3])))
    assert run_cli(["transcribe", "-", "--format", "jsonl"]) == 3
    cap = capsys.readouterr()
    assert len(cap.out.splitlines()) >= 1  # the first sentence was recognised and written
    assert "truncated WAV on stdin" in cap.err.splitlines()[-1]


# --- input errors: exit 3, one clear line --------------------------------------------------------


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = wav_bytes(PCM16K, np.zeros(1600, np.int16).tobytes())
    float_tag = bytearray(good)
    struct.pack_into("<H", float_tag, 20, 0x1234)  # a tag neither we nor FFmpeg decode
    files = {
        "truncated": (good[:-100], "truncated WAV"),
        "format_tag": (bytes(float_tag), "unsupported WAV format tag 0x1234"),
        "empty": (b"", "is empty (0 bytes)"),
        "not_wav": (b"\x01\x02" * 100, "not a WAV file"),
        "no_data": (good[:44 - 8], "no data chunk"),
        "empty_data": (wav_bytes(PCM16K, b""), "holds no audio"),
    }
    out = {}
    for name, (blob, msg) in files.items():
        p = tmp_path / f"{name}.wav"
        p.write_bytes(blob)
        out[name] = (p, msg)
    return out


@pytest.mark.parametrize("case", ["truncated", "format_tag", "empty", "not_wav", "no_data", "empty_data"])
def test_bad_files_exit_3_with_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Input is checked before any server starts or any credential is looked at.
    monkeypatch.setattr(transcribe, "embedded_server", None)  # would fail if reached
    path, msg = _bad_inputs(tmp_path)[case]
    assert run_cli(["transcribe", str(path)]) == 3
    line = _one_error_line(capsys.readouterr().err)
    assert msg in line


def test_missing_and_directory_inputs_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["transcribe", str(tmp_path / "nope.wav")]) == 3
    assert "cannot read" in _one_error_line(capsys.readouterr().err)
    assert run_cli(["transcribe", str(tmp_path)]) == 3  # a directory is a batch: here an empty one
    assert "holds no audio files" in _one_error_line(capsys.readouterr().err)


def test_empty_stdin_exits_3(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert run_cli(["transcribe", "-"]) == 3
    assert "not a RIFF/WAVE stream" in _one_error_line(capsys.readouterr().err)


def test_debug_adds_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    assert run_cli(["transcribe", str(p), "--debug"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("sis-stream transcribe: error:")


# --- remote endpoint: credentials ------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in transcribe.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("argv", "env", "msg"),
    [
        (["--region", "cn-north-4"], {}, "give --ak/--sk or --token"),
        (["--endpoint", "wss://sis.example.invalid"], {"SIS_PROJECT_ID": "p"}, "give --ak/--sk or --token"),
        (["--region", "cn-north-4", "--ak", "AKVALUE1234"], {"SIS_PROJECT_ID": "p"}, "--sk is required"),
        ([], {"SIS_REGION": "cn-north-4", "SIS_AK": "AKVALUE1234", "SIS_PROJECT_ID": "p"}, "SIS_SK is not set"),
        (["--region", "cn-north-4", "--token", "TOKENVALUE99"], {}, "missing project id"),
    ],
)
def test_missing_credentials_for_a_remote_endpoint_exit_4(
    argv: list[str], env: dict[str, str], msg: str, tmp_path: Path, clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(wav_bytes(PCM16K, np.zeros(1600, np.int16).tobytes()))
    for k, v in env.items():
        clean_env.setenv(k, v)
    assert run_cli(["transcribe", str(wav), *argv]) == 4
    line = _one_error_line(capsys.readouterr().err)
    assert msg in line
    assert "AKVALUE1234" not in line and "TOKENVALUE99" not in line  # never printed


def test_resolve_target_rules(clean_env: pytest.MonkeyPatch) -> None:
    p = cli_parser()

    def target(*argv: str, **env: str) -> transcribe.Target:
        return transcribe.resolve_target(p.parse_args(["transcribe", "x.wav", *argv]), env)

    assert target().kind == "embedded"
    t = target(SIS_REGION="cn-north-4", SIS_AK="a", SIS_SK="b", SIS_PROJECT_ID="p")
    assert (t.kind, t.endpoint, t.project_id) == ("remote", "wss://sis-ext.cn-north-4.myhuaweicloud.com", "p")
    assert "b" not in repr(t)
    assert target("--local", SIS_REGION="cn-north-4").kind == "embedded"
    t = target("--endpoint", "wss://h.example:8443", "--project-id", "p", "--token", "tok", SIS_AK="a")
    assert t.endpoint == "wss://h.example:8443" and type(t.auth).__name__ == "Token"
    for argv, code, msg in [
        (("--region", "North Four"), 2, "region must look like"),
        (("--endpoint", "ftp://x"), 2, "endpoint must be a wss://"),
        (("--region", "cn-north-4", "--ak", "a", "--sk", "b", "--token", "t"), 2, "not both"),
        (("--local", "--region", "cn-north-4"), 2, "--local cannot"),
    ]:
        with pytest.raises(transcribe.CliError, match=msg) as info:
            target(*argv)
        assert info.value.exit_code == code


async def test_remote_endpoint_with_aksk_and_a_rejected_key(
    registries: Any, speech_wav: tuple[Path, float], clean_env: pytest.MonkeyPatch,
) -> None:
    # The remote path (AK/SK-signed upgrade) against a loopback server that checks signatures:
    # right key -> transcript; wrong SK -> SisAuthError, which the CLI maps to exit 4.
    path, _ = speech_wav
    p = cli_parser()
    async with embedded_server(registry=registries["none"]) as srv:
        base = ["transcribe", str(path), "--endpoint", srv.url, "--project-id", srv.project_id,
                "--format", "jsonl", "-q"]
        out = io.StringIO()
        args = p.parse_args([*base, "--ak", srv.auth.ak, "--sk", srv.auth.sk])
        assert await transcribe.transcribe_async(args, stdout=out, stderr=io.StringIO()) == 0
        assert len(out.getvalue().splitlines()) == 2
        args = p.parse_args([*base, "--ak", srv.auth.ak, "--sk", "wrong-secret-key"])
        with pytest.raises(SisAuthError) as info:
            await transcribe.transcribe_async(args, stdout=io.StringIO(), stderr=io.StringIO())
        assert exit_code_for(info.value) == 4


async def test_embedded_keys_are_shaped_like_huaweis(registries: Any) -> None:
    # 20-character AK, 40-character SK of letters and digits: an SK starting with "-" would
    # be taken for an option on a command line (`--sk -x...`), as happened with token_urlsafe.
    async with embedded_server(registry=registries["none"]) as srv:
        ak, sk = srv.auth.ak, srv.auth.sk
    assert len(ak) == 20 and ak.isalnum()
    assert len(sk) == 40 and sk.isascii() and sk.isalnum()


# --- server errors, usage errors, Ctrl-C ---------------------------------------------------------


@pytest.mark.parametrize("engine", ["none"], indirect=True)
def test_server_error_exits_5(engine: str, speech_wav: tuple[Path, float],
                              capsys: pytest.CaptureFixture[str]) -> None:
    # The bundled English-only model cannot serve Mandarin: the server answers an ERROR.
    path, _ = speech_wav
    assert run_cli(["transcribe", str(path), "--property", "chinese_16k_common", "-q"]) == 5
    assert "SIS.0032" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["--vad-tail", "99999"], "vad_tail"),
        (["--frame-ms", "0"], "--frame-ms must be > 0"),
    ],
)
def test_bad_option_values_exit_2(argv: list[str], msg: str, speech_wav: tuple[Path, float],
                                  clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch, registries: Any) -> None:
    monkeypatch.setattr(transcribe, "embedded_server",
                        lambda **kw: embedded_server(registry=registries["none"]))
    path, _ = speech_wav
    assert run_cli(["transcribe", str(path), *argv]) == 2
    assert msg in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv", [["--speed", "slow"], ["--format", "docx"], ["--audio-format", "mp3"]])
def test_argparse_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(["transcribe", "x.wav", *argv])
    assert info.value.code == 2


def test_speed_arg() -> None:
    assert transcribe.speed_arg("max") is None
    assert transcribe.speed_arg("realtime") == "realtime"
    assert transcribe.speed_arg("X4") == "x4"
    with pytest.raises(argparse.ArgumentTypeError, match="realtime"):
        transcribe.speed_arg("x0.5")


def test_session_format_rule() -> None:
    f = AudioFormat.from_sis
    assert transcribe.session_format_for(f("ulaw16k8bit"), "english_16k_common") == f("ulaw16k8bit")
    assert transcribe.session_format_for(f("ulaw8k8bit"), "english_16k_common") == f("pcm16k16bit")
    assert transcribe.session_format_for(f("alaw8k8bit"), "chinese_8k_common") == f("alaw8k8bit")
    assert transcribe.session_format_for(AudioFormat(44100, "pcm", 2, 2), "chinese_8k_common") == f("pcm8k16bit")
    assert transcribe.session_format_for(AudioFormat(16000, "pcm", 2, 2), "english_16k_common") == f("pcm16k16bit")


@pytest.mark.parametrize("engine", ["none"], indirect=True)
async def test_ctrl_c_ends_with_cancel_and_keeps_the_finals(engine: str, speech_wav: tuple[Path, float]) -> None:
    # Interrupt after the first final, mid-file at 2x real time: END cancel, the first sentence
    # is kept, exit code 130, and the audio sent is less than the file.
    path, seconds = speech_wav
    args = cli_parser().parse_args(["transcribe", str(path), "--speed", "x2", "--format", "jsonl"])
    interrupt = asyncio.Event()

    class PressCtrlCOnFirstLine(io.StringIO):
        # Ctrl-C the moment the first final is written: no polling, no timing window in which a
        # second final could slip through.
        def write(self, text: str) -> int:
            n = super().write(text)
            if text:
                interrupt.set()
            return n

    out, err = PressCtrlCOnFirstLine(), io.StringIO()
    code = await asyncio.wait_for(
        transcribe.transcribe_async(args, interrupt=interrupt, stdout=out, stderr=err), 60)
    assert code == 130
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    summary = err.getvalue().splitlines()[-1]
    assert "interrupted" in summary and "1 segment" in summary
    sent_s = float(summary.split(" | ")[1].split(" s audio")[0])
    assert sent_s < seconds - 0.5


@pytest.mark.parametrize("engine", ["none"], indirect=True)
def test_sentence_and_short_modes(engine: str, speech_wav: tuple[Path, float],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    # sentence-stream: one sentence, VOICE_START/VOICE_END shown, then the CLI ends the session;
    # short-stream: the whole input is one utterance closed by END.
    path, seconds = speech_wav
    assert run_cli(["transcribe", str(path), "--mode", "sentence", "--format", "jsonl"]) == 0
    cap = capsys.readouterr()
    assert len(cap.out.splitlines()) == 1
    assert "event VOICE_START at " in cap.err and "event VOICE_END at " in cap.err
    assert run_cli(["transcribe", str(path), "--mode", "short", "--format", "jsonl"]) == 0
    (seg,) = segments_from_dicts(json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert seg.start_ms == 0 and seg.end_ms == pytest.approx(seconds * 1000, abs=1)


@pytest.mark.parametrize("engine", ["none"], indirect=True)
def test_stereo_44k_wav_is_mixed_and_resampled(engine: str, speech_wav: tuple[Path, float], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # A CD-rate stereo file: mixed to mono, then the client's Transcoder resamples to 16 kHz.
    from scipy.signal import resample_poly

    import sis_stream.audio.transcode  # noqa: F401  (installed by the test extra)

    path, seconds = speech_wav
    pcm = np.frombuffer(open_audio(str(path)).data or b"", "<i2").astype(np.float64)
    up = np.round(resample_poly(pcm, 441, 160)).astype(np.int16)
    stereo = tmp_path / "stereo.wav"
    stereo.write_bytes(wav_bytes(AudioFormat(44100, "pcm", 2, 2), np.stack([up, up // 2], 1).ravel().tobytes()))
    assert run_cli(["transcribe", str(stereo), "--format", "json"]) == 0
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert doc["input_format"] == "pcm 44100 Hz 16-bit x2 mixed to mono" and doc["session_format"] == "pcm16k16bit"
    assert len(doc["segments"]) == 2 and doc["audio_ms"] == pytest.approx(seconds * 1000, abs=50)
