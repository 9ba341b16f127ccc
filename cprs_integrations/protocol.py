"""What the adapters need from an engine: :class:`Compressor` (``compress``, ``acompress``).

Both the in-process :class:`~cprs_integrations.engine.engine.CPRSEngine` and the HTTP client
:class:`~cprs_integrations.api.client.RemoteCPRSEngine` satisfy it, so every LangChain and LlamaIndex adapter takes
either as ``engine=``. :class:`ScoringCompressor` adds ``score`` and ``select`` (per-token scores, then selection
without re-scoring), which message pruning with ``keep_alternation`` uses. Both protocols are runtime-checkable:
``isinstance(obj, Compressor)`` checks that the methods exist (not their signatures).

No torch, no httpx here.

Examples:
    >>> from cprs_integrations.protocol import Compressor
    >>> class Echo:
    ...     def compress(self, query, texts, options=None, **kw): return []
    ...     async def acompress(self, query, texts, options=None, **kw): return []
    >>> isinstance(Echo(), Compressor)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cprs_integrations.engine.options import CompressionOptions
    from cprs_integrations.engine.result import CompressionResult, TokenScores

__all__ = ["Compressor", "ScoringCompressor"]


@runtime_checkable
class Compressor(Protocol):
    """Compresses texts for a query: one :class:`~cprs_integrations.engine.result.CompressionResult` per text, in
    input order (see :meth:`CPRSEngine.compress <cprs_integrations.engine.engine.CPRSEngine.compress>` for the
    arguments and the errors raised)."""

    def compress(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        timeout: float | None = None,
        **overrides: Any,
    ) -> list[CompressionResult]:
        """Compress ``texts`` for ``query``."""
        ...

    async def acompress(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        timeout: float | None = None,
        **overrides: Any,
    ) -> list[CompressionResult]:
        """:meth:`compress` without blocking the event loop."""
        ...


@runtime_checkable
class ScoringCompressor(Compressor, Protocol):
    """A :class:`Compressor` that also gives per-token scores and selects on them without re-scoring."""

    def score(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        **overrides: Any,
    ) -> list[TokenScores]:
        """Per-token B/I/O/E probabilities of each text."""
        ...

    async def ascore(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        **overrides: Any,
    ) -> list[TokenScores]:
        """:meth:`score` without blocking the event loop."""
        ...

    def select(
        self, scored: Sequence[TokenScores], options: CompressionOptions | None = None, **overrides: Any
    ) -> list[CompressionResult]:
        """Selection alone, on scores from :meth:`score`."""
        ...
