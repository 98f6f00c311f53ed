"""The package's public names resolve, and the audio core does not import aiohttp."""

import subprocess
import sys

import pytest

import sis_stream


@pytest.mark.parametrize("name", sis_stream.__all__)
def test_every_public_name_resolves(name):
    assert getattr(sis_stream, name) is not None


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sis_stream.nope  # noqa: B018


def test_audio_core_import_is_light():
    # A gateway that only transcodes must not pay for aiohttp/asyncio client machinery.
    code = "import sys, sis_stream; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lazy_client_name_is_the_client_class():
    from sis_stream.client.rasr import RasrClient

    assert sis_stream.RasrClient is RasrClient


@pytest.mark.parametrize("name", ["audio.formats", "audio.codec", "audio.resample",
                                  "audio.transcode", "audio.vad", "audio.endpoint",
                                  "client.framing", "client.pacing", "protocol", "client.rasr",
                                  "server"])
def test_submodules_are_not_shadowed(name):
    # `import sis_stream.audio.resample as m` binds the package attribute: it must be the module
    # (the one-shot function `resample` must not shadow the module of the same name).
    import importlib
    import types

    importlib.import_module(f"sis_stream.{name}")
    obj = sis_stream
    for part in name.split("."):
        obj = getattr(obj, part)
        assert isinstance(obj, types.ModuleType), (name, part, obj)
