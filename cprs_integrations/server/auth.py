"""API-key authentication: ``Authorization: Bearer <key>``, compared in constant time.

Applied as a router dependency to every route but ``/healthz`` and ``/readyz`` (and ``/metrics``, ``/docs`` when
configured open). Without a configured key every route is open; ``cprs serve`` then refuses to bind anywhere but
the loopback interface.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cprs_integrations.server.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="The server's API key (CPRS_API_KEY).")


def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> None:
    """Let the request through when the server has no key, or when it carries the key.

    Raises:
        ApiError: 401 (``unauthorized``, with ``WWW-Authenticate: Bearer``) for a missing or wrong key.
    """
    key = request.app.state.settings.api_key
    if key is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not (given and hmac.compare_digest(given.encode("utf-8"), key.get_secret_value().encode("utf-8"))):
        raise ApiError(
            401,
            "unauthorized",
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
