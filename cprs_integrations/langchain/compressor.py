"""CPRSDocumentCompressor: query-guided compression of retrieved documents, as a LangChain document compressor."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager, Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.load import Serializable
from pydantic import ConfigDict, Field

from cprs_integrations.langchain._metadata import METADATA_KEY, check_metadata, with_figures
from cprs_integrations.langchain._settings import CompressionSettings, check_query

if TYPE_CHECKING:
    from cprs_integrations.engine.result import CompressionResult

__all__ = ["METADATA_KEY", "CPRSDocumentCompressor", "compression_metadata"]


class CPRSDocumentCompressor(CompressionSettings, BaseDocumentCompressor, Serializable):
    """Keep only the parts of each document that a CPRS critic finds relevant to the query.

    Every document is cut into units (sentences by default), the critic scores them for the query, and the best
    units are kept under one token budget shared by all the documents of a call (``per_document_budget=True``
    gives each document its own). With neither ``target_ratio`` nor ``target_tokens``, 20% of the tokens are kept.

    The output is new ``Document`` objects in input order: the kept slices of ``page_content`` joined by
    ``separator``, the ``id`` of the input document, a deep copy of its metadata, and the figures of the
    compression under ``metadata["cprs"]``: ``spans`` (``[start, end, score]`` character offsets into the input
    ``page_content``), ``score`` (best keep score of the document), ``original_tokens``, ``compressed_tokens``,
    ``ratio`` (``None`` when nothing was kept), ``granularity``, ``granularity_used``, ``empty_reason`` and
    ``mode``; ``metadata["relevance_score"]`` holds ``score`` as rerankers do (an upstream one is kept with
    ``keep_retrieval_score=True``). Metadata values that cannot be deep-copied are kept by reference; a
    ``metadata["cprs"]`` of the caller's own is refused before scoring. The caller's documents are never changed.
    Documents with nothing kept are dropped unless ``drop_empty=False``.

    The critic loads on first use (``CPRSEngine.shared(model, **engine_kwargs)``), or pass ``engine=``.

    Examples:
        >>> from langchain_classic.retrievers import ContextualCompressionRetriever
        >>> compressor = CPRSDocumentCompressor(target_ratio=0.1)
        >>> retriever = ContextualCompressionRetriever(
        ...     base_compressor=compressor, base_retriever=vector_store.as_retriever(search_kwargs={"k": 20})
        ... )  # doctest: +SKIP
        >>> docs = retriever.invoke("Who directed Ed Wood?")  # doctest: +SKIP
        >>> docs[0].metadata["cprs"]["ratio"]  # doctest: +SKIP
        9.6
    """

    drop_empty: bool = Field(
        default=True,
        description="Drop documents with nothing kept; False keeps them with an empty page_content.",
    )

    # Serializable's config allows extra fields; a typo must be an error, not ignored.
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """Serializable with ``dumpd`` / ``load`` (``valid_namespaces=["cprs_integrations"]``,
        ``allowed_objects=[CPRSDocumentCompressor]``), unless built with ``engine=`` (pass ``model`` /
        ``engine_kwargs`` instead) or a non-string ``token_counter``."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["cprs_integrations", "langchain", "compressor"]

    keep_retrieval_score: bool = Field(
        default=False,
        description="Keep an upstream metadata['relevance_score'] (e.g. a reranker's) instead of writing the "
        "critic's score there; the critic's score is always in metadata['cprs']['score'].",
    )

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Compress ``documents`` for ``query``.

        Args:
            documents: The retrieved documents (not modified).
            query: What the user asks (non-empty).
            callbacks: LangChain callbacks (a retriever passes its child run's): the compression is reported as a
                ``CPRSDocumentCompressor`` chain run (inputs: query and document count; outputs: the documents
                kept, tokens in and out), so it shows in callbacks and tracing.

        Returns:
            New documents in input order (those with nothing kept left out when ``drop_empty``).

        Raises:
            ValueError: empty query.
        """
        query = check_query(query)
        documents = list(documents)
        if not documents:
            return []
        check_metadata(documents)
        run = CallbackManager.configure(callbacks).on_chain_start(
            {"name": RUN_NAME}, _run_inputs(query, documents), name=RUN_NAME
        )
        try:
            results = self.get_engine().compress(
                query, [doc.page_content for doc in documents], self.compression_options()
            )
            out = self._to_documents(documents, results)
        except BaseException as error:
            run.on_chain_error(error)
            raise
        run.on_chain_end(_run_outputs(out, results))
        return out

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """:meth:`compress_documents` without blocking the event loop (the critic runs in a worker thread)."""
        query = check_query(query)
        documents = list(documents)
        if not documents:
            return []
        check_metadata(documents)
        run = await AsyncCallbackManager.configure(callbacks).on_chain_start(
            {"name": RUN_NAME}, _run_inputs(query, documents), name=RUN_NAME
        )
        try:
            engine = await self.aget_engine()
            results = await engine.acompress(query, [doc.page_content for doc in documents], self.compression_options())
            out = self._to_documents(documents, results)
        except BaseException as error:
            await run.on_chain_error(error)
            raise
        await run.on_chain_end(_run_outputs(out, results))
        return out

    def _to_documents(self, documents: list[Document], results: list[CompressionResult]) -> list[Document]:
        out = []
        for doc, result in zip(documents, results):
            if self.drop_empty and not result.spans:
                continue
            metadata = with_figures(doc.metadata, compression_metadata(result), result.score, self.keep_retrieval_score)
            out.append(doc.model_copy(update={"page_content": result.text, "metadata": metadata}))
        return out


RUN_NAME = "CPRSDocumentCompressor"


def _run_inputs(query: str, documents: list[Document]) -> dict[str, Any]:
    return {"query": query, "documents": len(documents)}


def _run_outputs(out: list[Document], results: list[CompressionResult]) -> dict[str, Any]:
    return {
        "documents": out,
        "original_tokens": sum(r.original_tokens for r in results),
        "compressed_tokens": sum(r.compressed_tokens for r in results),
    }


def compression_metadata(result: CompressionResult) -> dict[str, Any]:
    """The figures of one compression, as stored under ``metadata["cprs"]`` (JSON-ready)."""
    ratio = result.ratio
    return {
        "spans": [[span.start, span.end, span.score] for span in result.spans],
        "score": result.score,
        "original_tokens": result.original_tokens,
        "compressed_tokens": result.compressed_tokens,
        "ratio": None if math.isinf(ratio) else ratio,
        "granularity": result.granularity,
        "granularity_used": result.granularity_used,
        "empty_reason": result.empty_reason,
        "mode": result.mode,
    }
