"""Hot-word tables in Redis (``serve --redis URL`` / ``worker --redis URL``): every process
using the same Redis sees the same vocabularies.

Same API and validation as :class:`.vocab_store.VocabularyStore` (the SQLite store of a single
process), so the routes of :mod:`.vocab` and :func:`.vocab_store.get_vocabulary_words` work
unchanged. Keys: ``sis:vocab:{project_id}`` (hash ``vocabulary_id`` -> JSON record) and
``sis:vocab:{project_id}:names`` (hash ``name`` -> ``vocabulary_id``); the limits and the
per-project name uniqueness are checked inside one script, so two processes cannot both create
the same name. Calls are synchronous, like the SQLite store's (short requests to a nearby
Redis; each bounded by a 2 s socket timeout, after which the request fails with an error).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Final

from ..protocol.errors import reject
from .vocab_store import DEFAULT_MAX_TABLES, DEFAULT_MAX_WORDS, validate_vocabulary

__all__ = ["RedisVocabularyStore"]

logger = logging.getLogger(__name__)

_CREATE: Final = """
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return -2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

_UPDATE: Final = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return -1 end
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if owner and owner ~= ARGV[1] then return -2 end
local o = cjson.decode(old)
local n = cjson.decode(ARGV[3])
n['created'] = o['created']
redis.call('HDEL', KEYS[2], o['name'])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(n))
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

_DELETE: Final = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
redis.call('HDEL', KEYS[2], cjson.decode(old)['name'])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""


def _summary(rec: dict[str, Any]) -> dict[str, Any]:
    return {"vocabulary_id": rec["vocabulary_id"], "name": rec["name"], "language": rec["language"],
            "description": rec.get("description")}


class RedisVocabularyStore:
    """Hot-word tables in Redis, per project (see the module docstring).

    Parameters
    ----------
    url : str
        ``redis://HOST:PORT/DB``.
    max_tables, max_words : int
        As for :class:`.vocab_store.VocabularyStore` (``SIS.0208`` beyond).
    prefix : str
    """

    def __init__(self, url: str, *, max_tables: int = DEFAULT_MAX_TABLES, max_words: int = DEFAULT_MAX_WORDS,
                 prefix: str = "sis:") -> None:
        try:
            import redis
        except ImportError:
            raise RuntimeError("--redis needs the 'redis' package: pip install 'sis-stream[cluster]'") from None
        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.max_tables = max_tables
        self.max_words = max_words
        self.prefix = prefix
        self._create = self.r.register_script(_CREATE)
        self._update = self.r.register_script(_UPDATE)
        self._delete = self.r.register_script(_DELETE)

    def _keys(self, project_id: str) -> list[str]:
        base = f"{self.prefix}vocab:{project_id}"
        return [base, base + ":names"]

    def close(self) -> None:
        self.r.close()

    def create(self, project_id: str, body: object) -> str:
        """Validate and store a new table; returns its ``vocabulary_id`` (``SIS.0204``, ``SIS.0208``)."""
        spec = validate_vocabulary(body, max_words=self.max_words)
        vid = str(uuid.uuid4()).upper()
        now = time.time()
        rec = {"vocabulary_id": vid, "name": spec.name, "description": spec.description, "language": spec.language,
               "contents": list(spec.contents), "created": now, "updated": now}
        res = self._create(keys=self._keys(project_id),
                           args=[vid, spec.name, json.dumps(rec, ensure_ascii=False), self.max_tables])
        if res == -1:
            raise reject("SIS.0208", limit=self.max_tables)
        if res == -2:
            raise reject("SIS.0204", name=spec.name)
        return vid

    def update(self, project_id: str, vocabulary_id: str, body: object) -> str:
        """Replace a table (``SIS.0201`` unknown id, ``SIS.0204`` name taken)."""
        spec = validate_vocabulary(body, max_words=self.max_words)
        rec = {"vocabulary_id": vocabulary_id, "name": spec.name, "description": spec.description,
               "language": spec.language, "contents": list(spec.contents), "created": 0, "updated": time.time()}
        res = self._update(keys=self._keys(project_id),
                           args=[vocabulary_id, spec.name, json.dumps(rec, ensure_ascii=False)])
        if res == -1:
            raise reject("SIS.0201", vocabulary_id=vocabulary_id)
        if res == -2:
            raise reject("SIS.0204", name=spec.name)
        return vocabulary_id

    def _record(self, project_id: str, vocabulary_id: str) -> dict[str, Any]:
        raw = self.r.hget(self._keys(project_id)[0], vocabulary_id) if isinstance(vocabulary_id, str) else None
        if raw is None:
            raise reject("SIS.0201", vocabulary_id=vocabulary_id)
        try:
            return json.loads(raw)
        except ValueError:
            raise reject("SIS.0207") from None

    def get(self, project_id: str, vocabulary_id: str) -> dict[str, Any]:
        """``{"vocabulary_id", "name", "description", "language", "contents"}`` (``SIS.0201``)."""
        rec = self._record(project_id, vocabulary_id)
        return {**_summary(rec), "contents": rec["contents"]}

    def words(self, project_id: str, vocabulary_id: str) -> list[str]:
        """The words of one table (``SIS.0201`` if unknown)."""
        return list(self._record(project_id, vocabulary_id)["contents"])

    def list(self, project_id: str, *, offset: int = 0, limit: int = 10, name: str | None = None) -> dict[str, Any]:
        """``{"count": total, "result": [summary, ...]}``, oldest first, one page."""
        recs = [json.loads(v) for v in self.r.hvals(self._keys(project_id)[0])]
        if name:
            recs = [r for r in recs if name in r["name"]]
        recs.sort(key=lambda r: (r.get("created", 0), r["vocabulary_id"]))
        return {"count": len(recs), "result": [_summary(r) for r in recs[offset:offset + limit]]}

    def delete(self, project_id: str, vocabulary_id: str) -> None:
        """Remove a table (``SIS.0201`` if unknown)."""
        if not self._delete(keys=self._keys(project_id), args=[vocabulary_id]):
            raise reject("SIS.0201", vocabulary_id=vocabulary_id)
