"""The evaluation tasks, built from held-out data only: HotpotQA ``test`` split, needles and variable tracking with
the evaluation seed (training used others), and SQuAD v2 (never used in training).

Every task yields :class:`BenchExample` objects: a query, a context, the sentence units every unit ranker chooses
from, and what must survive compression (gold spans and/or gold strings).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from benchmarks.common import o200k, o200k_encoding, stable_seed
from cprs_integrations.engine.segment import paragraph_spans, sentence_spans
from cprs_integrations.training.data import data_dir, hotpot_document, hotpot_records
from cprs_integrations.training.synthetic import (
    essay_haystack,
    insert_sentences,
    needle_example,
    variable_tracking_example,
)

TASKS = ("hotpotqa", "needle", "multikey", "variable_tracking", "squad")
#: Characters per o200k token in the essays, a little high so that a haystack is trimmed rather than short.
_ESSAY_CHARS_PER_TOKEN = 4.8


@dataclass(frozen=True)
class BenchExample:
    """One evaluation item.

    Attributes:
        task: One of :data:`TASKS`.
        id: Unique within the task.
        query: The question.
        text: The context.
        units: ``(m, 2)`` char spans of the sentences a unit ranker may keep (HotpotQA titles excluded).
        unit_titles: Per unit, a title to prepend for lexical / embedding scoring (HotpotQA), else empty.
        paragraphs: Char spans of the paragraphs (the ``context`` list given to LongLLMLingua).
        gold_spans: Spans that must be kept (supporting facts, chain statements); a span is kept when at least
            90% of its characters lie in kept spans (or its text appears in a text-only output).
        gold_strings: Strings that must appear in the kept text (needle values, answers).
        any_string: ``True``: one gold string is enough (answers); ``False``: all are needed (needle values).
        meta: Length, depth and other facts for reporting.
    """

    task: str
    id: str
    query: str
    text: str
    units: np.ndarray
    unit_titles: tuple[str, ...]
    paragraphs: tuple[tuple[int, int], ...]
    gold_spans: tuple[tuple[int, int], ...] = ()
    gold_strings: tuple[str, ...] = ()
    any_string: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def unit_texts(self, with_titles: bool = False) -> list[str]:
        """The text of each unit (``"title. sentence"`` when ``with_titles`` and the unit has a title)."""
        texts = [self.text[int(s) : int(e)] for s, e in self.units]
        if not with_titles:
            return texts
        return [f"{title}. {t}" if title else t for title, t in zip(self.unit_titles, texts)]


def _spans(array: np.ndarray) -> tuple[tuple[int, int], ...]:
    return tuple((int(s), int(e)) for s, e in array)


def plain_example(task: str, ex_id: str, query: str, text: str, **gold: Any) -> BenchExample:
    """An example whose units are all the sentences of ``text`` and whose paragraphs are its blank-line blocks."""
    units = sentence_spans(text)
    return BenchExample(
        task=task,
        id=ex_id,
        query=query,
        text=text,
        units=units,
        unit_titles=("",) * len(units),
        paragraphs=_spans(paragraph_spans(text)),
        **gold,
    )


# ------------------------------------------------------------------------------------------------- HotpotQA


def hotpot_bench_example(record: dict[str, Any]) -> BenchExample | None:
    """A HotpotQA test question on its document in file order (no shuffling); ``None`` without gold sentences.

    Title lines count in the token total but are never units: a unit ranker cannot keep them.
    """
    text, sentences, paragraphs = hotpot_document(record)
    gold = sorted({sentences[(t, i)] for t, i in record["supporting_facts"] if (t, i) in sentences})
    if not gold:
        return None
    title_spans = [(start, start + len(title)) for title, (start, _) in paragraphs.items()]
    body_titles = sorted((start, end, title) for title, (start, end) in paragraphs.items())
    units, titles = [], []
    for s, e in sentence_spans(text).tolist():
        if any(ts <= s and e <= te for ts, te in title_spans):
            continue
        units.append((s, e))
        titles.append(next((t for ps, pe, t in body_titles if ps <= s < pe), ""))
    return BenchExample(
        task="hotpotqa",
        id=record["_id"],
        query=record["question"],
        text=text,
        units=np.asarray(units, dtype=np.int64).reshape(-1, 2),
        unit_titles=tuple(titles),
        paragraphs=tuple(paragraphs[title] for title, _ in record["context"] if title in paragraphs),
        gold_spans=tuple(gold),
        meta={"answer": record.get("answer"), "type": record.get("type")},
    )


def hotpot_examples(n: int) -> Iterator[BenchExample]:
    """The first ``n`` questions of the held-out ``test`` split (file order) that have supporting facts."""
    made = 0
    for record in hotpot_records("test"):
        if made >= n:
            return
        example = hotpot_bench_example(record)
        if example is not None:
            made += 1
            yield example


# --------------------------------------------------------------------------------------------- essay needles


def essay_of_tokens(rng: random.Random, n_tokens: int) -> str:
    """A random slice of the essays trimmed to ``n_tokens`` o200k tokens."""
    haystack = essay_haystack(rng, int(n_tokens * _ESSAY_CHARS_PER_TOKEN) + 1000)
    encoding = o200k_encoding()
    ids = encoding.encode_ordinary(haystack)
    return encoding.decode(ids[:n_tokens]) if len(ids) > n_tokens else haystack


def needle_examples(lengths: list[int], depths: list[float], repeats: int = 1) -> Iterator[BenchExample]:
    """One single-needle example per (length, depth, repeat): RULER's needle sentence in an essay haystack.

    Kept means the needle's value string appears in the kept text.
    """
    for length in lengths:
        for depth in depths:
            for repeat in range(repeats):
                rng = random.Random(stable_seed("needle", length, depth, repeat))
                made = needle_example(rng, essay_of_tokens(rng, length), kind="single", depths=[depth])
                yield plain_example(
                    "needle",
                    f"needle-{length}-{depth:g}-{repeat}",
                    made.query,
                    made.text,
                    gold_spans=made.keep,
                    gold_strings=tuple(made.meta["values"]),
                    meta={"length": length, "depth": depth, "tokens": o200k()(made.text)},
                )


def multikey_examples(n: int, context_tokens: int) -> Iterator[BenchExample]:
    """RULER multi-key needles (4 keys, one asked) in essay haystacks of about ``context_tokens`` tokens."""
    for i in range(n):
        rng = random.Random(stable_seed("multikey", context_tokens, i))
        made = needle_example(rng, essay_of_tokens(rng, context_tokens), kind="multikey", n_needles=4)
        yield plain_example(
            "multikey",
            f"multikey-{i}",
            made.query,
            made.text,
            gold_spans=made.keep,
            gold_strings=tuple(made.meta["values"]),
            meta={"tokens": o200k()(made.text)},
        )


def variable_tracking_examples(n: int, context_tokens: int, num_hops: int = 4) -> Iterator[BenchExample]:
    """RULER variable tracking: a chain of ``num_hops + 1`` assignments hidden in about ``context_tokens`` tokens
    of RULER's repeated noise (even items) or of essays (odd items); kept means every statement is kept."""
    for i in range(n):
        rng = random.Random(stable_seed("variable_tracking", context_tokens, i))
        if i % 2:
            made = variable_tracking_example(rng, essay_of_tokens(rng, context_tokens), num_hops=num_hops)
        else:
            made = variable_tracking_example(rng, None, n_chars=int(context_tokens * 3.7), num_hops=num_hops)
        yield plain_example(
            "variable_tracking",
            f"variable-tracking-{i}",
            made.query,
            made.text,
            gold_spans=made.keep,
            meta={"tokens": o200k()(made.text), "haystack": "essays" if i % 2 else "noise"},
        )


# ---------------------------------------------------------------------------------------------------- SQuAD


@lru_cache(maxsize=1)
def _squad_articles() -> tuple[tuple[str, tuple[str, ...], tuple[int, ...], tuple[tuple[Any, ...], ...]], ...]:
    """(title, paragraphs, o200k tokens of each paragraph, answerable questions as (paragraph index, qa))."""
    with open(data_dir() / "squad.json", encoding="utf-8") as f:
        data = json.load(f)["data"]
    count = o200k()
    articles = []
    for article in data:
        paragraphs = tuple(p["context"].strip() for p in article["paragraphs"])
        questions = tuple(
            (p_index, qa)
            for p_index, p in enumerate(article["paragraphs"])
            for qa in p["qas"]
            if not qa.get("is_impossible") and qa.get("answers")
        )
        title = article["title"].replace("_", " ")
        articles.append((title, paragraphs, tuple(count(p) for p in paragraphs), questions))
    return tuple(articles)


def _article_window(paragraph_tokens: tuple[int, ...], target: int, limit: int, rng: random.Random) -> range:
    """Consecutive paragraph indices around ``target`` totalling at most ``limit`` tokens (all if they fit)."""
    if sum(paragraph_tokens) <= limit:
        return range(len(paragraph_tokens))
    start = end = target
    total = paragraph_tokens[target]
    while True:
        options = [i for i in (start - 1, end + 1) if 0 <= i < len(paragraph_tokens)]
        options = [i for i in options if total + paragraph_tokens[i] <= limit]
        if not options:
            return range(start, end + 1)
        pick = rng.choice(options)
        total += paragraph_tokens[pick]
        start, end = min(start, pick), max(end, pick)


def squad_examples(n: int, context_tokens: int) -> Iterator[BenchExample]:
    """SQuAD v2 answerable questions in long contexts: the question's paragraph inside its article (a window of
    the article around it when the article is longer than 3/4 of ``context_tokens``) plus whole paragraphs of
    distractor articles up to about ``context_tokens`` o200k tokens, the question's article at a random position.

    Kept means any gold answer string appears in the kept text.
    """
    articles = _squad_articles()
    pool = [(a, q) for a, article in enumerate(articles) for q in range(len(article[3]))]
    picks = random.Random(stable_seed("squad-questions")).sample(pool, min(n, len(pool)))
    for a_index, q_index in picks:
        rng = random.Random(stable_seed("squad", a_index, q_index, context_tokens))
        title, paragraphs, tokens, questions = articles[a_index]
        p_index, qa = questions[q_index]
        window = _article_window(tokens, p_index, int(context_tokens * 0.75), rng)
        blocks = [(title, [paragraphs[i] for i in window])]
        total = sum(tokens[i] for i in window)
        others = [i for i in range(len(articles)) if i != a_index]
        rng.shuffle(others)
        for other in others:
            o_title, o_paragraphs, o_tokens, _ = articles[other]
            kept: list[str] = []
            for paragraph, size in zip(o_paragraphs, o_tokens):
                if total + size > context_tokens:
                    break
                kept.append(paragraph)
                total += size
            if kept:
                blocks.insert(rng.randint(0, len(blocks)), (o_title, kept))
            if total >= context_tokens * 0.95 or len(kept) < len(o_paragraphs):
                break
        text = "\n\n".join(f"{t}\n" + "\n\n".join(ps) for t, ps in blocks)
        answers = tuple(sorted({a["text"].strip() for a in qa["answers"] if a["text"].strip()}))
        yield plain_example(
            "squad",
            qa["id"],
            qa["question"],
            text,
            gold_strings=answers,
            any_string=True,
            meta={"tokens": o200k()(text), "article": title},
        )


def build_examples(task: str, config: dict[str, Any]) -> list[BenchExample]:
    """All examples of one task for a run configuration (see ``quality.py`` for the keys)."""
    if task == "hotpotqa":
        return list(hotpot_examples(config["hotpot_n"]))
    if task == "needle":
        return list(needle_examples(config["needle_lengths"], config["needle_depths"], config["needle_repeats"]))
    if task == "multikey":
        return list(multikey_examples(config["synthetic_n"], config["context_tokens"]))
    if task == "variable_tracking":
        return list(variable_tracking_examples(config["synthetic_n"], config["context_tokens"]))
    if task == "squad":
        return list(squad_examples(config["squad_n"], config["context_tokens"]))
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


# ------------------------------------------------------------------------------- long inputs (coarse filter)

#: (relation as stated, question paraphrasing it with few shared words, values) for the paraphrase task.
_RELATIONS = (
    (
        "{p}'s favourite instrument is the {v}.",
        "Which musical instrument does {p} like best?",
        ("cello", "oboe", "banjo", "harp", "trombone", "viola"),
    ),
    (
        "{p} was born in the town of {v}.",
        "What is {p}'s birthplace?",
        ("Dunmore", "Carrick", "Elverum", "Tarbes", "Oakhaven", "Lindau"),
    ),
    (
        "{p} earns a living as a {v}.",
        "What is {p}'s occupation?",
        ("surveyor", "glassblower", "locksmith", "cartographer", "beekeeper", "ferrier"),
    ),
    (
        "{p} is married to {v}.",
        "Who is {p}'s spouse?",
        ("Ilse Marten", "Joaquin Reyes", "Petra Holm", "Idris Kane", "Noor Haddad", "Sven Lund"),
    ),
    (
        "{p} keeps a pet {v} at home.",
        "Which animal lives with {p} as a companion?",
        ("tortoise", "ferret", "parrot", "iguana", "greyhound", "goldfish"),
    ),
)
_FIRST = ("Mara", "Tobias", "Elena", "Kofi", "Ingrid", "Rafael", "Yuki", "Dmitri", "Aisha", "Lars", "Priya", "Owen")
_LAST = ("Quinlan", "Wren", "Okafor", "Lindqvist", "Moreau", "Castellanos", "Haldane", "Brannock", "Veldt", "Sayer")


def paraphrase_examples(n: int, context_tokens: int) -> Iterator[BenchExample]:
    """A fact about a person, asked with a paraphrase; distractors: the person's other relations and another person
    with the same relation; all hidden at random depths of an essay haystack of about ``context_tokens`` tokens.

    Our own generator, names, relations and seed (the held-out evaluation of the issue is built by others).
    Kept means the true fact's sentence is kept.
    """
    for i in range(n):
        rng = random.Random(stable_seed("paraphrase", context_tokens, i))
        person, other = rng.sample([f"{f} {last}" for f in _FIRST for last in _LAST], 2)
        relations = rng.sample(range(len(_RELATIONS)), 3)
        asked = _RELATIONS[relations[0]]
        value, other_value = rng.sample(asked[2], 2)
        facts = [asked[0].format(p=person, v=value), asked[0].format(p=other, v=other_value)]
        facts += [_RELATIONS[r][0].format(p=person, v=rng.choice(_RELATIONS[r][2])) for r in relations[1:]]
        haystack = essay_of_tokens(rng, context_tokens)
        text, spans = insert_sentences(haystack, facts, rng)
        yield plain_example(
            "paraphrase",
            f"paraphrase-{context_tokens}-{i}",
            asked[1].format(p=person),
            text,
            gold_spans=(spans[0],),
            gold_strings=(facts[0],),
            meta={"tokens": context_tokens},
        )


def hotpot_hidden_examples(n: int, context_tokens: int) -> Iterator[BenchExample]:
    """HotpotQA test questions whose ten paragraphs sit at a random depth of essay text of about ``context_tokens``
    tokens in all (the gold paragraphs hidden in unrelated text); gold: the supporting facts."""
    for example in hotpot_examples(n):
        rng = random.Random(stable_seed("hotpot-hidden", context_tokens, example.id))
        padding = essay_of_tokens(rng, max(0, context_tokens - o200k()(example.text)))
        cut = padding.find("\n\n", int(rng.random() * len(padding)))
        cut = len(padding) if cut < 0 else cut
        before, after = padding[:cut].rstrip() + "\n\n", "\n\n" + padding[cut:].lstrip()
        shift = len(before)
        yield BenchExample(
            task="hotpot_hidden",
            id=f"{example.id}-{context_tokens}",
            query=example.query,
            text=before + example.text + after,
            units=example.units + shift,
            unit_titles=example.unit_titles,
            paragraphs=tuple((s + shift, e + shift) for s, e in example.paragraphs),
            gold_spans=tuple((s + shift, e + shift) for s, e in example.gold_spans),
            meta={**example.meta, "tokens": context_tokens},
        )


#: Facts and questions that share no content word (our own text): what BM25 cannot match and embeddings may.
_UNSHARED = (
    (
        "The lighthouse keeper's daughter collects antique barometers.",
        "What old weather instruments does the girl from the coastal beacon gather?",
    ),
    (
        "Our bakery's sourdough starter was brought from Lyon in 1962.",
        "Where did the fermented dough culture of the bread shop originally come from?",
    ),
    (
        "The mayor's terrier bit three postmen last winter.",
        "How many mail carriers were attacked by the town leader's dog?",
    ),
    (
        "A violinist named Ottoline repaired the chapel organ for free.",
        "Who fixed the church's pipe instrument without charging anything?",
    ),
    (
        "The ferry to Brannock Island stops running when fog rolls in.",
        "Under what weather does the boat service to the isle get cancelled?",
    ),
    (
        "Grandfather's pocket watch stopped on the morning of the flood.",
        "When did the old man's timepiece cease working?",
    ),
    (
        "The village school replaced its chalkboards with tablets in 2019.",
        "In which year did the local classroom switch from slate writing surfaces to digital devices?",
    ),
    (
        "Every autumn the orchard sells cider pressed from windfall apples.",
        "What drink does the fruit farm offer each fall, made from fallen produce?",
    ),
    (
        "The museum's oldest coin was minted under Emperor Hadrian.",
        "Which Roman ruler reigned when the gallery's most ancient money was struck?",
    ),
    (
        "Our choir director learned to conduct by watching cartoons.",
        "How did the singers' leader pick up the skill of leading musicians?",
    ),
)


def unshared_examples(n: int, context_tokens: int) -> Iterator[BenchExample]:
    """A fact whose question shares no content word with it, hidden at a random depth of essay text (signals of
    the coarse filter: where BM25 has nothing to match). Kept means the fact's sentence is kept."""
    for i in range(n):
        fact, question = _UNSHARED[i % len(_UNSHARED)]
        rng = random.Random(stable_seed("unshared", context_tokens, i))
        text, spans = insert_sentences(essay_of_tokens(rng, context_tokens), [fact], rng)
        yield plain_example(
            "unshared",
            f"unshared-{context_tokens}-{i}",
            question,
            text,
            gold_spans=(spans[0],),
            gold_strings=(fact,),
            meta={"tokens": context_tokens},
        )
