"""Hot-word table routes (vocabularies, sis-protocol.md §11.7), over :mod:`.vocab_store`.

Routes (all under ``/v1/{project_id}/asr/vocabularies``): create ``POST``, update ``PUT /{id}``,
get ``GET /{id}``, list ``GET`` (query ``offset``/``limit``, optional JSON body ``{"name": ...}``
filter as the v3 SDK sends it), delete ``DELETE /{id}`` (200 with an **empty** body: the old SDK's
``HotWordClient.delete`` crashes on any JSON, §14.10). Validation and limits: see
:mod:`.vocab_store`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from aiohttp import web

from ..errors import RequestRejected
from ..protocol.errors import reject
from .rest import VOCABULARIES, json_response, read_json

__all__ = ["ROUTES", "handle_create", "handle_delete", "handle_get", "handle_list", "handle_update"]

logger = logging.getLogger(__name__)


def _field_invalid(field: str, why: str) -> RequestRejected:
    return reject("SIS.0032", f"'{field}' is invalid: {why}")


def _int_param(query: Any, name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _field_invalid(name, f"expected an integer in {lo}..{hi}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise _field_invalid(name, f"expected an integer in {lo}..{hi}, got {value}")
    return value


async def handle_create(request: Any) -> Any:
    """``POST /v1/{project_id}/asr/vocabularies`` -> ``{"vocabulary_id"}``."""
    body = await read_json(request)
    vid = request.app[VOCABULARIES].create(request.match_info["project_id"], body)
    return json_response({"vocabulary_id": vid})


async def handle_update(request: Any) -> Any:
    """``PUT .../vocabularies/{vocabulary_id}`` -> ``{"vocabulary_id"}``."""
    body = await read_json(request)
    vid = request.app[VOCABULARIES].update(request.match_info["project_id"],
                                           request.match_info["vocabulary_id"], body)
    return json_response({"vocabulary_id": vid})


async def handle_get(request: Any) -> Any:
    """``GET .../vocabularies/{vocabulary_id}`` -> the table with its ``contents``."""
    return json_response(request.app[VOCABULARIES].get(request.match_info["project_id"],
                                                       request.match_info["vocabulary_id"]))


async def handle_list(request: Any) -> Any:
    """``GET .../vocabularies`` -> ``{"count", "result"}`` (one page of summaries)."""
    offset = _int_param(request.query, "offset", 0, 0, 1_000_000)
    limit = _int_param(request.query, "limit", 10, 1, 100)
    name = request.query.get("name") or None
    body = await read_json(request, allow_empty=True)  # the v3 SDK may send {"name": filter}
    if body is not None:
        if not isinstance(body, dict):
            raise reject("SIS.0032", "the request body must be a JSON object")
        filt = body.get("name")
        if filt is not None and not isinstance(filt, str):
            raise _field_invalid("name", "expected a string")
        name = filt or name
    return json_response(request.app[VOCABULARIES].list(request.match_info["project_id"],
                                                        offset=offset, limit=limit, name=name))


async def handle_delete(request: Any) -> Any:
    """``DELETE .../vocabularies/{vocabulary_id}`` -> 200, empty body."""
    request.app[VOCABULARIES].delete(request.match_info["project_id"], request.match_info["vocabulary_id"])
    # Empty body on purpose (sis-protocol.md §14.10): the old SDK calls .text on parsed JSON.
    return web.Response(status=200, body=b"")


ROUTES: Final[Sequence[tuple[str, str, Any, str]]] = (
    ("POST", "/v1/{project_id}/asr/vocabularies", handle_create, "vocabulary-create"),
    ("GET", "/v1/{project_id}/asr/vocabularies", handle_list, "vocabulary-list"),
    ("PUT", "/v1/{project_id}/asr/vocabularies/{vocabulary_id}", handle_update, "vocabulary-update"),
    ("GET", "/v1/{project_id}/asr/vocabularies/{vocabulary_id}", handle_get, "vocabulary-get"),
    ("DELETE", "/v1/{project_id}/asr/vocabularies/{vocabulary_id}", handle_delete, "vocabulary-delete"),
)
