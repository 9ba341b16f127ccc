"""CPRSNodePostprocessor: compress retrieved nodes for the query before they reach the LLM."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from cprs_integrations.engine.options import DOCUMENT_ADAPTER_FIELDS, CompressionOptions, option_fields_model
from cprs_integrations.llama_index._compression import check_engine, engine_name, load_engine, model_name
from cprs_integrations.llama_index._nodes import text_of, with_text

if TYPE_CHECKING:
    from cprs_integrations.engine.engine import CPRSEngine
    from cprs_integrations.engine.result import CompressionResult

dispatcher = get_dispatcher(__name__)


_DocumentOptions = option_fields_model("_DocumentOptions", DOCUMENT_ADAPTER_FIELDS)


class CPRSNodePostprocessor(_DocumentOptions, BaseNodePostprocessor):
    """Keep only the query-relevant text of each retrieved node (QwenLong-CPRS token critic).

    The critic reads every node against the query and keeps the best sentences (or keywords, paragraphs, chunks)
    under one token budget shared by all nodes, so relevant nodes keep more than irrelevant ones. Each returned
    node is a copy of its input with the kept text, the critic's score, and the figures of the compression under
    ``metadata["cprs"]`` (excluded from what the LLM and the embedding model see). The caller's nodes are never
    changed. Nodes that are not plain text (images, audio) pass through unchanged.

    The critic loads on first use through :meth:`CPRSEngine.shared`, so all adapters of a process share it; pass
    ``engine=`` to use an engine you built.

    Args:
        model: Critic to load (local folder or hub id); ``None`` loads the embedded default critic.
        engine: A ready :class:`~cprs_integrations.engine.engine.CPRSEngine`; ``model`` and ``engine_kwargs`` are
            then ignored.
        engine_kwargs: Options of :meth:`CPRSEngine.from_pretrained` (``device``, ``dtype``, ``window_tokens``...).
        **options: ``granularity``, ``mode``, ``target_ratio``, ``target_tokens``, ``score_threshold``,
            ``instruction``, ``language``, ``token_counter``, ``separator``, ``lexical_weight``: the options of
            :class:`~cprs_integrations.engine.options.CompressionOptions` (declared there; budget default
            ``target_ratio=0.2``).
        per_node_budget: Apply the budget to each node separately instead of across all nodes (the engine's
            ``per_text_budget``).
        drop_empty: Leave out nodes of which nothing was kept.
        sort_by_score: Order the output by score instead of keeping the input order (nodes passed through keep
            their retrieval score).
        keep_retrieval_score: Keep each node's retrieval score instead of setting the critic's (which is always in
            ``metadata["cprs"]["score"]``).

    Examples:
        >>> from llama_index.core import VectorStoreIndex
        >>> from cprs_integrations.llama_index import CPRSNodePostprocessor
        >>> compressor = CPRSNodePostprocessor(target_ratio=0.1)
        >>> query_engine = index.as_query_engine(  # doctest: +SKIP
        ...     similarity_top_k=20, node_postprocessors=[compressor]
        ... )
        >>> response = query_engine.query("Who founded the company?")  # doctest: +SKIP
        >>> response.source_nodes[0].node.metadata["cprs"]["ratio"]  # doctest: +SKIP
        9.7
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    model: str | None = Field(
        default=None,
        description="Critic to load: a local folder or hub id; None loads the embedded default critic. "
        "Ignored when an engine is given.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of CPRSEngine.from_pretrained (device, dtype, window_tokens, batch_size...).",
    )
    per_node_budget: bool = Field(
        default=False,
        strict=True,
        description="Apply the budget to each node separately instead of once across all nodes of the query.",
    )
    drop_empty: bool = Field(default=True, description="Leave out nodes of which nothing was kept.")
    keep_retrieval_score: bool = Field(
        default=False,
        description="Keep each node's retrieval score as its score (as SentenceTransformerRerank does) instead of "
        "the critic's; the critic's score is always in metadata['cprs']['score'].",
    )
    sort_by_score: bool = Field(
        default=False, description="Order the output by the critic's score instead of keeping the input order."
    )

    _engine: CPRSEngine | None = PrivateAttr(default=None)

    def __init__(self, *, engine: CPRSEngine | None = None, **data: Any) -> None:
        super().__init__(**data)
        self._engine = check_engine(engine, self.model, self.engine_kwargs)

    @field_validator("model", mode="before")
    @classmethod
    def _model_as_str(cls, value: Any) -> Any:
        return model_name(value)

    @model_validator(mode="after")
    def _check_options(self) -> CPRSNodePostprocessor:
        self.compression_options()
        return self

    def compression_options(self) -> CompressionOptions:
        """The :class:`CompressionOptions` this postprocessor stands for (``per_node_budget`` is
        ``per_text_budget``).

        Raises:
            ValueError: options that do not go together (two budgets, a budget in tags mode).
        """
        return CompressionOptions.of(self, DOCUMENT_ADAPTER_FIELDS, per_text_budget=self.per_node_budget)

    @classmethod
    def class_name(cls) -> str:
        return "CPRSNodePostprocessor"

    @property
    def engine(self) -> CPRSEngine:
        """The engine in use (loads the shared one on first access)."""
        if self._engine is None:
            self._engine = load_engine(None, self.model, self.engine_kwargs)
        return self._engine

    # ---------------------------------------------------------------------------------------------- LlamaIndex

    @dispatcher.span
    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query_bundle = _require_query(query_bundle)
        if not nodes:
            return []
        engine = self.engine
        positions, texts = _text_positions(nodes)
        with self._reranking(engine, nodes, query_bundle) as event:
            results = engine.compress(query_bundle.query_str, texts, self.compression_options()) if texts else []
            out = self._assemble(nodes, positions, results)
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    @dispatcher.span
    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query_bundle = _require_query(query_bundle)
        if not nodes:
            return []
        # Loading a critic takes seconds: never on the event loop.
        engine = self._engine if self._engine is not None else await asyncio.to_thread(lambda: self.engine)
        positions, texts = _text_positions(nodes)
        with self._reranking(engine, nodes, query_bundle) as event:
            results = await engine.acompress(query_bundle.query_str, texts, self.compression_options()) if texts else []
            out = self._assemble(nodes, positions, results)
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    # ------------------------------------------------------------------------------------------------- helpers

    def _assemble(
        self, nodes: list[NodeWithScore], positions: dict[int, int], results: list[CompressionResult]
    ) -> list[NodeWithScore]:
        out: list[NodeWithScore] = []
        for i, item in enumerate(nodes):
            if i not in positions:  # not plain text: passed through as it is
                out.append(NodeWithScore(node=item.node, score=item.score))
                continue
            result = results[positions[i]]
            if self.drop_empty and not result.text:
                continue
            score = item.score if self.keep_retrieval_score else result.score
            out.append(NodeWithScore(node=with_text(item.node, result.text, _figures(result)), score=score))
        if self.sort_by_score:
            out.sort(key=lambda n: n.score if n.score is not None else -math.inf, reverse=True)
        return out

    def _reranking(self, engine: CPRSEngine, nodes: list[NodeWithScore], query_bundle: QueryBundle) -> Any:
        """Emit ``ReRankStartEvent`` and open the RERANKING callback event, as LlamaIndex rerankers do."""
        critic = engine_name(self.model, engine)
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=len(nodes), model_name=critic))
        return self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: critic,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: len(nodes),
            },
        )


def _require_query(query_bundle: QueryBundle | None) -> QueryBundle:
    if query_bundle is None:
        raise ValueError("CPRSNodePostprocessor needs the query: pass query_bundle= or query_str= to postprocess_nodes")
    return query_bundle


def _text_positions(nodes: list[NodeWithScore]) -> tuple[dict[int, int], list[str]]:
    """Which input nodes are plain text (input index -> index in ``texts``), and their texts."""
    positions: dict[int, int] = {}
    texts: list[str] = []
    for i, item in enumerate(nodes):
        text = text_of(item.node)
        if text is not None:
            positions[i] = len(texts)
            texts.append(text)
    return positions, texts


def _figures(result: CompressionResult) -> dict[str, Any]:
    ratio = result.ratio
    return {
        "spans": [[span.start, span.end, round(span.score, 6)] for span in result.spans],
        "score": result.score,
        "original_tokens": result.original_tokens,
        "compressed_tokens": result.compressed_tokens,
        "ratio": None if math.isinf(ratio) else ratio,
        "granularity": result.granularity,
        "granularity_used": result.granularity_used,
        "empty_reason": result.empty_reason,
    }
