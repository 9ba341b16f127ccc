"""Our engine as benchmark methods: the default (critic fused with BM25, ``lexical_weight`` 0.5), the critic alone
(``lexical_weight=0``), budget mode at paragraph / chunk granularity (engine defaults), and tag mode.

Each example is scored once per instruction with :meth:`CPRSEngine.score`; every budget (and tag mode) is then
applied to the same scores. Sentence granularity ranks the example's sentence units (so HotpotQA titles are never
kept, as for every unit ranker) with the engine's unit score and the shared fill; paragraph, chunk and tag mode
go through :meth:`CPRSEngine.select` unchanged (their units include HotpotQA title lines).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.common import SEPARATOR
from benchmarks.methods import Method, UnitRanker, spans_output
from benchmarks.metrics import Output
from benchmarks.tasks import BenchExample
from cprs_integrations.engine.engine import CPRSEngine, TokenScores
from cprs_integrations.engine.lexical import bm25, zscore
from cprs_integrations.engine.prompts import instruction_for
from cprs_integrations.engine.selection import keep_log_odds, token_unit_index

#: Critic tokens per chunk unit of the ``chunk`` granularity (the engine's default).
CHUNK_TOKENS = 128


class EngineScores:
    """Scores of the current example, once per instruction, shared by every engine-based method."""

    def __init__(self, engine: CPRSEngine):
        self.engine = engine
        self._example: tuple[str, str] | None = None
        self._scores: dict[str, TokenScores] = {}

    def get(self, example: BenchExample, granularity: str) -> TokenScores:
        """Token scores of ``example`` under the canonical instruction of ``granularity`` (cached)."""
        key = (example.task, example.id)
        if key != self._example:
            self._example, self._scores = key, {}
        instruction = instruction_for(granularity)
        if instruction not in self._scores:
            [scored] = self.engine.score(example.query, [example.text], granularity=granularity, show_progress=False)
            self._scores[instruction] = scored
        return self._scores[instruction]


def sentence_log_odds(example: BenchExample, scored: TokenScores) -> np.ndarray:
    """Mean keep log-odds of each sentence unit's tokens (the logit of the engine's unit score; -inf if none)."""
    units = example.units
    if len(units) == 0:
        return np.zeros(0)
    index = token_unit_index(units, scored.offsets)
    valid = index >= 0
    sums = np.bincount(index[valid], weights=keep_log_odds(scored.probs)[valid], minlength=len(units))
    counts = np.bincount(index[valid], minlength=len(units))
    return np.divide(sums, counts, out=np.full(len(units), -np.inf), where=counts > 0)


class OursSentence(UnitRanker):
    """The critic alone (``lexical_weight=0``): its sentence scores, budget mode."""

    name = "ours-sentence"
    label = "ours, critic alone (sentence)"

    def __init__(self, scores: EngineScores, model_name: str):
        self.scores = scores
        self.note = (
            f"critic {model_name}; sentence instruction; unit score = mean keep log-odds of its tokens; "
            "the engine with lexical_weight=0"
        )

    def unit_scores(self, example: BenchExample) -> np.ndarray:
        return sentence_log_odds(example, self.scores.get(example, "sentence"))


class OursFused(UnitRanker):
    """The engine's default ranking: critic sentence logit plus ``weight`` x BM25, both z-scored in the example."""

    name = "ours+bm25"

    def __init__(self, scores: EngineScores, weight: float = 0.5):
        self.scores = scores
        self.weight = weight
        self.label = f"ours, default (sentence; critic + {weight:g} x BM25)"
        self.note = (
            f"z(critic sentence logit) + {weight:g} x z(BM25 per sentence, titles prepended): the engine's budget "
            f"mode with lexical_weight={weight:g} (cprs_integrations.engine.lexical, the same functions) on the "
            "task's sentence units; reuses the sentence scoring pass"
        )

    def unit_scores(self, example: BenchExample) -> np.ndarray:
        critic = zscore(sentence_log_odds(example, self.scores.get(example, "sentence")))
        lexical = zscore(bm25(example.query, example.unit_texts(with_titles=True)))
        return critic + self.weight * lexical


class OursGranularity(Method):
    """Budget mode through :meth:`CPRSEngine.select` at ``paragraph`` or ``chunk`` granularity."""

    def __init__(self, scores: EngineScores, granularity: str):
        self.scores = scores
        self.granularity = granularity
        self.name = f"ours-{granularity}"
        self.label = f"ours ({granularity})"
        extra = f" of <= {CHUNK_TOKENS} critic tokens" if granularity == "chunk" else ""
        shared = "; reuses the paragraph scoring pass (same instruction)" if granularity == "chunk" else ""
        self.note = (
            f"engine.select(granularity={granularity!r}){extra}, engine defaults (lexical_weight 0.5); units "
            f"include HotpotQA title lines{shared}"
        )

    def run(self, example: BenchExample, budgets: dict[str, int]) -> dict[str, Output]:
        scored = self.scores.get(example, self.granularity)
        out = {}
        for label, tokens in budgets.items():
            [result] = self.scores.engine.select(
                [scored],
                granularity=self.granularity,
                target_tokens=max(1, tokens),
                separator=SEPARATOR,
                chunk_tokens=CHUNK_TOKENS,
            )
            out[label] = _result_output(example, result, empty=tokens < 1)
        return out


class OursEngine(OursGranularity):
    """What users run: ``engine.compress`` defaults (sentence units of the engine's own segmentation, BM25 fusion at
    ``lexical_weight`` 0.5, the separator charged where written, refill), through ``engine.select`` on the same
    scores; kept spans are matched against the gold spans of the task."""

    def __init__(self, scores: EngineScores):
        super().__init__(scores, "sentence")
        self.name = "ours"
        self.label = "ours, as users run it (engine defaults)"
        self.note = (
            "engine.select(granularity='sentence') with the engine's defaults: its own sentence units (ICU, "
            "Markdown-aware), lexical_weight 0.5, separator charged where written, refill; gold facts matched by "
            "span overlap"
        )


class OursTags(Method):
    """Tag mode: the official argmax tags, widened to sentences; no budget (its ratio is reported)."""

    name = "ours-tags"
    label = "ours (tag mode)"
    note = (
        "engine.select(mode='tags', granularity='sentence'): official argmax + gap fill, no budget; reuses the "
        "sentence scoring pass (its time excludes scoring)"
    )

    def __init__(self, scores: EngineScores):
        self.scores = scores

    def run(self, example: BenchExample, budgets: dict[str, int]) -> dict[str, Output]:
        scored = self.scores.get(example, "sentence")
        [result] = self.scores.engine.select([scored], mode="tags", granularity="sentence", separator=SEPARATOR)
        return {"tags": _result_output(example, result)}


def _result_output(example: BenchExample, result: Any, empty: bool = False) -> Output:
    if empty:
        return spans_output(example.text, np.zeros((0, 2), dtype=np.int64))
    spans = np.asarray([(s.start, s.end) for s in result.spans], dtype=np.int64).reshape(-1, 2)
    return spans_output(example.text, spans)


def engine_methods(engine: CPRSEngine, model_name: str, fusion_weight: float) -> list[Method]:
    """All engine-based methods on one shared scorer."""
    scores = EngineScores(engine)
    return [
        OursEngine(scores),
        OursSentence(scores, model_name),
        OursGranularity(scores, "paragraph"),
        OursGranularity(scores, "chunk"),
        OursTags(scores),
        OursFused(scores, fusion_weight),
    ]
