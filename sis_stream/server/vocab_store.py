"""Hot-word tables (vocabularies, sis-protocol.md §11.7): validation, the SQLite store, and the
lookup of a request's ``vocabulary_id``.

Tables are per project. ``vocabulary_id`` in short-audio, transcriber, flash and RASR requests is
resolved by :func:`get_vocabulary_words` (unknown id -> ``SIS.0201``) and the words go to the
engine as hot words; the RASR websocket reaches it through ``app[HOT_WORDS]``
(:func:`hot_words_lookup`). The REST routes of the tables are in :mod:`.vocab`.

Validation (the docs disagree between 2021 and now, §11.7 [V]; we follow the current docs and
make the counts configurable):

* ``name``: 1-32 characters of letters, digits, ``_``, ``-``, ``#``; unique per project
  (``SIS.0204``); bad -> ``SIS.0032 'name' is invalid``.
* ``description``: optional string of at most 255 characters (``SIS.0032``).
* ``language``: ``chinese_mandarin`` (default) or ``english``; else ``SIS.0205``.
* ``contents``: a non-empty list; each word only letters (ASCII) and CJK characters, no spaces,
  digits or punctuation; at most 32 characters when it contains CJK, 64 for letters only; else
  ``SIS.0203`` naming the word. English letters are accepted in any case (the cloud asks for upper
  case; our engines do not care). Duplicates are dropped keeping the first.
* at most ``max_words`` (10000) words per table and ``max_tables`` (100) tables per project:
  ``SIS.0208``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ..errors import RequestRejected
from ..protocol.errors import reject
from .rest import VOCABULARIES
from .store import Database

__all__ = [
    "DEFAULT_MAX_TABLES",
    "DEFAULT_MAX_WORDS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_NAME_CHARS",
    "VOCAB_LANGUAGES",
    "VocabularySpec",
    "VocabularyStore",
    "get_vocabulary_words",
    "hot_words_lookup",
    "validate_vocabulary",
    "validate_word",
]

logger = logging.getLogger(__name__)

#: Accepted ``language`` values (2021: chinese_mandarin; current docs add english).
VOCAB_LANGUAGES: Final = ("chinese_mandarin", "english")
MAX_NAME_CHARS: Final = 32
MAX_DESCRIPTION_CHARS: Final = 255
#: Longest word: containing CJK / letters only (current docs: 32 Chinese / 64 English chars).
MAX_CJK_WORD_CHARS: Final = 32
MAX_LATIN_WORD_CHARS: Final = 64
#: Current docs: 10000 words per table, 100 tables (2021: 1024 and 10).
DEFAULT_MAX_WORDS: Final = 10000
DEFAULT_MAX_TABLES: Final = 100

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_\-#]+$")
# CJK Unified Ideographs + extension A + compatibility ideographs.
_CJK: Final = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD_RE: Final = re.compile(rf"^[A-Za-z{_CJK}]+$")
_HAS_CJK_RE: Final = re.compile(rf"[{_CJK}]")

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS vocabularies (
        vocabulary_id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        language TEXT NOT NULL,
        contents TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        UNIQUE (project_id, name))""",
    "CREATE INDEX IF NOT EXISTS vocab_project ON vocabularies (project_id, created)",
)


@dataclass(frozen=True)
class VocabularySpec:
    """A validated create/update body.

    Attributes
    ----------
    name, description, language : str
    contents : tuple of str
        Validated words, duplicates removed, order kept.
    """

    name: str
    description: str
    language: str
    contents: tuple[str, ...]


def validate_word(word: object) -> str:
    """Check one hot word; returns it unchanged.

    Raises
    ------
    RequestRejected
        ``SIS.0203`` naming the word (wrong type, empty, characters other than letters/CJK, or
        too long).
    """
    if not isinstance(word, str) or not word or not _WORD_RE.match(word):
        raise reject("SIS.0203", f"hot word {word!r} is illegal: only letters and Chinese characters, "
                                 "no spaces, digits or punctuation (write numbers out)")
    limit = MAX_CJK_WORD_CHARS if _HAS_CJK_RE.search(word) else MAX_LATIN_WORD_CHARS
    if len(word) > limit:
        raise reject("SIS.0203", f"hot word {word!r} is too long: {len(word)} characters, "
                                 f"at most {limit}")
    return word


def _field_invalid(field: str, why: str) -> RequestRejected:
    return reject("SIS.0032", f"'{field}' is invalid: {why}")


def validate_vocabulary(body: object, *, max_words: int = DEFAULT_MAX_WORDS) -> VocabularySpec:
    """Validate a create/update body ``{"name", "description", "language", "contents"}``.

    Parameters
    ----------
    body : object
        The parsed JSON body.
    max_words : int
        Words allowed per table.

    Returns
    -------
    VocabularySpec

    Raises
    ------
    RequestRejected
        ``SIS.0032`` (body not an object, bad name/description/contents shape), ``SIS.0012``
        (missing name/contents), ``SIS.0205`` (language), ``SIS.0203`` (a word), ``SIS.0208``
        (too many words).
    """
    if not isinstance(body, dict):
        raise reject("SIS.0032", f"the request body must be a JSON object, got {type(body).__name__}")
    for key in body:
        if key not in ("name", "description", "language", "contents"):
            raise reject("SIS.0031", field=key)
    if "name" not in body:
        raise reject("SIS.0012", field="name")
    name = body["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > MAX_NAME_CHARS:
        raise _field_invalid("name", f"expected 1-{MAX_NAME_CHARS} letters, digits, '_', '-' or '#', "
                                     f"got {name!r}")
    description = body.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise _field_invalid("description", f"expected a string of at most {MAX_DESCRIPTION_CHARS} characters")
    language = body.get("language", "chinese_mandarin")
    if language not in VOCAB_LANGUAGES:
        raise reject("SIS.0205", f"language {language!r} is not supported: use one of {', '.join(VOCAB_LANGUAGES)}")
    if "contents" not in body:
        raise reject("SIS.0012", field="contents")
    contents = body["contents"]
    if not isinstance(contents, list) or not contents:
        raise _field_invalid("contents", "expected a non-empty list of words")
    if len(contents) > max_words:
        raise reject("SIS.0208", f"too many hot words: {len(contents)}, at most {max_words} per vocabulary")
    seen: dict[str, None] = {}
    for word in contents:
        seen.setdefault(validate_word(word), None)
    return VocabularySpec(name, description, language, tuple(seen))


def _row_summary(row: Any) -> dict[str, Any]:
    return {"vocabulary_id": row["vocabulary_id"], "name": row["name"],
            "language": row["language"], "description": row["description"]}


class VocabularyStore:
    """Hot-word tables in SQLite, per project.

    Parameters
    ----------
    db_path : path
        The SQLite file (``<data-dir>/vocabularies.sqlite3``).
    max_tables : int
        Tables per project (``SIS.0208`` beyond).
    max_words : int
        Words per table (``SIS.0208`` beyond).
    """

    def __init__(self, db_path: Any, *, max_tables: int = DEFAULT_MAX_TABLES,
                 max_words: int = DEFAULT_MAX_WORDS) -> None:
        for name, value in (("max_tables", max_tables), ("max_words", max_words)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.db = Database(db_path, _SCHEMA)
        self.max_tables = max_tables
        self.max_words = max_words

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def create(self, project_id: str, body: object) -> str:
        """Validate and store a new table; returns its ``vocabulary_id``.

        Raises
        ------
        RequestRejected
            Validation codes of :func:`validate_vocabulary`, ``SIS.0204`` (name taken),
            ``SIS.0208`` (too many tables).
        """
        spec = validate_vocabulary(body, max_words=self.max_words)
        vid = str(uuid.uuid4()).upper()
        now = time.time()
        with self.db.transaction() as cur:
            n = cur.execute("SELECT COUNT(*) FROM vocabularies WHERE project_id = ?", (project_id,)).fetchone()[0]
            if n >= self.max_tables:
                raise reject("SIS.0208", limit=self.max_tables)
            if cur.execute("SELECT 1 FROM vocabularies WHERE project_id = ? AND name = ?",
                           (project_id, spec.name)).fetchone():
                raise reject("SIS.0204", name=spec.name)
            cur.execute("INSERT INTO vocabularies VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (vid, project_id, spec.name, spec.description, spec.language,
                         json.dumps(list(spec.contents), ensure_ascii=False), now, now))
        return vid

    def update(self, project_id: str, vocabulary_id: str, body: object) -> str:
        """Replace a table's name, description, language and words.

        Raises
        ------
        RequestRejected
            ``SIS.0201`` (unknown id in this project), ``SIS.0204`` (the new name belongs to
            another table), validation codes.
        """
        spec = validate_vocabulary(body, max_words=self.max_words)
        with self.db.transaction() as cur:
            if not cur.execute("SELECT 1 FROM vocabularies WHERE project_id = ? AND vocabulary_id = ?",
                               (project_id, vocabulary_id)).fetchone():
                raise reject("SIS.0201", vocabulary_id=vocabulary_id)
            if cur.execute("SELECT 1 FROM vocabularies WHERE project_id = ? AND name = ? AND vocabulary_id != ?",
                           (project_id, spec.name, vocabulary_id)).fetchone():
                raise reject("SIS.0204", name=spec.name)
            cur.execute("UPDATE vocabularies SET name = ?, description = ?, language = ?, contents = ?, "
                        "updated = ? WHERE vocabulary_id = ?",
                        (spec.name, spec.description, spec.language,
                         json.dumps(list(spec.contents), ensure_ascii=False), time.time(), vocabulary_id))
        return vocabulary_id

    def get(self, project_id: str, vocabulary_id: str) -> dict[str, Any]:
        """``{"vocabulary_id", "name", "description", "language", "contents"}``.

        Raises
        ------
        RequestRejected
            ``SIS.0201``.
        """
        row = self.db.query_one("SELECT * FROM vocabularies WHERE project_id = ? AND vocabulary_id = ?",
                                (project_id, vocabulary_id))
        if row is None:
            raise reject("SIS.0201", vocabulary_id=vocabulary_id)
        try:
            contents = json.loads(row["contents"])
        except ValueError:
            raise reject("SIS.0207") from None
        return {**_row_summary(row), "contents": contents}

    def words(self, project_id: str, vocabulary_id: str) -> list[str]:
        """The words of one table (``SIS.0201`` if unknown)."""
        return list(self.get(project_id, vocabulary_id)["contents"])

    def list(self, project_id: str, *, offset: int = 0, limit: int = 10,
             name: str | None = None) -> dict[str, Any]:
        """``{"count": total, "result": [summary, ...]}``, oldest first, one page.

        Parameters
        ----------
        offset, limit : int
            Page (validated by the caller).
        name : str, optional
            Only tables whose name contains this string.
        """
        where, params = "project_id = ?", [project_id]
        if name:
            where += " AND instr(name, ?) > 0"
            params.append(name)
        total = self.db.query_one(f"SELECT COUNT(*) AS n FROM vocabularies WHERE {where}", params)["n"]
        rows = self.db.query(f"SELECT * FROM vocabularies WHERE {where} ORDER BY created, vocabulary_id "
                             "LIMIT ? OFFSET ?", [*params, limit, offset])
        return {"count": int(total), "result": [_row_summary(r) for r in rows]}

    def delete(self, project_id: str, vocabulary_id: str) -> None:
        """Remove a table (``SIS.0201`` if unknown)."""
        n = self.db.execute("DELETE FROM vocabularies WHERE project_id = ? AND vocabulary_id = ?",
                            (project_id, vocabulary_id))
        if n == 0:
            raise reject("SIS.0201", vocabulary_id=vocabulary_id)


def _is_unicode(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def get_vocabulary_words(app: Any, project_id: str, vocabulary_id: object) -> list[str]:
    """The words of ``vocabulary_id`` for the engines (short-audio, transcriber, flash, RASR).

    Parameters
    ----------
    app : aiohttp.web.Application
        The server app (its vocabulary store ``app[VOCABULARIES]`` is opened at startup).
    project_id : str
        The project of the request URL.
    vocabulary_id : object
        The request's ``vocabulary_id``; None or ``""`` means no hot words.

    Returns
    -------
    list of str
        The table's words (empty for no id).

    Raises
    ------
    RequestRejected
        ``SIS.0201`` for an unknown id (or one of another project), ``SIS.0032`` for a non-string.
    """
    if vocabulary_id is None or vocabulary_id == "":
        return []
    if not isinstance(vocabulary_id, str) or not _is_unicode(vocabulary_id):
        # (A lone surrogate cannot be stored or looked up: a client mistake, not a database error.)
        raise reject("SIS.0032", field="vocabulary_id")
    store: VocabularyStore | None = app.get(VOCABULARIES) if hasattr(app, "get") else None
    if store is None:
        raise reject("SIS.0201", f"vocabulary '{vocabulary_id}' does not exist (the server has no vocabulary store)")
    return store.words(project_id, vocabulary_id)



def hot_words_lookup(app: Any) -> Callable[[str, str], list[str] | None]:
    """The ``app[HOT_WORDS]`` callable for the RASR websocket.

    Parameters
    ----------
    app : aiohttp.web.Application
        The server app (its vocabulary store is read at each call).

    Returns
    -------
    callable
        ``(project_id, vocabulary_id) -> list of words``, or None for an unknown id (the
        websocket answers SIS.0201 then).
    """
    def hot_words(project_id: str, vocabulary_id: str) -> list[str] | None:
        try:
            return get_vocabulary_words(app, project_id, vocabulary_id)
        except RequestRejected:
            return None

    return hot_words
