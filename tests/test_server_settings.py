"""Server settings reach the REST layer, from the dataclass and from `sis-stream serve` flags."""

from pathlib import Path

import pytest

from sis_stream.server.rest import rest_settings_from
from sis_stream.server.settings import ServerSettings


def test_rest_options_flow_into_rest_settings(tmp_path):
    s = ServerSettings(fetch_allow=("files.example.com:8443",), flash_store=str(tmp_path),
                       transcriber_workers=3)
    rest = rest_settings_from(s)
    assert rest.fetch_allow == ("files.example.com:8443",)
    assert rest.flash_store == Path(tmp_path)
    assert rest.transcriber_workers == 3


def test_default_fetch_allow_is_empty_even_on_loopback():
    # Nothing is fetched from anywhere unless --fetch-allow / --fetch-dir name it (issue 18:
    # a default loopback allow-list let data_url probe every local port).
    assert rest_settings_from(ServerSettings(host="0.0.0.0")).fetch_allow == ()
    assert rest_settings_from(ServerSettings(host="127.0.0.1")).fetch_allow == ()
    assert rest_settings_from(ServerSettings(host="127.0.0.1")).fetch_dir is None


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"transcriber_workers": 0}, ValueError, "transcriber_workers"),
        ({"fetch_allow": "a.example.com"}, TypeError, "sequence of 'HOST"),
    ],
)
def test_bad_rest_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ServerSettings(**kwargs)


def test_serve_flags_are_parsed(monkeypatch, tmp_path):
    from sis_stream.cli import main as cli

    seen = {}
    monkeypatch.setattr("sis_stream.server.serve.run", lambda settings: seen.setdefault("s", settings) and 0)
    rc = cli.main(["serve", "--port", "0", "--no-auth", "--fetch-allow", "a.example.com, b.example.com:81",
                   "--flash-store", str(tmp_path), "--transcriber-workers", "2"])
    assert rc == 0
    s = seen["s"]
    assert s.fetch_allow == ("a.example.com", "b.example.com:81")
    assert s.flash_store == tmp_path and s.transcriber_workers == 2


def test_serve_rejects_bad_fetch_allow_as_usage_error(capsys):
    from sis_stream.cli import main as cli

    assert cli.main(["serve", "--no-auth", "--fetch-allow", "http://evil.example.com/x"]) == 2
    assert "HOST or HOST:PORT" in capsys.readouterr().err
