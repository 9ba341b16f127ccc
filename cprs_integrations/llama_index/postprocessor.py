"""CPRSNodePostprocessor: compress retrieved nodes for the query before they reach the LLM."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from cprs_integrations.engine.lexical import DEFAULT_LEXICAL_WEIGHT
from cprs_integrations.llama_index._compression import (
    DEFAULT_TARGET_RATIO,
    budget_options,
    check_engine,
    check_options,
    engine_name,
    load_engine,
    model_name,
)
from cprs_integrations.llama_index._nodes import text_of, with_text

if TYPE_CHECKING:
    from cprs_integrations.engine.engine import CPRSEngine
    from cprs_integrations.engine.result import CompressionResult

dispatcher = get_dispatcher(__name__)


class CPRSNodePostprocessor(BaseNodePostprocessor):
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
        granularity: Unit kept: ``token``, ``sentence``, ``paragraph`` or ``chunk``.
        instruction: Free-text instruction for the critic (default: the template of ``granularity``).
        mode: ``budget`` (best units under a budget) or ``tags`` (the critic's own tags, no budget).
        target_ratio: Budget mode: share of tokens kept; ``0.2`` when neither budget is given.
        target_tokens: Budget mode: at most this many tokens kept.
        per_node_budget: Apply the budget to each node separately instead of across all nodes.
        token_counter: How budget tokens are counted (tiktoken name, tiktoken Encoding, HF tokenizer or callable).
        separator: Inserted between non-adjacent kept slices of a node.
        lexical_weight: Budget mode: weight of BM25 next to the critic when ranking units (0: the critic alone).
        drop_empty: Leave out nodes of which nothing was kept.
        sort_by_score: Order the output by the critic's score instead of keeping the input order (nodes passed
            through keep their retrieval score).

    Example:
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
    granularity: Literal["token", "sentence", "paragraph", "chunk"] = Field(
        default="sentence", description="Unit of selection: token (keywords), sentence, paragraph or chunk."
    )
    instruction: str | None = Field(
        default=None, description="Free-text instruction for the critic; None uses the template of granularity."
    )
    mode: Literal["budget", "tags"] = Field(
        default="budget",
        description="budget: keep the best units under a token budget; tags: keep what the critic tags (no budget).",
    )
    target_ratio: float | None = Field(
        default=None,
        description=f"Budget mode: share of tokens kept, in (0, 1]; {DEFAULT_TARGET_RATIO} when neither "
        "target_ratio nor target_tokens is given.",
    )
    target_tokens: int | None = Field(default=None, description="Budget mode: at most this many tokens kept.")
    per_node_budget: bool = Field(
        default=False,
        description="Apply the budget to each node separately instead of once across all nodes of the query.",
    )
    token_counter: Any = Field(
        default="o200k_base",
        description="How budget tokens are counted: a tiktoken encoding name, a tiktoken Encoding, an HF "
        "tokenizer or a callable str -> int.",
    )
    separator: str = Field(default=" ... ", description="Inserted between non-adjacent kept slices of a node.")
    lexical_weight: float = Field(
        default=DEFAULT_LEXICAL_WEIGHT,
        ge=0.0,
        allow_inf_nan=False,
        description="Budget mode at sentence / paragraph / chunk granularity: weight of BM25 next to the critic "
        "when ranking units (z-score fusion); 0 ranks by the critic alone.",
    )
    drop_empty: bool = Field(default=True, description="Leave out nodes of which nothing was kept.")
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
    def _check_budget(self) -> CPRSNodePostprocessor:
        check_options(self.granularity, self.mode, self.target_ratio, self.target_tokens)
        return self

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
            results = engine.compress(query_bundle.query_str, texts, **self._options()) if texts else []
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
            results = await engine.acompress(query_bundle.query_str, texts, **self._options()) if texts else []
            out = self._assemble(nodes, positions, results)
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    # ------------------------------------------------------------------------------------------------- helpers

    def _options(self) -> dict[str, Any]:
        return {
            "granularity": self.granularity,
            "instruction": self.instruction,
            "mode": self.mode,
            "token_counter": self.token_counter,
            "per_text_budget": self.per_node_budget,
            "separator": self.separator,
            "lexical_weight": self.lexical_weight,
            **budget_options(self.mode, self.target_ratio, self.target_tokens),
        }

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
            out.append(NodeWithScore(node=with_text(item.node, result.text, _figures(result)), score=result.score))
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
        "original_tokens": result.original_tokens,
        "compressed_tokens": result.compressed_tokens,
        "ratio": None if math.isinf(ratio) else ratio,
        "granularity": result.granularity,
    }
