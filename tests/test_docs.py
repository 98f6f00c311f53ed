"""Every ```python, ```sh, ```bash and ```console block of README.md and docs/*.md runs as written.

Each block runs in a fresh temporary directory holding the placeholder files the docs name
(``call.wav``, ``in.wav``, ``call.mp3``, ``fork.raw``, ``creds.json``, ...), made from real recorded
speech (``realspeech.asterisk_prompts``), with the package's virtualenv first on ``PATH`` and no
``SIS_*`` variables, so ``sis-stream transcribe`` uses the embedded local server. Python blocks
run as a script; shell blocks run with ``bash -e``; in a console block the ``$ `` lines are the
commands and the rest is sample output. ``sis-stream serve`` (it runs until stopped) is run
with ``--port 0``, its first stdout line checked, then stopped.

A block that cannot run here (a PBX, Huawei Cloud credentials, a browser by hand) is preceded by
``<!-- doc-test: skip (reason) -->``; the reason must not be empty. Documentation for developers
lives in docs/dev/ and is not run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from realspeech import asterisk_prompts

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGS = {"python", "sh", "bash", "console"}
SKIP_RE = re.compile(r"^<!--\s*doc-test:\s*skip\s*\((.*)\)\s*-->\s*$")
MARKER_RE = re.compile(r"<!--\s*doc-test:")
FENCE_RE = re.compile(r"^(\s*)```\s*([A-Za-z0-9_+-]*)\s*$")
#: One block's limit (a transcription loads the Whisper model in a new process each time).
BLOCK_TIMEOUT_S = 240


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  #: 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  #: the reason of a skip marker, "" when the marker has none

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract(path: Path) -> list[Block]:
    """The runnable blocks of one Markdown file (fences nested in lists included)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2).lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^{re.escape(indent)}```\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        i += 1
        if lang not in RUN_LANGS:
            continue
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        skip = None
        if j >= 0:
            sm = SKIP_RE.match(lines[j].strip())
            if sm:
                skip = sm.group(1).strip()
        code = textwrap.dedent("\n".join(body)) + "\n"
        blocks.append(Block(path, start + 1, lang, code, skip))
    return blocks


BLOCKS = [b for p in DOC_FILES if p.exists() for b in extract(p)]


def test_every_skip_marker_has_a_reason_and_a_block() -> None:
    """A marker needs a reason in parentheses and must stand right before a runnable block."""
    problems = []
    for path in DOC_FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if not MARKER_RE.search(line):
                continue
            m = SKIP_RE.match(line.strip())
            if m is None or not m.group(1).strip():
                problems.append(f"{path.name}:{n + 1}: marker without a reason: {line.strip()}")
                continue
            k = n + 1
            while k < len(lines) and not lines[k].strip():
                k += 1
            fm = FENCE_RE.match(lines[k]) if k < len(lines) else None
            if fm is None or fm.group(2).lower() not in RUN_LANGS:
                problems.append(f"{path.name}:{n + 1}: marker not followed by a python/sh block")
    assert not problems, "\n".join(problems)


def test_the_docs_have_runnable_blocks() -> None:
    # The extraction itself must find the README's blocks (a test that cannot fail is no test).
    readme = [b for b in BLOCKS if b.path.name == "README.md"]
    assert len(readme) >= 4 and any(b.lang == "python" for b in readme)


def test_no_document_points_outside_the_repository() -> None:
    bad = []
    for path in [*DOC_FILES, *sorted((ROOT / "docs" / "dev").glob("*.md")),
                 *sorted((ROOT / "benchmarks").glob("*.py"))]:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"(?<![\w.])shared/docs|/work/|/home/\w+|/root/", line):
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not bad, "\n".join(bad)


# --- running the blocks -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def placeholders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the docs name, from real speech: 8 kHz telephone prompts."""
    from sis_stream.audio.codec import ulaw_encode
    from sis_stream.audio.formats import AudioFormat, wav_bytes

    d = tmp_path_factory.mktemp("doc-files")
    ps = [u for u in asterisk_prompts(6) if 3.0 <= u.seconds <= 7.0][:2]
    pad = np.zeros(4800, np.int16)
    a, b = (np.concatenate([pad[:800], u.pcm, pad]) for u in ps)
    pcm8 = AudioFormat.from_sis("pcm8k16bit")
    for name in ("call.wav", "in.wav", "a.wav", "recording.wav"):
        (d / name).write_bytes(wav_bytes(pcm8, a.tobytes()))
    n = max(len(a), len(b))
    stereo = np.zeros((n, 2), np.int16)
    stereo[: len(a), 0] = a
    stereo[: len(b), 1] = b
    (d / "stereo.wav").write_bytes(wav_bytes(AudioFormat(8000, "pcm", 2, 2), stereo.tobytes()))
    (d / "fork.raw").write_bytes(ulaw_encode(a.tobytes()))
    try:
        from sis_stream.cli._media import encode_file

        for name in ("call.mp3", "b.mp3"):
            encode_file(str(d / name), b.tobytes(), 8000)
        encode_file(str(d / "call.ogg"), b.tobytes(), 8000)
        encode_file(str(d / "call.flac"), b.tobytes(), 8000)
    except ImportError:  # pragma: no cover - PyAV is a dependency of the engines extra
        pass
    calls = d / "calls"
    calls.mkdir()
    shutil.copy(d / "call.wav", calls / "first.wav")
    if (d / "b.mp3").exists():
        shutil.copy(d / "b.mp3", calls / "second.mp3")
    (d / "creds.json").write_text(
        '{"access_keys": [{"ak": "DOCTESTAK0000000000A", "sk": "'
        + "s" * 40 + '", "project_id": "' + "p" * 32 + '"}], "users": []}')
    (d / "serve_first_line.py").write_text(textwrap.dedent('''
        """Run `sis-stream serve ARGS` on a free port, print its first stdout line, stop it."""
        import subprocess, sys
        args = list(sys.argv[1:])
        if "--port" in args:
            args[args.index("--port") + 1] = "0"
        else:
            args += ["--port", "0"]
        proc = subprocess.Popen([sys.executable, "-m", "sis_stream", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline().strip()
        finally:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
        print(line)
        if not line.startswith("listening on http://127.0.0.1:"):
            sys.exit(f"serve did not start: first line {line!r}; stderr: {err.strip()[-500:]}")
        '''))
    return d


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


_SHELL_PRELUDE = """set -e
sis-stream() {
  if [ "${1:-}" = serve ]; then shift; python "$DOCTEST_DIR/serve_first_line.py" serve "$@";
  else command sis-stream "$@"; fi
}
"""


def _shell_script(block: Block) -> str:
    if block.lang != "console":
        return block.code
    cmds = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            cmds.append(line[2:])
        elif cmds and cmds[-1].endswith("\\"):
            cmds.append(line)
    return "\n".join(cmds) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block: Block, placeholders: Path, tmp_path: Path) -> None:
    if block.skip is not None:
        assert block.skip, f"{block.id}: skip marker without a reason"
        pytest.skip(f"{block.id}: {block.skip}")
    for f in placeholders.iterdir():
        (shutil.copytree if f.is_dir() else shutil.copy)(f, tmp_path / f.name)
    env = _env()
    env["DOCTEST_DIR"] = str(tmp_path)
    if block.lang == "python":
        script = tmp_path / "doc_block.py"
        script.write_text(block.code)
        argv = [sys.executable, str(script)]
    else:
        script = tmp_path / "doc_block.sh"
        script.write_text(_SHELL_PRELUDE + _shell_script(block))
        argv = ["bash", str(script)]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
                          timeout=BLOCK_TIMEOUT_S, stdin=subprocess.DEVNULL)
    where = f"{block.id} ({block.lang}) failed with exit {proc.returncode}"
    assert proc.returncode == 0, f"{where}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, f"{block.id}: traceback on stderr\n{proc.stderr[-3000:]}"
