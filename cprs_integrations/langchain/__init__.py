"""LangChain adapters for CPRS query-guided context compression.

* :class:`CPRSDocumentCompressor`: a document compressor (``ContextualCompressionRetriever``,
  ``DocumentCompressorPipeline``) that keeps only the query-relevant parts of retrieved documents.
* :class:`CPRSRetriever`: retrieval without an index: the critic reads every document and returns the kept spans.
* :func:`prune_messages` / :class:`CPRSMessagePruner`: compress the older turns of an agent's chat history.
* :class:`CPRSPruningMiddleware` / :class:`CPRSToolOutputCompressor`: agent middleware for LangChain 1.x
  ``create_agent`` (prune what each model call sends; compress tool results). They need the ``langchain`` package
  and are imported on first access, so importing this package does not import ``langchain`` or ``langgraph``.

Importing this package imports ``langchain_core`` but not torch: the critic loads on first use, through
``CPRSEngine.shared`` (one loaded critic per process), unless an ``engine=`` is passed.

Examples:
    >>> from cprs_integrations.langchain import CPRSDocumentCompressor
    >>> compressor = CPRSDocumentCompressor(target_ratio=0.1)
    >>> compressed = compressor.compress_documents(docs, "Who directed Ed Wood?")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import langchain_core  # noqa: F401
except ImportError as e:
    raise ImportError(
        'cprs_integrations.langchain needs langchain-core: pip install "cprs-integrations[langchain]"'
    ) from e

from cprs_integrations.langchain.compressor import CPRSDocumentCompressor
from cprs_integrations.langchain.memory import CPRSMessagePruner, aprune_messages, prune_messages
from cprs_integrations.langchain.retriever import CPRSRetriever

if TYPE_CHECKING:
    from cprs_integrations.langchain.middleware import CPRSPruningMiddleware, CPRSToolOutputCompressor

_MIDDLEWARE = ("CPRSPruningMiddleware", "CPRSToolOutputCompressor")

__all__ = [
    "CPRSDocumentCompressor",
    "CPRSMessagePruner",
    "CPRSPruningMiddleware",
    "CPRSRetriever",
    "CPRSToolOutputCompressor",
    "aprune_messages",
    "prune_messages",
]


def __getattr__(name: str) -> Any:
    """The middleware classes, imported on first access (they need ``langchain``, which imports ``langgraph``)."""
    if name in _MIDDLEWARE:
        from cprs_integrations.langchain import middleware

        return getattr(middleware, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
