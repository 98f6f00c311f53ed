"""IAM-compatible ``POST /v3/auth/tokens`` (password flow), so token-only clients work locally.

The old official ``RasrClient`` always fetches a token first (sis-protocol.md §2.1, §14.4) and
reads only the ``X-Subject-Token`` answer header; this route answers HTTP 201 with that header and
an IAM-shaped body. Bad passwords: 401 ``APIG.0301``; malformed bodies: 400 ``SIS.0012``/``SIS.0032``
(the protocol core's :class:`~sis_stream.protocol.TokenService` decides; this module is transport).
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from .auth import route
from .intake import loads_json, read_body
from .state import TOKENS

__all__ = ["TOKENS_PATH", "setup_routes"]

logger = logging.getLogger(__name__)

TOKENS_PATH: Final = "/v3/auth/tokens"


@route(interface="iam.tokens", public=True)
async def issue_token(request: web.Request) -> web.Response:
    """Answer a password-flow token request (201 + ``X-Subject-Token``)."""
    # Parsed strictly here (lone surrogates, NaN, deep nesting are a 400, not a crash further on).
    body = loads_json(await read_body(request), "SIS.0032")
    issued = request.app[TOKENS].authenticate(body)  # RequestRejected / AuthRejected -> middleware
    logger.info("token issued user=%s project_id=%s", issued.claims.user, issued.claims.project_id)
    return web.json_response(issued.response_body(), status=201, headers=issued.response_headers())


def setup_routes(app: web.Application) -> None:
    """Install ``POST /v3/auth/tokens``."""
    app.router.add_post(TOKENS_PATH, issue_token)
