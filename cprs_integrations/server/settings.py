"""ServerSettings: the server's security and limits, declared once (the CLI flags of ``cprs serve`` build it).

The API key comes from the environment, never from a command-line argument (which ``ps`` shows): ``CPRS_API_KEY``,
or ``CPRS_API_KEY_FILE`` naming a file that holds it (a mounted secret), or ``--api-key-file``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

#: Environment variable holding the API key.
API_KEY_ENV = "CPRS_API_KEY"
#: Environment variable naming a file that holds the API key.
API_KEY_FILE_ENV = "CPRS_API_KEY_FILE"
#: Windows a served engine queues before answering 429 (the engine alone is unbounded by default): ``cprs serve``
#: and the Ray Serve replicas.
DEFAULT_MAX_QUEUE_WINDOWS = 4096


class ServerSettings(BaseModel):
    """Security and limits of one server (frozen).

    Raises:
        ValueError: an invalid limit (pydantic names it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: SecretStr | None = Field(
        default=None,
        description="Required as 'Authorization: Bearer <key>' on every route but /healthz and /readyz; None: "
        "no authentication (bind to 127.0.0.1 only).",
    )
    metrics_open: bool = Field(default=False, description="Serve /metrics without the API key.")
    docs_open: bool = Field(default=False, description="Serve /docs and /openapi.json without the API key.")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1, description="Largest request body (413 past it).")
    max_texts: int = Field(default=1024, ge=1, description="Most texts in one request (413 past it).")
    max_chars: int = Field(
        default=8_000_000, ge=1, description="Most characters in one request, query and texts (413 past it)."
    )
    request_timeout_s: float = Field(
        default=300.0,
        gt=0,
        allow_inf_nan=False,
        description="Longest time one request may take, queue included (504 past it; a client may ask for less).",
    )
    retry_after_s: int = Field(
        default=1, ge=0, description="Seconds sent in Retry-After with 429 (queue full) and 503 (loading)."
    )
    token_counters: tuple[str, ...] = Field(
        default=("o200k_base", "cl100k_base"),
        min_length=1,
        description="Encoding names a request may use as options.token_counter (all load without network).",
    )
    model_name: str | None = Field(
        default=None, description="Name of the critic in responses; None: where it was loaded from."
    )

    @field_validator("api_key")
    @classmethod
    def _non_empty_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("api_key must not be empty (None turns authentication off)")
        return value

    @classmethod
    def from_env(cls, api_key_file: str | os.PathLike[str] | None = None, **values: Any) -> ServerSettings:
        """Settings with the API key from ``api_key_file``, else ``CPRS_API_KEY``, else the file named by
        ``CPRS_API_KEY_FILE`` (surrounding whitespace dropped), else none.

        Raises:
            ValueError: both ``CPRS_API_KEY`` and ``CPRS_API_KEY_FILE`` set, an empty key, an invalid limit.
            FileNotFoundError: the key file does not exist.
        """
        if api_key_file is None and os.environ.get(API_KEY_ENV) and os.environ.get(API_KEY_FILE_ENV):
            raise ValueError(f"set {API_KEY_ENV} or {API_KEY_FILE_ENV}, not both")
        key: str | None = None
        path = api_key_file if api_key_file is not None else os.environ.get(API_KEY_FILE_ENV) or None
        if path is not None:
            file = Path(path)
            if not file.is_file():
                raise FileNotFoundError(f"API key file {os.fspath(path)!r} does not exist")
            key = file.read_text(encoding="utf-8").strip()
            if not key:
                raise ValueError(f"API key file {os.fspath(path)!r} is empty")
        elif os.environ.get(API_KEY_ENV):
            key = os.environ[API_KEY_ENV].strip()
        return cls(api_key=SecretStr(key) if key else None, **values)
