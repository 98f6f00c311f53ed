"""Where a command sends audio: the embedded local server, or a remote SIS endpoint with its
credentials (command line first, then the environment). The options are the same for
``transcribe``, ``bridge`` and ``loadtest`` (:func:`add_target_arguments`)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from ..protocol import AkSk, Token
from ._common import EXIT_AUTH, EXIT_USAGE, CliError, register_secret

__all__ = ["CLOUD_ENDPOINT", "ENV_VARS", "Target", "add_target_arguments", "resolve_endpoint", "resolve_target"]

#: Environment variables read for a remote endpoint (never printed).
ENV_VARS: Final = ("SIS_ENDPOINT", "SIS_REGION", "SIS_PROJECT_ID", "SIS_AK", "SIS_SK", "SIS_TOKEN")
#: The Huawei Cloud SIS websocket endpoint of a region.
CLOUD_ENDPOINT: Final = "wss://sis-ext.{region}.myhuaweicloud.com"
_REGION_RE: Final = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+$")
#: What the group title of the target options says after the variables, by default.
_PREFER_ENV: Final = "prefer the environment: the command line is visible to other users"


def add_target_arguments(parser: argparse.ArgumentParser, *,
                         note: str = _PREFER_ENV) -> argparse._ArgumentGroup:
    """Add the target options (``--endpoint``, ``--region``, ``--project-id``, ``--ak``, ``--sk``,
    ``--token``, ``--local``, ``--insecure``) that :func:`resolve_target` reads.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The command's parser; the options go into one argument group.
    note : str
        Said in the group's title after the environment variables (what the command does
        without an endpoint, or how it treats credentials).

    Returns
    -------
    argparse._ArgumentGroup
        The group, for a command's own remote-side options.
    """
    r = parser.add_argument_group(f"Huawei Cloud SIS (credentials also from {', '.join(ENV_VARS)}; {note})")
    r.add_argument("--endpoint", metavar="URL", help="wss://sis-ext.REGION.myhuaweicloud.com or any SIS server")
    r.add_argument("--region", metavar="REGION", help="e.g. cn-north-4: the endpoint is " + CLOUD_ENDPOINT)
    r.add_argument("--project-id", metavar="ID")
    r.add_argument("--ak", metavar="AK", help="access key id (AK/SK signing)")
    r.add_argument("--sk", metavar="SK", help="secret access key")
    r.add_argument("--token", metavar="TOKEN", help="an IAM token instead of AK/SK")
    r.add_argument("--local", action="store_true",
                   help="use the embedded local server even if SIS_ENDPOINT/SIS_REGION are set")
    r.add_argument("--insecure", action="store_true", help="do not verify the server's TLS certificate")
    return r


@dataclass(frozen=True)
class Target:
    """Where a transcription goes.

    ``kind`` is ``"embedded"`` (start the local server in-process) or ``"remote"``; for remote,
    ``endpoint`` and ``project_id`` are set, and ``auth`` too except on a loopback endpoint
    resolved with ``credentials_optional_on_loopback``. ``auth`` is never shown in a repr.
    """

    kind: str
    endpoint: str | None = None
    project_id: str | None = None
    auth: AkSk | Token | None = field(default=None, repr=False)
    insecure: bool = False

    def describe(self) -> str:
        """``embedded local server`` or the endpoint URL (no credentials)."""
        return "embedded local server" if self.kind == "embedded" else str(self.endpoint)


def resolve_endpoint(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str | None:
    """The remote endpoint URL the options and the environment name, or None for the embedded
    server (the first step of :func:`resolve_target`; credentials are not looked at).

    Raises
    ------
    CliError
        Exit 2 for a bad endpoint or region, or ``--local`` with ``--endpoint``/``--region``.
    """
    env = os.environ if environ is None else environ
    ep = getattr(args, "endpoint", None)
    region = getattr(args, "region", None)
    if getattr(args, "local", False):
        if ep or region:
            raise CliError("--local cannot be combined with --endpoint/--region", EXIT_USAGE)
        return None
    ep = ep or (None if region else env.get("SIS_ENDPOINT") or None)
    region = region or env.get("SIS_REGION") or None
    if not ep and not region:
        return None
    if not ep:
        assert region is not None
        if not _REGION_RE.match(region):
            raise CliError(f"region must look like cn-north-4, got {region!r}", EXIT_USAGE)
        ep = CLOUD_ENDPOINT.format(region=region)
    if not re.match(r"^(wss?|https?)://[^/\s]+", ep):
        raise CliError(f"endpoint must be a wss:// (or ws://, https://) URL, got {ep!r}", EXIT_USAGE)
    return ep


def resolve_target(args: argparse.Namespace, environ: Mapping[str, str] | None = None, *,
                   credentials_optional_on_loopback: bool = False) -> Target:
    """Decide between the embedded server and a remote SIS, and find the credentials.

    Remote when ``--endpoint`` or ``--region`` is given, or ``SIS_ENDPOINT`` / ``SIS_REGION`` is
    set (and ``--local`` is not given). Command-line values win over the environment. A remote
    endpoint needs a project id and AK/SK or a token.

    Parameters
    ----------
    args : argparse.Namespace
        The options of :func:`add_target_arguments` (missing ones count as not given).
    environ : mapping, optional
        The environment (default ``os.environ``).
    credentials_optional_on_loopback : bool
        A loopback endpoint (``127.0.0.0/8``, ``::1``, ``localhost``) may go without credentials
        (``auth`` None) and without a project id (``local``), as a local ``serve --no-auth``;
        any other endpoint without credentials is refused (the load test's rule: no load on
        another host by accident).

    Raises
    ------
    CliError
        Exit 4 when credentials are missing or incomplete; exit 2 for a bad endpoint/region or
        both AK/SK and a token on the command line.
    """
    env = os.environ if environ is None else environ
    ep = resolve_endpoint(args, env)
    if ep is None:
        return Target("embedded")
    project = getattr(args, "project_id", None) or env.get("SIS_PROJECT_ID") or None
    cl_ak, cl_sk, cl_token = (getattr(args, k, None) for k in ("ak", "sk", "token"))
    for v in (cl_ak, cl_sk, cl_token, env.get("SIS_AK"), env.get("SIS_SK"), env.get("SIS_TOKEN")):
        register_secret(v)
    if cl_token and (cl_ak or cl_sk):
        raise CliError("give either --ak/--sk or --token, not both", EXIT_USAGE)
    auth: AkSk | Token | None
    if cl_ak or cl_sk:
        if not (cl_ak and cl_sk):
            missing = "--sk" if cl_ak else "--ak"
            raise CliError(f"missing credentials for {ep}: {missing} is required with "
                           f"{'--ak' if cl_ak else '--sk'}", EXIT_AUTH)
        auth = AkSk(cl_ak, cl_sk)
    elif cl_token:
        auth = Token(cl_token)
    elif env.get("SIS_AK") or env.get("SIS_SK"):
        if not (env.get("SIS_AK") and env.get("SIS_SK")):
            missing = "SIS_SK" if env.get("SIS_AK") else "SIS_AK"
            raise CliError(f"missing credentials for {ep}: {missing} is not set "
                           f"(SIS_AK and SIS_SK go together)", EXIT_AUTH)
        auth = AkSk(env["SIS_AK"], env["SIS_SK"])
    elif env.get("SIS_TOKEN"):
        auth = Token(env["SIS_TOKEN"])
    elif credentials_optional_on_loopback:
        if not _is_loopback(ep):
            raise CliError(
                f"refusing to load {ep}: it is not a loopback address and no credentials were given "
                "(--ak/--sk or --token, or SIS_AK/SIS_SK or SIS_TOKEN): a load test never runs against "
                "another host by accident", EXIT_AUTH)
        auth = None
    else:
        raise CliError(f"missing credentials for {ep}: give --ak/--sk or --token, or set SIS_AK "
                       "and SIS_SK (or SIS_TOKEN)", EXIT_AUTH)
    if not project and credentials_optional_on_loopback and _is_loopback(ep):
        project = "local"
    if not project:
        raise CliError(f"missing project id for {ep}: give --project-id or set SIS_PROJECT_ID",
                       EXIT_AUTH)
    return Target("remote", ep, project, auth, bool(getattr(args, "insecure", False)))


def _is_loopback(url: str) -> bool:
    # Imported here: only a load test asks, and `transcribe` starts without the loadtest package.
    from ..loadtest.target import is_loopback_url

    return is_loopback_url(url)
