"""Auth value objects (AK/SK, token) and the server's credential store; secrets never shown."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AkSk", "Token", "AccessKeyRecord", "UserRecord", "CredentialStore", "mask"]


def mask(value: str, keep: int = 4) -> str:
    """An identifier safe for logs: the first ``keep`` characters and ``***``.

    Parameters
    ----------
    value : str
    keep : int, optional

    Returns
    -------
    str
    """
    if not isinstance(value, str):
        return "***"
    return (value[:keep] + "***") if len(value) > keep else "***"


@dataclass(frozen=True)
class AkSk:
    """AK/SK credentials for ``SDK-HMAC-SHA256`` signing. The repr shows neither key in full.

    Parameters
    ----------
    ak : str
        Access key id.
    sk : str
        Secret key.
    """

    ak: str = field(repr=False)
    sk: str = field(repr=False)

    def __post_init__(self) -> None:
        for name in ("ak", "sk"):
            v = getattr(self, name)
            if not isinstance(v, str):
                raise TypeError(f"AkSk.{name} must be a str, got {type(v).__name__}")
            if not v:
                raise ValueError(f"AkSk.{name} must not be empty")

    def __repr__(self) -> str:
        return f"AkSk(ak={mask(self.ak)!r}, sk=<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True)
class Token:
    """An IAM (or locally issued) token for the ``X-Auth-Token`` header; repr hides it."""

    value: str = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.value, str):
            raise TypeError(f"Token.value must be a str, got {type(self.value).__name__}")
        if not self.value:
            raise ValueError("Token.value must not be empty")

    def __repr__(self) -> str:
        return "Token(<hidden>)"

    __str__ = __repr__

    def headers(self) -> dict[str, str]:
        """``{"X-Auth-Token": value}``."""
        return {"X-Auth-Token": self.value}


@dataclass(frozen=True)
class AccessKeyRecord:
    """One ``access_keys`` entry of ``creds.json``."""

    ak: str
    sk: str = field(repr=False)
    project_id: str

    def __repr__(self) -> str:
        return f"AccessKeyRecord(ak={mask(self.ak)!r}, sk=<hidden>, project_id={self.project_id!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class UserRecord:
    """One ``users`` entry of ``creds.json`` (IAM-style user for the token flow)."""

    name: str
    password: str = field(repr=False)
    domain: str
    project_id: str
    region: str

    def __repr__(self) -> str:
        return (f"UserRecord(name={self.name!r}, password=<hidden>, domain={self.domain!r}, "
                f"project_id={self.project_id!r}, region={self.region!r})")

    __str__ = __repr__


def _str_field(entry: Mapping[str, Any], key: str, where: str) -> str:
    if key not in entry:
        raise ValueError(f"{where}: field {key!r} is missing")
    v = entry[key]
    if not isinstance(v, str) or not v:
        # Never echo the value: it may be a secret.
        raise ValueError(f"{where}: field {key!r} must be a non-empty string (got {type(v).__name__})")
    return v


class CredentialStore:
    """AK/SK pairs and users a local server accepts (shape of ``creds.json``).

    ``{"access_keys": [{"ak", "sk", "project_id"}], "users": [{"name", "password", "domain",
    "project_id", "region"}]}``. Lookups return records; nothing here logs or prints a secret.

    Parameters
    ----------
    access_keys : iterable of AccessKeyRecord, optional
    users : iterable of UserRecord, optional

    Raises
    ------
    ValueError
        Duplicate AK, or duplicate (user, domain).
    """

    def __init__(self, access_keys: Iterable[AccessKeyRecord] = (), users: Iterable[UserRecord] = ()) -> None:
        self._keys: dict[str, AccessKeyRecord] = {}
        for rec in access_keys:
            if rec.ak in self._keys:
                raise ValueError(f"duplicate access key {mask(rec.ak)!r}")
            self._keys[rec.ak] = rec
        self._users: dict[tuple[str, str], UserRecord] = {}
        for u in users:
            k = (u.name, u.domain)
            if k in self._users:
                raise ValueError(f"duplicate user {u.name!r} in domain {u.domain!r}")
            self._users[k] = u

    def __repr__(self) -> str:
        return f"CredentialStore({len(self._keys)} access keys, {len(self._users)} users)"

    @classmethod
    def from_dict(cls, data: object) -> CredentialStore:
        """Build from the decoded ``creds.json`` object.

        Raises
        ------
        ValueError
            Wrong shape; the message names the entry and field, never the value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"credentials must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - {"access_keys", "users"}
        if unknown:
            raise ValueError(f"credentials: unknown top-level keys {sorted(map(str, unknown))}; "
                             "expected 'access_keys' and 'users'")
        keys, users = [], []
        for name, out in (("access_keys", keys), ("users", users)):
            items = data.get(name, [])
            if not isinstance(items, list):
                raise ValueError(f"credentials: {name!r} must be a list, got {type(items).__name__}")
            for i, entry in enumerate(items):
                where = f"credentials {name}[{i}]"
                if not isinstance(entry, Mapping):
                    raise ValueError(f"{where} must be an object, got {type(entry).__name__}")
                if name == "access_keys":
                    out.append(AccessKeyRecord(*(_str_field(entry, k, where) for k in ("ak", "sk", "project_id"))))
                else:
                    out.append(UserRecord(*(_str_field(entry, k, where)
                                            for k in ("name", "password", "domain", "project_id", "region"))))
        return cls(keys, users)

    @classmethod
    def from_json(cls, text: str | bytes) -> CredentialStore:
        """Build from JSON text (``ValueError`` on bad JSON or shape)."""
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError("credentials are not valid JSON") from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CredentialStore:
        """Load ``creds.json``."""
        with open(path, "rb") as f:
            return cls.from_json(f.read())

    def access_key(self, ak: str) -> AccessKeyRecord | None:
        """The record of ``ak``, or None."""
        return self._keys.get(ak)

    def user(self, name: str, domain: str) -> UserRecord | None:
        """The user ``name`` of account ``domain``, or None."""
        return self._users.get((name, domain))

    @property
    def project_ids(self) -> frozenset[str]:
        """Every project id that has an AK or a user."""
        return frozenset({r.project_id for r in self._keys.values()} | {u.project_id for u in self._users.values()})

    def __len__(self) -> int:
        return len(self._keys) + len(self._users)
