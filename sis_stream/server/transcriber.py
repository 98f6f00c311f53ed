"""Recording-file transcriber (sis-protocol.md §11.3): ``POST /v1/{project_id}/asr/transcriber/jobs``
and ``GET /v1/{project_id}/asr/transcriber/jobs/{job_id}``; jobs run by :mod:`.jobs`.

Submission checks everything that can be checked without the audio (so a bad request is a 400 at
once, not an ERROR job): body shape (``SIS.0534``), ``data_url`` (``SIS.0032 "data url is empty"``;
scheme/host against the fetch allow-list, ``SIS.0608``), ``config`` fields (``SIS.0533 '<field>'
is invalid``, unknown keys ``SIS.0031``), ``vocabulary_id`` (``SIS.0201``), ``callback_url``
(http(s), < 2048 bytes, host on the fetch allow-list: a callback is a server-side request too).

Processing (a worker, see :mod:`.jobs`): download (:mod:`.fetch`, 300 MB cap ``SIS.0537``), decode
(``SIS.0535`` for unsupported/undecodable audio, ``SIS.0301`` when raw/WAV audio does not have the
property's rate), at most 5 h (``SIS.0537``), cut into sentences by the SIS Endpointer and
recognised on the shared engine executor.

Segments: ``{"start_time", "end_time", "result": {"text", "word_info"?, "analysis_info"?}}`` in ms.
``analysis_info`` (8 kHz properties with ``need_analysis_info`` only) carries what is actually
computed: ``speed`` (characters per second of the sentence, spaces and punctuation excluded) when
``speed`` is true, and ``role`` (``AGENT``/``USER``) when ``channel`` is ``LEFT_AGENT`` or
``RIGHT_AGENT`` on two-channel audio (each channel is recognised separately and the sentences
merged by time). Not supported: speaker diarization of mono audio and ``emotion`` (never faked;
the fields are simply absent). Multi-channel audio with ``channel`` ``MONO`` is mixed down.

Properties: the transcriber list of the docs, plus (a local extension) any property the server's
engine registry routes, e.g. ``english_16k_common``, since the offline engines are strongest in
English.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import unicodedata
from pathlib import Path
from typing import Any, Final

import numpy as np

from ..audio.formats import SIS_FORMATS, AudioFormat
from ..errors import RequestRejected
from ..protocol.errors import reject
from ..protocol.properties import Interface
from .callbacks import CallbackDispatcher
from .decode import check_rate, decode_audio, to_engine_pcm
from .fetch import FetchPolicy, check_http_url, fetch_url, url_scheme
from .jobqueue import resolve
from .jobs import JobManager, JobRecord, JobStore
from .recognize import check_property, engine_for, on_pool, transcribe_pcm
from .redis_jobs import RedisJobManager, connect_redis
from .rest import FETCH_POLICY, JOBS, json_response, read_json
from .state import SETTINGS
from .vocab_store import get_vocabulary_words

__all__ = [
    "MAX_TRANSCRIBER_AUDIO_MS",
    "ROUTES",
    "cut_points",
    "handle_get",
    "handle_submit",
    "make_job_manager",
    "parse_transcriber_request",
    "process_job",
]

logger = logging.getLogger(__name__)

#: Longest recording (5 h).
MAX_TRANSCRIBER_AUDIO_MS: Final = 5 * 3600 * 1000
_AUDIO_FORMATS: Final = ("auto", "wav", "pcm16k16bit", "pcm8k16bit", "ulaw16k8bit", "ulaw8k8bit",
                         "alaw16k8bit", "alaw8k8bit", "vox8k4bit", "v3_8k4bit", "mp3", "m4a", "aac",
                         "ogg", "opus", "amr", "amrwb", "wma")
_CONFIG_KEYS: Final = frozenset({"audio_format", "property", "add_punc", "digit_norm", "need_word_info",
                                 "vocabulary_id", "callback_url", "need_analysis_info"})
_CHANNELS: Final = ("MONO", "LEFT_AGENT", "RIGHT_AGENT")
INTERFACE_POST: Final = "long-audio-transcription-post"
INTERFACE_GET: Final = "long-audio-transcription-get"


def _invalid(field: str, why: str = "") -> RequestRejected:
    return reject("SIS.0533", f"'{field}' is invalid" + (f": {why}" if why else ""))


def _yes_no(config: dict[str, Any], key: str, default: str) -> bool:
    v = config.get(key, default)
    if v not in ("yes", "no"):
        raise _invalid(key, f"expected 'yes' or 'no', got {v!r}")
    return v == "yes"


def parse_transcriber_request(app: Any, project_id: str, body: object) -> dict[str, Any]:
    """Validate a submission; returns the normalised request stored with the job.

    Raises
    ------
    RequestRejected
        See the module docstring.
    """
    if not isinstance(body, dict):
        raise reject("SIS.0534", "the request body is invalid: expected a JSON object")
    for key in body:
        if key not in ("data_url", "config"):
            raise reject("SIS.0031", field=key)
    url = body.get("data_url")
    if not isinstance(url, str) or not url.strip():
        raise reject("SIS.0032", "data url is empty")
    policy: FetchPolicy = app[FETCH_POLICY]
    if url_scheme(url.strip()) != "file":
        check_http_url(url.strip(), policy)
    config = body.get("config")
    if config is None:
        raise reject("SIS.0012", field="config")
    if not isinstance(config, dict):
        raise _invalid("config", "expected an object")
    for key in config:
        if key not in _CONFIG_KEYS:
            raise reject("SIS.0031", field=key)
    if "property" not in config:
        raise reject("SIS.0012", field="property")
    prop, rate_hz = check_property(app, config["property"], Interface.TRANSCRIBER)
    audio_format = config.get("audio_format", "auto")
    if audio_format not in _AUDIO_FORMATS:
        raise _invalid("audio_format")
    if audio_format in SIS_FORMATS and AudioFormat.from_sis(audio_format).rate_hz != rate_hz:
        raise reject("SIS.0301")  # a raw format's rate is known now: no need to wait for the job
    out: dict[str, Any] = {
        "data_url": url.strip(), "audio_format": audio_format, "property": prop, "rate_hz": rate_hz,
        "add_punc": _yes_no(config, "add_punc", "no"), "need_word_info": _yes_no(config, "need_word_info", "no"),
    }
    out["digit_norm"] = _yes_no(config, "digit_norm", "yes")
    vid = config.get("vocabulary_id")
    if vid not in (None, ""):
        get_vocabulary_words(app, project_id, vid)  # SIS.0201 now rather than an ERROR job later
        out["vocabulary_id"] = vid
    cb = config.get("callback_url")
    if cb not in (None, ""):
        if not isinstance(cb, str) or len(cb.encode("utf-8")) >= 2048:
            raise _invalid("callback_url", "expected an http(s) URL shorter than 2048 bytes")
        try:
            check_http_url(cb, policy)
        except RequestRejected as exc:
            raise _invalid("callback_url", exc.error_msg) from None
        out["callback_url"] = cb
    nai = config.get("need_analysis_info")
    if nai is not None:
        if not isinstance(nai, dict):
            raise _invalid("need_analysis_info", "expected an object")
        analysis: dict[str, Any] = {}
        for key, default in (("diarization", True), ("emotion", True), ("speed", True)):
            v = nai.get(key, default)
            if not isinstance(v, bool):
                raise _invalid(f"need_analysis_info.{key}", f"expected true or false, got {v!r}")
            analysis[key] = v
        channel = nai.get("channel", "MONO")
        if channel not in _CHANNELS:
            raise _invalid("need_analysis_info.channel", f"expected one of {', '.join(_CHANNELS)}")
        for key in nai:
            if key not in ("diarization", "emotion", "speed", "channel"):
                raise reject("SIS.0031", field=f"need_analysis_info.{key}")
        analysis["channel"] = channel
        out["need_analysis_info"] = analysis
    return out


def _speed(text: str, start_ms: int, end_ms: int) -> float | None:
    n = sum(1 for c in text if not c.isspace() and not unicodedata.category(c).startswith("P"))
    dur = (end_ms - start_ms) / 1000.0
    return round(n / dur, 2) if dur > 0 else None


def _segments(hyps_by_role: list[tuple[str | None, list[Any]]], req: dict[str, Any]) -> list[dict[str, Any]]:
    analysis = req.get("need_analysis_info") if req["rate_hz"] == 8000 else None
    rows: list[dict[str, Any]] = []
    for role, hyps in hyps_by_role:
        for h in hyps:
            result: dict[str, Any] = {"text": h.text}
            if req["need_word_info"]:
                result["word_info"] = [{"start_time": w.start_ms, "end_time": w.end_ms, "word": w.word}
                                       for w in h.words]
            if analysis is not None:
                info: dict[str, Any] = {}
                if role is not None:
                    info["role"] = role
                if analysis["speed"]:
                    sp = _speed(h.text, h.start_ms, h.end_ms)
                    if sp is not None:
                        info["speed"] = sp
                if info:
                    result["analysis_info"] = info
            rows.append({"start_time": h.start_ms, "end_time": h.end_ms, "result": result})
    rows.sort(key=lambda r: (r["start_time"], r["end_time"]))
    return rows


def cut_points(pcm16k: np.ndarray, chunk_ms: int, search_ms: int = 2000) -> list[int]:
    """Sample offsets cutting `pcm16k` into pieces of about `chunk_ms` for checkpoints: each cut
    is at the quietest 20 ms frame within `search_ms` of its nominal place (so a sentence is
    rarely split). Returns ``[0, ..., len(pcm16k)]``."""
    n = len(pcm16k)
    step = chunk_ms * 16
    frame = 320
    cuts = [0]
    pos = step
    while pos < n - step // 4:
        lo, hi = max(cuts[-1] + frame, pos - search_ms * 16), min(n - frame, pos + search_ms * 16)
        if hi <= lo:
            break
        seg = pcm16k[lo:hi - (hi - lo) % frame].astype(np.float64)
        energy = (seg.reshape(-1, frame) ** 2).sum(axis=1)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2
        cuts.append(cut)
        pos = cut + step
    cuts.append(n)
    return cuts


def _shift(row: dict[str, Any], offset_ms: int) -> dict[str, Any]:
    row = {**row, "start_time": row["start_time"] + offset_ms, "end_time": row["end_time"] + offset_ms}
    words = row.get("result", {}).get("word_info")
    if words:
        row["result"] = {**row["result"], "word_info": [
            {**w, "start_time": w["start_time"] + offset_ms, "end_time": w["end_time"] + offset_ms} for w in words]}
    return row


async def _run_checkpointed(app: Any, engine: Any, language: str, pcm: np.ndarray, words: Any,
                            req: dict[str, Any], should_stop: Any, checkpoint: Any,
                            chunk_ms: int) -> list[dict[str, Any]]:
    """Transcribe `pcm` piece by piece (:func:`cut_points`), saving each piece's segments to
    `checkpoint` and skipping the pieces an earlier attempt saved."""
    done_ms, rows = await checkpoint.load()
    cuts = cut_points(pcm, chunk_ms)
    for start, end in itertools.pairwise(cuts):
        start_ms, end_ms = start // 16, end // 16
        if end_ms <= done_ms:
            continue
        if should_stop():
            raise asyncio.CancelledError
        try:
            hyps = await on_pool(app, transcribe_pcm, engine, language, pcm[start:end], hot_words=words,
                                  word_info=req["need_word_info"], add_punc=req["add_punc"],
                                  digit_norm=req.get("digit_norm", True), should_stop=should_stop)
        except RuntimeError as exc:
            if str(exc) == "stopped":
                raise asyncio.CancelledError from exc
            raise
        piece = [_shift(r, start_ms) for r in _segments([(None, hyps)], req)]
        if not await checkpoint.save(end_ms, piece):
            raise asyncio.CancelledError  # another attempt owns the job now
        rows.extend(piece)
    return rows


async def process_job(app: Any, job: JobRecord, should_stop: Any, checkpoint: Any = None,
                      chunk_ms: int = 60_000) -> tuple[list[dict[str, Any]], int]:
    """Download, decode and transcribe one job (the job backends' processor).

    With a `checkpoint` (:class:`.redis_jobs.Checkpoint`, mono audio) the audio is transcribed in
    pieces of about `chunk_ms`, each saved when done, and a resumed attempt skips the saved ones.
    """
    req = job.request
    data = await fetch_url(req["data_url"], app[FETCH_POLICY], too_large_code="SIS.0537")
    audio = await asyncio.to_thread(decode_audio, data, req["audio_format"], unsupported_code="SIS.0535",
                                    max_ms=MAX_TRANSCRIBER_AUDIO_MS)
    del data
    check_rate(audio, req["rate_hz"], req["audio_format"])
    if audio.duration_ms > MAX_TRANSCRIBER_AUDIO_MS:
        raise reject("SIS.0537", f"the audio is too long: {audio.duration_ms} ms, at most 5 h")
    words = get_vocabulary_words(app, job.project_id, req.get("vocabulary_id"))
    engine, route = await on_pool(app, engine_for, app, req["property"])
    channel = (req.get("need_analysis_info") or {}).get("channel", "MONO")
    if channel != "MONO" and audio.n_channels >= 2:
        agent = 0 if channel == "LEFT_AGENT" else 1
        plan = [("AGENT" if i == agent else "USER", i) for i in (0, 1)]
    else:
        plan = [(None, None)]
    if checkpoint is not None and plan == [(None, None)]:
        pcm = await asyncio.to_thread(to_engine_pcm, audio, None)
        rows = await _run_checkpointed(app, engine, route.language, pcm, words, req, should_stop, checkpoint,
                                       chunk_ms)
        return rows, audio.duration_ms
    results: list[tuple[str | None, list[Any]]] = []
    for role, ch in plan:
        pcm = await asyncio.to_thread(to_engine_pcm, audio, ch)
        try:
            hyps = await on_pool(app, transcribe_pcm, engine, route.language, pcm, hot_words=words,
                                  word_info=req["need_word_info"], add_punc=req["add_punc"],
                                  digit_norm=req.get("digit_norm", True), should_stop=should_stop)
        except RequestRejected:
            raise
        except RuntimeError as exc:
            if str(exc) == "stopped":
                raise asyncio.CancelledError from exc
            raise
        results.append((role, hyps))
    return _segments(results, req), audio.duration_ms


def make_job_manager(app: Any, db_path: Path, rs: Any) -> Any:
    """The app's job backend (:mod:`.jobqueue`): a :class:`JobManager` (store under the data
    directory, settings from ``rs``), or a :class:`.redis_jobs.RedisJobManager` when the server
    settings name a Redis URL."""
    async def processor(job: JobRecord, should_stop: Any) -> tuple[list[dict[str, Any]], int]:
        return await process_job(app, job, should_stop)

    def callback_check(url: str) -> None:
        check_http_url(url, app[FETCH_POLICY])

    settings = app.get(SETTINGS)
    if settings is not None and settings.redis_url is not None:
        chunk_ms = int(settings.job_checkpoint_s * 1000)

        async def checkpointed(job: JobRecord, should_stop: Any, checkpoint: Any = None
                               ) -> tuple[list[dict[str, Any]], int]:
            return await process_job(app, job, should_stop, checkpoint, chunk_ms)

        redis = connect_redis(settings.redis_url)
        manager = RedisJobManager(redis, checkpointed, workers=rs.transcriber_workers if settings.run_jobs else 0,
                                  max_waiting=rs.max_waiting_jobs, lease_s=settings.job_lease_s,
                                  retention_s=rs.job_retention_s)
        manager.dispatcher = CallbackDispatcher(
            redis, manager.consumer, attempts=rs.callback_attempts, backoff_s=rs.callback_backoff_s,
            timeout_s=rs.callback_timeout_s, check=callback_check)
        return manager

    return JobManager(JobStore(db_path), processor, workers=rs.transcriber_workers,
                      max_waiting=rs.max_waiting_jobs, retention_s=rs.job_retention_s,
                      callback_attempts=rs.callback_attempts, callback_backoff_s=rs.callback_backoff_s,
                      callback_timeout_s=rs.callback_timeout_s, callback_check=callback_check)


async def handle_submit(request: Any) -> Any:
    """``POST /v1/{project_id}/asr/transcriber/jobs`` -> ``{"job_id"}``."""
    project_id = request.match_info["project_id"]
    body = await read_json(request, code="SIS.0534")
    req = parse_transcriber_request(request.app, project_id, body)
    job_id = await resolve(request.app[JOBS].submit(project_id, req, req.get("callback_url")))
    return json_response({"job_id": job_id})


async def handle_get(request: Any) -> Any:
    """``GET /v1/{project_id}/asr/transcriber/jobs/{job_id}``."""
    job = await resolve(request.app[JOBS].get(request.match_info["project_id"], request.match_info["job_id"]))
    return json_response(job.public_body())


ROUTES: Final = (
    ("POST", "/v1/{project_id}/asr/transcriber/jobs", handle_submit, INTERFACE_POST),
    ("GET", "/v1/{project_id}/asr/transcriber/jobs/{job_id}", handle_get, INTERFACE_GET),
)
