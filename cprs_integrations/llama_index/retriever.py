"""CPRSRetriever: retrieval without an index, the critic reads every document for each query."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle

from cprs_integrations.engine.options import DOCUMENT_ADAPTER_FIELDS, CompressionOptions
from cprs_integrations.llama_index._compression import check_engine, load_engine, model_name
from cprs_integrations.llama_index._nodes import span_node, text_of

if TYPE_CHECKING:
    from cprs_integrations.engine.engine import CPRSEngine
    from cprs_integrations.engine.result import CompressionResult


class CPRSRetriever(BaseRetriever):
    """Retrieve the query-relevant spans of a set of documents with the token critic, without embeddings.

    For each query the critic reads all the text of ``nodes`` (documents or nodes) and keeps the best units under
    the budget; the kept spans come back as new ``TextNode``s, best first, at most ``similarity_top_k`` of them.
    Each span node holds an exact slice of its source text, a copy of the source metadata plus
    ``metadata["cprs"]`` (``source_node_id``, ``start``, ``end``, ``score``; hidden from prompts), character
    offsets in ``start_char_idx`` / ``end_char_idx``, and a SOURCE relationship to the source node. Nodes that are
    not plain text are ignored; the given nodes are never changed.

    Args:
        nodes: The corpus: ``Document``s or nodes (kept by reference, never changed).
        model: Critic to load (local folder or hub id); ``None`` loads the embedded default critic.
        engine: A ready :class:`~cprs_integrations.engine.engine.CPRSEngine` (``model``/``engine_kwargs`` ignored).
        engine_kwargs: Options of :meth:`CPRSEngine.from_pretrained` (``device``, ``dtype``...).
        similarity_top_k: At most this many spans per query (default 4).
        options: :class:`~cprs_integrations.engine.options.CompressionOptions`; the budget (default
            ``target_ratio=0.2``) applies to all tokens of ``nodes``, before the top-k cut.
        callback_manager: LlamaIndex callback manager.
        verbose: Passed to ``BaseRetriever``.
        **overrides: Options by name over ``options`` (``granularity``, ``mode``, ``target_ratio``,
            ``target_tokens``, ``score_threshold``, ``instruction``, ``language``, ``token_counter``,
            ``lexical_weight``).

    Raises:
        TypeError: ``nodes`` not a list of nodes, or an unknown option.
        ValueError: an invalid option or ``similarity_top_k``.

    Examples:
        >>> from llama_index.core import Document
        >>> from llama_index.core.query_engine import RetrieverQueryEngine
        >>> from cprs_integrations.llama_index import CPRSRetriever
        >>> retriever = CPRSRetriever([Document(text=report)], similarity_top_k=3)  # doctest: +SKIP
        >>> [span.text for span in retriever.retrieve("What was the revenue in 2023?")]  # doctest: +SKIP
        >>> query_engine = RetrieverQueryEngine.from_args(retriever, llm=llm)  # doctest: +SKIP
    """

    def __init__(
        self,
        nodes: Sequence[BaseNode],
        *,
        model: str | os.PathLike[str] | None = None,
        engine: CPRSEngine | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
        similarity_top_k: int = 4,
        options: CompressionOptions | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **overrides: Any,
    ) -> None:
        if isinstance(nodes, (str, BaseNode)) or not isinstance(nodes, Sequence):
            raise TypeError(f"nodes must be a list of Documents or nodes, got {type(nodes).__name__}")
        for i, node in enumerate(nodes):
            if not isinstance(node, BaseNode):
                raise TypeError(f"nodes[{i}] must be a Document or a node, got {type(node).__name__}")
        if isinstance(similarity_top_k, bool) or not isinstance(similarity_top_k, int) or similarity_top_k < 1:
            raise ValueError(f"similarity_top_k must be a positive integer, got {similarity_top_k!r}")
        not_here = sorted(set(overrides) - set(DOCUMENT_ADAPTER_FIELDS))
        if not_here:
            options_list = ", ".join(DOCUMENT_ADAPTER_FIELDS)
            raise TypeError(f"unknown argument(s) {', '.join(map(repr, not_here))}; options are {options_list}")
        self.options = CompressionOptions.build(options, **overrides)
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self._nodes = tuple(nodes)
        self._model = model_name(model)
        self._engine_kwargs = dict(engine_kwargs or {})
        self._engine = check_engine(engine, self._model, self._engine_kwargs)
        self.similarity_top_k = similarity_top_k

    @property
    def engine(self) -> CPRSEngine:
        """The engine in use (loads the shared one on first access)."""
        if self._engine is None:
            self._engine = load_engine(None, self._model, self._engine_kwargs)
        return self._engine

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        sources, texts = self._texts()
        if not texts:
            return []
        return self._best_spans(sources, self.engine.compress(query_bundle.query_str, texts, self.options))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        sources, texts = self._texts()
        if not texts:
            return []
        # Loading a critic takes seconds: never on the event loop.
        engine = self._engine if self._engine is not None else await asyncio.to_thread(lambda: self.engine)
        results = await engine.acompress(query_bundle.query_str, texts, self.options)
        return self._best_spans(sources, results)

    def _texts(self) -> tuple[list[BaseNode], list[str]]:
        sources: list[BaseNode] = []
        texts: list[str] = []
        for node in self._nodes:
            text = text_of(node)
            if text is not None:
                sources.append(node)
                texts.append(text)
        return sources, texts

    def _best_spans(self, sources: list[BaseNode], results: list[CompressionResult]) -> list[NodeWithScore]:
        """All kept spans, best score first (ties in corpus order), cut at ``similarity_top_k``."""
        ranked = sorted(
            ((span.score, i, span) for i, result in enumerate(results) for span in result.spans),
            key=lambda item: (-item[0], item[1], item[2].start),
        )[: self.similarity_top_k]
        return [
            NodeWithScore(node=span_node(sources[i], results[i].source, span), score=score) for score, i, span in ranked
        ]
