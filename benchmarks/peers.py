"""Framework peers with the offline MiniLM embeddings: LangChain ``EmbeddingsFilter``, LlamaIndex
``SentenceEmbeddingOptimizer``, and RAG (top ~256-token chunks by embedding similarity).

Both framework filters run on the example's sentence-split text, configured as their docs show but asked for a full
ranking (LangChain: ``k`` = all sentences; LlamaIndex: ``percentile_cutoff=1.0`` without neighbour sentences); that
ranking is then filled into the o200k budget with the shared fill, like every sentence ranker.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from benchmarks.common import o200k
from benchmarks.methods import Method, UnitRanker, cosine_scores, fill, spans_output
from benchmarks.metrics import Output
from benchmarks.tasks import BenchExample
from cprs_integrations.engine.segment import sentence_spans
from cprs_integrations.models.testing import minilm_dir

#: RAG chunk size in o200k tokens.
RAG_CHUNK_TOKENS = 256


def ranking_to_scores(order: list[int], n: int) -> np.ndarray:
    """Scores that sort like ``order`` (best first); units missing from it score lowest."""
    scores = np.zeros(n)
    for rank, unit in enumerate(order):
        scores[unit] = n - rank
    return scores


class LangChainEmbeddingsFilter(UnitRanker):
    """``langchain_classic`` ``EmbeddingsFilter`` over one ``Document`` per sentence, MiniLM embeddings."""

    name = "langchain-embeddings-filter"
    label = "LangChain EmbeddingsFilter"
    note = (
        "EmbeddingsFilter(embeddings=HuggingFaceEmbeddings(all-MiniLM-L6-v2, normalised), k=all sentences) on one "
        "Document per sentence; its similarity order filled into the budget"
    )

    def __init__(self) -> None:
        from langchain_classic.retrievers.document_compressors import EmbeddingsFilter
        from langchain_community.embeddings import HuggingFaceEmbeddings

        self.embeddings = HuggingFaceEmbeddings(
            model_name=str(minilm_dir()), encode_kwargs={"normalize_embeddings": True, "batch_size": 64}
        )
        self._filter_class = EmbeddingsFilter

    def unit_scores(self, example: BenchExample) -> np.ndarray:
        from langchain_core.documents import Document

        documents = [Document(page_content=t, metadata={"unit": i}) for i, t in enumerate(example.unit_texts())]
        if not documents:
            return np.zeros(0)
        compressor = self._filter_class(embeddings=self.embeddings, k=len(documents))
        kept = compressor.compress_documents(documents, example.query)
        return ranking_to_scores([d.metadata["unit"] for d in kept], len(documents))


class LlamaIndexSentenceOptimizer(UnitRanker):
    """``llama_index`` ``SentenceEmbeddingOptimizer`` on a node of the whole text, split into our sentences."""

    name = "llamaindex-sentence-optimizer"
    label = "LlamaIndex SentenceEmbeddingOptimizer"
    note = (
        "SentenceEmbeddingOptimizer(embed_model=HuggingFaceEmbedding(all-MiniLM-L6-v2), percentile_cutoff=1.0, "
        "context_before=0, context_after=0, tokenizer_fn=our sentence split); its order filled into the budget"
    )

    def __init__(self) -> None:
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        self.embed_model = HuggingFaceEmbedding(model_name=str(minilm_dir()), device="cpu", embed_batch_size=64)

    def unit_scores(self, example: BenchExample) -> np.ndarray:
        from llama_index.core.postprocessor import SentenceEmbeddingOptimizer
        from llama_index.core.schema import NodeWithScore, TextNode

        sentences = example.unit_texts()
        if not sentences:
            return np.zeros(0)
        optimizer = SentenceEmbeddingOptimizer(
            embed_model=self.embed_model,
            percentile_cutoff=1.0,
            context_before=0,
            context_after=0,
            tokenizer_fn=lambda _text: sentences,
        )
        [node] = optimizer.postprocess_nodes([NodeWithScore(node=TextNode(text=example.text))], query_str=example.query)
        order = recover_order(node.node.get_content(), sentences)
        return ranking_to_scores(order, len(sentences))


def recover_order(joined: str, sentences: list[str]) -> list[int]:
    """Indices of ``sentences`` in the order they appear in ``" ".join(sentences[i] for i in order)``.

    Identical sentences are interchangeable (the first unused index is taken); where one sentence is a prefix of
    another, the longest match followed by a space (or the end) wins.

    Raises:
        ValueError: if ``joined`` is not such a join.
    """
    unused: dict[str, list[int]] = defaultdict(list)
    for i in reversed(range(len(sentences))):
        unused[sentences[i]].append(i)
    by_head: dict[str, set[str]] = defaultdict(set)
    for text in unused:
        by_head[text[:8]].add(text)
    heads = sorted({len(h) for h in by_head}, reverse=True)
    order: list[int] = []
    pos = 0
    while pos < len(joined) and len(order) < len(sentences):
        match = None
        for size in heads:
            for text in by_head.get(joined[pos : pos + size], ()):
                end = pos + len(text)
                fits = joined.startswith(text, pos) and (end == len(joined) or joined[end] == " ")
                if fits and unused[text] and (match is None or len(text) > len(match)):
                    match = text
        if match is None:
            raise ValueError(f"cannot match the optimizer's output at character {pos}")
        order.append(unused[match].pop())
        pos += len(match) + 1
    return order


def rag_chunks(example: BenchExample, chunk_tokens: int = RAG_CHUNK_TOKENS) -> np.ndarray:
    """Consecutive sentences (title lines included) packed into chunks of at most ``chunk_tokens`` o200k tokens."""
    count = o200k()
    chunks: list[tuple[int, int]] = []
    start = end = size = 0
    for s, e in sentence_spans(example.text).tolist():
        tokens = count(example.text[s:e])
        if size and size + tokens > chunk_tokens:
            chunks.append((start, end))
            size = 0
        if not size:
            start = s
        end, size = e, size + tokens
    if size:
        chunks.append((start, end))
    return np.asarray(chunks, dtype=np.int64).reshape(-1, 2)


class RAGChunks(Method):
    """Retrieval: ~256-token chunks, MiniLM cosine to the query, top chunks that fit the budget."""

    name = "rag"
    label = f"RAG ({RAG_CHUNK_TOKENS}-token chunks)"
    note = (
        f"sentence-aligned chunks of <= {RAG_CHUNK_TOKENS} o200k tokens (title lines included), all-MiniLM-L6-v2 "
        "cosine (sentence-transformers truncates at 256 MiniLM tokens), greedy fill of the best chunks"
    )

    def run(self, example: BenchExample, budgets: dict[str, int]) -> dict[str, Output]:
        chunks = rag_chunks(example)
        scores = cosine_scores(example.query, [example.text[s:e] for s, e in chunks.tolist()])
        return {
            label: spans_output(example.text, fill(example, scores, tokens, units=chunks))
            for label, tokens in budgets.items()
        }


def peer_factories() -> dict[str, Any]:
    """Constructors of the framework peers by name (each may raise if its package is missing)."""
    return {
        LangChainEmbeddingsFilter.name: LangChainEmbeddingsFilter,
        LlamaIndexSentenceOptimizer.name: LlamaIndexSentenceOptimizer,
        RAGChunks.name: RAGChunks,
    }
