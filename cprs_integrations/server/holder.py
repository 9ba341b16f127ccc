"""EngineHolder: the server's one engine, given ready or loaded in the background after start-up.

While a critic loads (minutes for a 7B), ``/healthz`` answers and ``/readyz`` says ``loading``; compression routes
answer 503 with ``Retry-After``. A load that fails is logged, ``/readyz`` says ``failed``, and ``on_error`` is
called (``cprs serve`` stops the server and exits non-zero).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

from cprs_integrations.engine.engine import CPRSEngine
from cprs_integrations.server.admission import Admission
from cprs_integrations.server.errors import ApiError

logger = logging.getLogger("cprs_integrations.server")

State = Literal["loading", "ready", "failed"]


class EngineHolder:
    """Holds the engine, or loads it.

    Args:
        engine: A built engine (ready at once), or ``None`` with ``factory``.
        factory: Builds the engine (called once, in a worker thread, when the app starts).
        on_error: Called with the exception when ``factory`` fails.

    Raises:
        ValueError: neither or both of ``engine`` and ``factory``.
    """

    def __init__(
        self,
        engine: CPRSEngine | None = None,
        factory: Callable[[], CPRSEngine] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ):
        if (engine is None) == (factory is None):
            raise ValueError("give the server an engine or a factory that builds one, not both and not neither")
        self._engine, self._factory, self._on_error = engine, factory, on_error
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._admission: Admission | None = None

    @property
    def state(self) -> State:
        """``loading``, ``ready`` or ``failed``."""
        if self._engine is not None:
            return "ready"
        return "failed" if self.error is not None else "loading"

    @property
    def loaded(self) -> CPRSEngine | None:
        """The engine, or ``None`` while it loads (or after a failed load)."""
        return self._engine

    def engine(self, retry_after_s: int) -> CPRSEngine:
        """The engine, for a route.

        Raises:
            ApiError: 503 ``not_ready`` (with ``Retry-After``) while it loads or after a failed load.
        """
        if self._engine is not None:
            return self._engine
        if self.error is not None:
            raise ApiError(503, "not_ready", "the critic failed to load; see the server log")
        raise ApiError(
            503, "not_ready", "the critic is loading; retry shortly", headers={"Retry-After": str(retry_after_s)}
        )

    def admission(self, engine: CPRSEngine) -> Admission:
        """The admission gate in front of ``engine`` (built once)."""
        if self._admission is None:
            self._admission = Admission(engine)
        return self._admission

    def start(self) -> None:
        """Start loading in the background (no-op when the engine was given)."""
        if self._factory is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._load(self._factory))

    async def _load(self, factory: Callable[[], CPRSEngine]) -> None:
        try:
            engine = await asyncio.to_thread(factory)
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"
            logger.error("cprs server: the critic failed to load: %s", self.error)
            if self._on_error is not None:
                self._on_error(error)
            return
        self._engine = engine
        logger.info("cprs server: ready: %r", engine)

    async def stop(self) -> None:
        """At shutdown: wait no longer for a load in progress (its thread finishes on its own), and close an engine
        this holder loaded (its worker threads; an engine given to it is its owner's to close)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._factory is not None and self._engine is not None:
            self._engine.close()
