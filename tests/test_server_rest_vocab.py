"""Hot-word tables: validation branches, SQLite store, REST CRUD with old-SDK and v3 SDK requests."""

from __future__ import annotations

import json

import pytest
from aiohttp import ClientSession
from test_server_rest_support import (
    OTHER_PROJECT,
    PROJECT,
    old_sdk_body,
    old_sdk_headers,
    rest_server,
    v3_headers,
)

from sis_stream.errors import RequestRejected
from sis_stream.server.rest import JOBS, VOCABULARIES
from sis_stream.server.state import METRICS
from sis_stream.server.vocab_store import (
    VocabularyStore,
    get_vocabulary_words,
    validate_vocabulary,
    validate_word,
)

BASE = f"/v1/{PROJECT}/asr/vocabularies"


def _body(**kw):
    out = {"name": "tbl_1", "description": "d", "language": "chinese_mandarin", "contents": ["华为", "HUAWEI"]}
    out.update(kw)
    return out


# -- pure validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("word", ["华为云", "HUAWEI", "Cloud", "华为Cloud", "x" * 64, "中" * 32])
def test_valid_words_pass(word):
    assert validate_word(word) == word


@pytest.mark.parametrize("word, match", [
    ("two words", "illegal"), ("abc1", "illegal"), ("标点。", "illegal"), ("", "illegal"), (5, "illegal"),
    ("x" * 65, "too long"), ("中" * 33, "too long"), ("中" + "x" * 40, "too long"),
])
def test_bad_words_are_sis_0203(word, match):
    with pytest.raises(RequestRejected, match=match) as ei:
        validate_word(word)
    assert ei.value.error_code == "SIS.0203"


@pytest.mark.parametrize("body, code, match", [
    ([], "SIS.0032", "JSON object"),
    ({"contents": ["a"]}, "SIS.0012", "'name' is required"),
    (_body(name="bad name"), "SIS.0032", "'name' is invalid"),
    (_body(name="x" * 33), "SIS.0032", "'name' is invalid"),
    (_body(name=""), "SIS.0032", "'name' is invalid"),
    (_body(description="d" * 256), "SIS.0032", "'description' is invalid"),
    (_body(language="french"), "SIS.0205", "french"),
    ({"name": "a"}, "SIS.0012", "'contents' is required"),
    (_body(contents=[]), "SIS.0032", "'contents' is invalid"),
    (_body(contents="HUAWEI"), "SIS.0032", "'contents' is invalid"),
    (_body(contents=["ok", "not ok"]), "SIS.0203", "not ok"),
    (_body(extra=1), "SIS.0031", "'extra' is not supported"),
])
def test_vocabulary_validation_branches(body, code, match):
    with pytest.raises(RequestRejected, match=match) as ei:
        validate_vocabulary(body)
    assert ei.value.error_code == code


def test_word_count_limit_is_sis_0208():
    with pytest.raises(RequestRejected, match="too many hot words") as ei:
        validate_vocabulary(_body(contents=["a", "b", "c"]), max_words=2)
    assert ei.value.error_code == "SIS.0208"


def test_name_pattern_allows_hash_dash_underscore_and_duplicates_are_dropped():
    spec = validate_vocabulary(_body(name="A-b_c#9", contents=["X", "Y", "X"], description=None))
    assert spec.name == "A-b_c#9" and spec.contents == ("X", "Y") and spec.description == ""


# -- store ----------------------------------------------------------------------------------------

def test_store_crud_uniqueness_limits_and_persistence(tmp_path):
    path = tmp_path / "v.sqlite3"
    st = VocabularyStore(path, max_tables=2)
    vid = st.create("p", _body())
    with pytest.raises(RequestRejected, match="already exists") as ei:
        st.create("p", _body())
    assert ei.value.error_code == "SIS.0204"
    other = st.create("q", _body())  # names are per project
    assert other != vid
    st.create("p", _body(name="second"))
    with pytest.raises(RequestRejected, match="at most 2") as ei:
        st.create("p", _body(name="third"))
    assert ei.value.error_code == "SIS.0208"
    with pytest.raises(RequestRejected) as ei:
        st.update("p", vid, _body(name="second"))  # rename onto another table's name
    assert ei.value.error_code == "SIS.0204"
    st.update("p", vid, _body(name="renamed", contents=["NEW"]))
    st.close()
    st2 = VocabularyStore(path)  # survives reopening
    assert st2.get("p", vid)["contents"] == ["NEW"]
    with pytest.raises(RequestRejected) as ei:
        st2.get("q", vid)  # another project's id
    assert ei.value.error_code == "SIS.0201"
    page = st2.list("p", offset=1, limit=1)
    assert page["count"] == 2 and len(page["result"]) == 1
    assert st2.list("p", name="renam")["count"] == 1
    st2.delete("p", vid)
    with pytest.raises(RequestRejected):
        st2.delete("p", vid)
    st2.close()


# -- routes ---------------------------------------------------------------------------------------

async def test_crud_with_old_sdk_requests(tmp_path):
    # The old HotWordClient: json.dumps bodies, content-length unsigned, and delete() needs an
    # EMPTY body (it calls .text on parsed JSON, §14.10).
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        async def call(method, path, obj=None):
            url = srv.url(path)
            body = old_sdk_body(obj)
            async with http.request(method, url, data=body, headers=old_sdk_headers(method, url, body, srv.host)) as r:
                return r.status, await r.read()

        st, raw = await call("POST", BASE, {"name": "mine", "description": "", "language": "chinese_mandarin",
                                            "contents": ["华为", "云服务"]})
        assert st == 200, raw
        vid = json.loads(raw)["vocabulary_id"]
        st, raw = await call("GET", BASE)
        assert st == 200 and json.loads(raw)["count"] == 1
        st, raw = await call("GET", f"{BASE}/{vid}")
        assert json.loads(raw) == {"vocabulary_id": vid, "name": "mine", "description": "",
                                   "language": "chinese_mandarin", "contents": ["华为", "云服务"]}
        st, raw = await call("PUT", f"{BASE}/{vid}", {"name": "mine", "language": "english", "contents": ["HELLO"]})
        assert st == 200 and json.loads(raw) == {"vocabulary_id": vid}
        assert get_vocabulary_words(srv.app, PROJECT, vid) == ["HELLO"]
        st, raw = await call("DELETE", f"{BASE}/{vid}")
        assert st == 200 and raw == b""
        st, raw = await call("GET", f"{BASE}/{vid}")
        assert st == 404 and json.loads(raw)["error_code"] == "SIS.0201"
        st, raw = await call("POST", BASE, {"name": "bad", "contents": ["含 空格"]})
        assert st == 400 and json.loads(raw)["error_code"] == "SIS.0203"
        ok, c4, _ = srv.app[METRICS].calls("vocabulary-create")
        assert (ok, c4) == (1, 1)
        assert srv.app[METRICS].calls("vocabulary-delete") == (1, 0, 0)


async def test_v3_sdk_shapes_and_list_paging(tmp_path):
    # v3: X-Project-Id + User-Agent signed, JSON;charset=utf-8 on POST and on the list GET,
    # canonical query string, optional {"name"} body on list.
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        ids = []
        for i in range(3):
            body = json.dumps({"name": f"t{i}", "language": "english", "contents": ["WORD"]}).encode()
            url = srv.url(BASE)
            async with http.post(url, data=body, headers=v3_headers("POST", url, body)) as r:
                assert r.status == 200, await r.text()
                ids.append((await r.json())["vocabulary_id"])
        url = srv.url(BASE + "?limit=2&offset=1")
        async with http.get(url, headers=v3_headers("GET", url, b"")) as r:
            page = await r.json()
        assert page["count"] == 3 and [x["vocabulary_id"] for x in page["result"]] == ids[1:3]
        body = json.dumps({"name": "t2"}).encode()
        url = srv.url(BASE + "?limit=10&offset=0")
        async with http.get(url, data=body, headers=v3_headers("GET", url, body)) as r:
            assert [x["name"] for x in (await r.json())["result"]] == ["t2"]
        url = srv.url(f"{BASE}/{ids[0]}")
        async with http.get(url, headers=v3_headers("GET", url, b"", content_type="application/json")) as r:
            assert (await r.json())["contents"] == ["WORD"]
        url = srv.url(BASE + "?limit=0&offset=0")
        async with http.get(url, headers=v3_headers("GET", url, b"")) as r:
            assert r.status == 400 and (await r.json())["error_code"] == "SIS.0032"


async def test_routes_need_credentials_of_the_url_project(tmp_path):
    async with rest_server(tmp_path) as srv, ClientSession() as http:
        async with http.get(srv.url(BASE)) as r:  # no credentials
            assert r.status == 401 and (await r.json())["error_code"] == "APIG.0301"
        url = srv.url(f"/v1/{OTHER_PROJECT}/asr/vocabularies")
        async with http.get(url, headers=old_sdk_headers("GET", url, b"", srv.host)) as r:
            assert r.status == 401
        assert srv.app[VOCABULARIES].list(PROJECT)["count"] == 0


async def test_unknown_vocabulary_id_is_sis_0201_for_recognition(tmp_path):
    async with rest_server(tmp_path) as srv:
        with pytest.raises(RequestRejected) as ei:
            get_vocabulary_words(srv.app, PROJECT, "NO-SUCH-ID")
        assert ei.value.error_code == "SIS.0201"
        assert get_vocabulary_words(srv.app, PROJECT, None) == []


# -- vocabulary -> engine wiring ------------------------------------------------------------------

async def test_vocabulary_words_reach_the_engine_on_every_recognition_route(tmp_path):
    import base64

    import numpy as np
    from test_server_rest_support import NONE_OVERRIDES

    from sis_stream.audio.formats import AudioFormat, wav_bytes
    from sis_stream.engines.null import NullEngine
    from sis_stream.engines.registry import ENGINE_FACTORIES, EngineRegistry
    from sis_stream.server.state import HOT_WORDS

    seen: list[list[str]] = []

    class RecordingEngine(NullEngine):  # the none engine, recording the hot words it is given
        def new_stream(self, *, language, hot_words=(), word_info=False):
            seen.append(list(hot_words))
            return super().new_stream(language=language, hot_words=hot_words, word_info=word_info)

    reg = EngineRegistry(NONE_OVERRIDES, factories={**ENGINE_FACTORIES, "none": lambda **o: RecordingEngine()})
    tone = (np.sin(np.arange(8000) * 0.2) * 3000).astype(np.int16)
    wav8 = wav_bytes(AudioFormat(8000, "pcm", 2), tone.tobytes())
    (tmp_path / "data" / "obs" / "bkt").mkdir(parents=True)
    (tmp_path / "data" / "obs" / "bkt" / "a.wav").write_bytes(wav8)
    (tmp_path / "data" / "a.wav").write_bytes(wav8)
    async with rest_server(tmp_path, registry=reg) as srv, ClientSession() as http:
        async def call(method, path, obj):
            url = srv.url(path)
            body = json.dumps(obj).encode() if obj is not None else b""
            async with http.request(method, url, data=body, headers=v3_headers(method, url, body)) as r:
                return r.status, await r.json()

        _st, body = await call("POST", BASE, {"name": "hw", "language": "english", "contents": ["HUAWEI", "CLOUD"]})
        vid = body["vocabulary_id"]
        st, body = await call("POST", f"/v1/{PROJECT}/asr/short-audio", {
            "data": base64.b64encode(wav8).decode(),
            "config": {"audio_format": "wav", "property": "chinese_8k_common", "vocabulary_id": vid,
                       "user_words": ["EXTRA"]}})
        assert st == 200 and seen[-1] == ["HUAWEI", "CLOUD", "EXTRA"]
        st, body = await call("POST", f"/v1/{PROJECT}/asr/flash?property=chinese_8k_common&audio_format=wav"
                                      f"&obs_bucket_name=bkt&obs_object_key=a.wav&vocabulary_id={vid}", None)
        assert st == 200 and seen[-1] == ["HUAWEI", "CLOUD"]
        n = len(seen)
        st, body = await call("POST", f"/v1/{PROJECT}/asr/transcriber/jobs", {
            "data_url": (tmp_path / "data" / "a.wav").as_uri(),
            "config": {"property": "chinese_8k_common", "vocabulary_id": vid}})
        assert st == 200
        assert await srv.app[JOBS].wait_idle(20)
        assert len(seen) > n and seen[-1] == ["HUAWEI", "CLOUD"]
        lookup = srv.app[HOT_WORDS]  # the RASR websocket's hook
        assert lookup(PROJECT, vid) == ["HUAWEI", "CLOUD"]
        assert lookup(PROJECT, "NOPE") is None and lookup(OTHER_PROJECT, vid) is None
