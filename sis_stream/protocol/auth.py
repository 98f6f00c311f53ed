"""One entry point for server-side request authentication: AK/SK signature or token."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AuthRejected
from .errors import APIG_AUTH_PREFIX
from .signer import CheckedHeaders, HeadersLike, SignatureVerifier, header_items
from .token import TokenIssuer

__all__ = ["Authenticator", "Principal"]


@dataclass(frozen=True)
class Principal:
    """Who made an authenticated request.

    Attributes
    ----------
    kind : str
        ``"aksk"`` or ``"token"``.
    name : str
        The AK (``aksk``) or the user name (``token``); identifiers, not secrets.
    project_id : str
        The project the credentials are scoped to.
    """

    kind: str
    name: str
    project_id: str


class Authenticator:
    """Authenticate a request by ``Authorization: SDK-HMAC-SHA256 ...`` or ``X-Auth-Token``.

    Parameters
    ----------
    verifier : SignatureVerifier
    issuer : TokenIssuer
    """

    def __init__(self, verifier: SignatureVerifier, issuer: TokenIssuer) -> None:
        self.verifier = verifier
        self.issuer = issuer

    def authenticate(
        self,
        method: str,
        target: str,
        headers: HeadersLike,
        body: bytes | str | None = b"",
        *,
        project_id: str | None = None,
    ) -> Principal:
        """Check one request (REST call or websocket upgrade).

        Parameters
        ----------
        method, target : str
            As received (``target`` = raw path and query).
        headers : mapping or pairs
            Every received header.
        body : bytes or str, optional
        project_id : str, optional
            The ``{project_id}`` of the URL; credentials of another project are rejected.

        Returns
        -------
        Principal

        Raises
        ------
        AuthRejected
            No credentials (``APIG.0301 ... x-auth-token not found``), or any rejection of
            :class:`SignatureVerifier` / :class:`TokenIssuer`; ``.body()`` is the answer and
            ``.http_status`` its status.
        """
        pending = self.check_headers(headers, project_id=project_id)
        if isinstance(pending, Principal):
            return pending
        return self.verify_body(pending, method, target, body)

    def check_headers(self, headers: HeadersLike, *, project_id: str | None = None) -> Principal | CheckedHeaders:
        """Everything that needs only the headers; run it before reading a request body.

        Returns
        -------
        Principal or CheckedHeaders
            A :class:`Principal` for a valid token (nothing left to check); for AK/SK the
            header checks passed (known AK of the URL's project, not locked, date in the window)
            and :meth:`verify_body` must check the signature over the body.

        Raises
        ------
        AuthRejected
            As :meth:`authenticate`.
        """
        items = header_items(headers)
        names = {k.lower() for k, _ in items}
        if "authorization" in names:
            checked = self.verifier.check_headers(items)
            if project_id is not None and project_id != checked.record.project_id:
                raise AuthRejected(APIG_AUTH_PREFIX + "the access key has no access to the project in the URL",
                                   reason="wrong_project")
            return checked
        tokens = [v for k, v in items if k.lower() == "x-auth-token"]
        if not tokens:
            raise AuthRejected(APIG_AUTH_PREFIX + "x-auth-token not found", reason="missing")
        if len(tokens) > 1:
            raise AuthRejected(APIG_AUTH_PREFIX + "decrypt token fail", reason="bad_token")
        claims = self.issuer.verify(tokens[0].strip(), project_id)
        return Principal("token", claims.user, claims.project_id)

    def verify_body(self, checked: CheckedHeaders, method: str, target: str,
                    body: bytes | str | None = b"") -> Principal:
        """Finish an AK/SK check started by :meth:`check_headers`.

        Raises
        ------
        AuthRejected
            Bad signature, body not matching a signed ``X-Sdk-Content-Sha256``, or a replay.
        """
        rec = self.verifier.verify_body(checked, method, target, body)
        return Principal("aksk", rec.ak, rec.project_id)
