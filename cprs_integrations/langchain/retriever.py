"""CPRSRetriever: retrieval without an index: compress every document for the query and return the kept pieces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import run_in_executor
from pydantic import ConfigDict, Field, field_validator, model_validator

from cprs_integrations.langchain._metadata import check_metadata, with_figures
from cprs_integrations.langchain._settings import CompressionSettings, check_query

if TYPE_CHECKING:
    from cprs_integrations.engine.result import CompressionResult


class CPRSRetriever(CompressionSettings, BaseRetriever):
    """The "no RAG" path: the critic reads all the documents for each query and returns what it keeps.

    Every query compresses *all* ``documents`` (or everything ``loader`` yields) under one token budget shared by
    the documents (``per_document_budget=True`` gives each its own; 20% of the tokens by default). Each kept span
    becomes one ``Document``: its ``page_content`` is the exact slice of the source ``page_content``, its metadata
    a deep copy of the source metadata plus ``metadata["cprs"]`` with ``source_index`` (position of the source
    document), ``source_id``, ``start``, ``end`` (character offsets into the source) and ``score``. Spans come best
    score first (ties in document order), at most ``k`` of them (``invoke(query, k=...)`` overrides ``k``).

    Cost grows linearly with the total length of the documents: for large collections, put a vector store first
    and use :class:`~cprs_integrations.langchain.CPRSDocumentCompressor` on what it returns.

    Examples:
        >>> retriever = CPRSRetriever(documents=docs, target_ratio=0.05, k=5)  # doctest: +SKIP
        >>> for doc in retriever.invoke("Which company did she found?"):  # doctest: +SKIP
        ...     print(round(doc.metadata["cprs"]["score"], 2), doc.page_content)
    """

    # LangChain base classes allow extra fields; a typo (top_n=2 for k) must be an error, not ignored.
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    documents: list[Document] = Field(
        default_factory=list, description="The documents searched (exclusive with loader)."
    )
    loader: Any = Field(
        default=None,
        exclude=True,
        description="A document loader (lazy_load() or load()), read again on every query (exclusive with documents).",
    )
    k: int = Field(default=4, ge=1, description="Number of kept spans returned (best first).")

    @field_validator("loader")
    @classmethod
    def _check_loader(cls, value: Any) -> Any:
        if value is not None and not (hasattr(value, "lazy_load") or hasattr(value, "load")):
            raise ValueError(f"loader must have a lazy_load() or load() method, got {type(value).__name__}")
        return value

    @model_validator(mode="after")
    def _documents_or_loader(self) -> CPRSRetriever:
        if self.loader is not None and self.documents:
            raise ValueError("pass documents= or loader=, not both")
        return self

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        query = check_query(query)
        k = self._check_k(k)
        documents = self._load_documents()
        if not documents:
            return []
        check_metadata(documents)
        results = self.get_engine().compress(query, [doc.page_content for doc in documents], self.compression_options())
        return top_spans(documents, results, k)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        query = check_query(query)
        k = self._check_k(k)
        documents = self.documents if self.loader is None else await run_in_executor(None, self._load_documents)
        if not documents:
            return []
        check_metadata(documents)
        engine = await self.aget_engine()
        results = await engine.acompress(query, [doc.page_content for doc in documents], self.compression_options())
        return top_spans(documents, results, k)

    def _check_k(self, k: Any) -> int:
        if k is None:
            return self.k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return k

    def _load_documents(self) -> list[Document]:
        if self.loader is None:
            return list(self.documents)
        if hasattr(self.loader, "lazy_load"):
            return list(self.loader.lazy_load())
        return list(self.loader.load())


def top_spans(documents: list[Document], results: list[CompressionResult], k: int) -> list[Document]:
    """The ``k`` best kept spans over all documents as new documents (best score first, ties in input order)."""
    ranked = sorted(
        ((-span.score, index, span.start, span.end) for index, result in enumerate(results) for span in result.spans),
    )
    out = []
    for negative_score, index, start, end in ranked[:k]:
        source = documents[index]
        figures = {"source_index": index, "source_id": source.id, "start": start, "end": end, "score": -negative_score}
        metadata = with_figures(source.metadata, figures, -negative_score, keep_retrieval_score=False)
        out.append(Document(page_content=source.page_content[start:end], metadata=metadata))
    return out
