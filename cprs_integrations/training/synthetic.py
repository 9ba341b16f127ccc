"""RULER-style synthetic tasks on the essay haystack: needles (single, multi-key, multi-value, multi-query) and
variable-tracking chains. Used for training (one seed) and for evaluation (another seed, fresh keys and values).

Examples:
    >>> import random
    >>> ex = needle_example(random.Random(0), haystack="A b. C d. E f. " * 50, kind="single")
    >>> ex.text[ex.keep[0][0]:ex.keep[0][1]].startswith("One of the special magic")
    True
"""

from __future__ import annotations

import random
import re
import string
import uuid
from functools import lru_cache

from cprs_integrations.engine.segment import sentence_spans
from cprs_integrations.training.data import Example, essay_text, pick_instruction

NEEDLE_KINDS = ("single", "multikey", "multivalue", "multiquery")
VALUE_TYPES = ("numbers", "words", "uuids")
_VT_NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
_TYPE_NAMES = {"numbers": "numbers", "words": "words", "uuids": "uuids"}


@lru_cache(maxsize=1)
def _word_list() -> tuple[str, ...]:
    words = sorted({w.lower() for w in re.findall(r"\b[a-zA-Z]{4,10}\b", essay_text()[:400_000])})
    return tuple(words)


def random_key(rng: random.Random) -> str:
    """A RULER-like key such as ``adjoining-pirate``."""
    words = _word_list()
    return f"{rng.choice(words)}-{rng.choice(words)}"


def random_value(rng: random.Random, value_type: str) -> str:
    if value_type == "numbers":
        return str(rng.randint(1_000_000, 9_999_999))
    if value_type == "words":
        return random_key(rng)
    if value_type == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown value type {value_type!r}; expected one of {VALUE_TYPES}")


def essay_haystack(rng: random.Random, n_chars: int) -> str:
    """A random slice of the essays of about ``n_chars`` characters, starting at a sentence start."""
    text = essay_text()
    if n_chars >= len(text):
        repeats = n_chars // len(text) + 1
        return (text + "\n\n") * repeats
    start = rng.randrange(0, len(text) - n_chars)
    next_break = text.find(". ", start)
    start = next_break + 2 if 0 <= next_break < start + 500 else start
    return text[start : start + n_chars]


def insert_sentences(
    haystack: str, sentences: list[str], rng: random.Random, depths: list[float] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """Insert sentences at sentence starts of the haystack (at given depths in [0, 1], else at random).

    Returns:
        The new text and the char span of each inserted sentence, in the order given.
    """
    starts = [0, *[int(s) for s, _ in sentence_spans(haystack)[1:]], len(haystack)]
    if depths is None:
        points = [rng.choice(starts) for _ in sentences]
    else:
        points = [starts[min(len(starts) - 1, round(d * (len(starts) - 1)))] for d in depths]
    order = sorted(range(len(sentences)), key=lambda i: (points[i], i))
    pieces: list[str] = []
    spans: list[tuple[int, int]] = [(0, 0)] * len(sentences)
    cursor, length = 0, 0
    for i in order:
        point = points[i]
        pieces.append(haystack[cursor:point])
        length += point - cursor
        cursor = point
        before = "" if point == 0 or haystack[point - 1].isspace() else " "
        after = "" if point < len(haystack) and haystack[point].isspace() else " "
        if point == len(haystack):
            after = ""
        chunk = f"{before}{sentences[i]}{after}"
        spans[i] = (length + len(before), length + len(before) + len(sentences[i]))
        pieces.append(chunk)
        length += len(chunk)
    pieces.append(haystack[cursor:])
    return "".join(pieces), spans


def needle_example(
    rng: random.Random,
    haystack: str,
    kind: str = "single",
    value_type: str | None = None,
    depths: list[float] | None = None,
    granularity: str = "sentence",
    n_needles: int = 4,
) -> Example:
    """A needle-in-a-haystack document (RULER's needle sentence and question).

    Args:
        rng: Randomness for keys, values and positions.
        haystack: The text to hide needles in.
        kind: ``single``, ``multikey`` (distractor keys), ``multivalue`` (several values of one key),
            ``multiquery`` (two keys asked).
        value_type: ``numbers``, ``words`` or ``uuids`` (random if ``None``).
        depths: Insertion depths in [0, 1] (one per needle), else random.
        granularity: ``sentence`` keeps needle sentences, ``token`` keeps only the values.
        n_needles: Needles for the multi-needle kinds.
    """
    if kind not in NEEDLE_KINDS:
        raise ValueError(f"unknown needle kind {kind!r}; expected one of {NEEDLE_KINDS}")
    value_type = value_type or rng.choice(VALUE_TYPES)
    type_name = _TYPE_NAMES[value_type]
    n = 1 if kind == "single" else n_needles
    keys = [random_key(rng) for _ in range(n)]
    if kind == "multivalue":
        keys = [keys[0]] * n
    values = [random_value(rng, value_type) for _ in range(n)]
    needles = [f"One of the special magic {type_name} for {k} is: {v}." for k, v in zip(keys, values)]
    text, spans = insert_sentences(haystack, needles, rng, depths)
    asked = [0] if kind in ("single", "multikey", "multivalue") else [0, 1]
    relevant = list(range(n)) if kind == "multivalue" else asked
    asked_keys = " and ".join(keys[i] for i in asked)
    query = f"What are all the special magic {type_name} for {asked_keys} mentioned in the provided text?"
    if granularity == "token":
        keep = []
        for i in relevant:
            start, end = spans[i]
            at = text.index(values[i], start, end)
            keep.append((at, at + len(values[i])))
    else:
        keep = [spans[i] for i in relevant]
    return Example(
        query=query,
        instruction=pick_instruction(granularity, rng),
        granularity=granularity,
        text=text,
        keep=tuple(sorted(keep)),
        task=f"niah-{kind}",
        meta={"values": [values[i] for i in relevant], "needle_spans": [spans[i] for i in relevant]},
    )


def variable_tracking_example(
    rng: random.Random,
    haystack: str | None = None,
    n_chars: int = 4000,
    num_hops: int = 4,
    depths: list[float] | None = None,
) -> Example:
    """RULER variable tracking: ``VAR A = 12345``, ``VAR B = VAR A``, ... hidden in text; keep the whole chain.

    Args:
        rng: Randomness.
        haystack: Text to hide the chain in; ``None`` uses RULER's repeated noise sentences of ``n_chars``.
        n_chars: Length of the noise haystack when ``haystack`` is ``None``.
        num_hops: Assignments after the first (the chain has ``num_hops + 1`` statements).
        depths: Insertion depths in [0, 1] for each statement (sorted), else random.
    """
    if haystack is None:
        haystack = " ".join([_VT_NOISE] * max(1, n_chars // (len(_VT_NOISE) + 1)))
    names = variable_names(rng, num_hops + 1)
    value = str(rng.randint(10000, 99999))
    statements = chain_statements(names, value)
    if depths is None:
        depths = sorted(rng.random() for _ in statements)
    text, spans = insert_sentences(haystack, statements, rng, sorted(depths))
    return Example(
        query=f"Find all variables that are assigned the value {value} in the text above.",
        instruction=pick_instruction("sentence", rng),
        granularity="sentence",
        text=text,
        keep=tuple(sorted(spans)),
        task="variable-tracking",
        meta={"variables": names, "value": value},
    )


def variable_names(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct RULER-style variable names of 5 capital letters."""
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choices(string.ascii_uppercase, k=5))
        if name not in names:
            names.append(name)
    return names


def chain_statements(names: list[str], value: str) -> list[str]:
    """A variable chain: ``VAR A = value.``, then ``VAR B = VAR A.`` for each next name.

    Examples:
        >>> chain_statements(["A", "B"], "7")
        ['VAR A = 7.', 'VAR B = VAR A.']
    """
    return [f"VAR {names[0]} = {value}."] + [f"VAR {names[j + 1]} = VAR {names[j]}." for j in range(len(names) - 1)]


def synthetic_examples(rng: random.Random, count: int, min_chars: int = 1000, max_chars: int = 8000) -> list[Example]:
    """A training mix: 55% needles (all kinds, 20% of them keyword-level), 25% variable tracking, 20% multi-key."""
    examples: list[Example] = []
    for _ in range(count):
        n_chars = rng.randint(min_chars, max_chars)
        draw = rng.random()
        if draw < 0.55:
            kind = rng.choice(NEEDLE_KINDS)
            granularity = "token" if rng.random() < 0.2 else "sentence"
            examples.append(needle_example(rng, essay_haystack(rng, n_chars), kind=kind, granularity=granularity))
        elif draw < 0.80:
            haystack = essay_haystack(rng, n_chars) if rng.random() < 0.5 else None
            examples.append(variable_tracking_example(rng, haystack, n_chars=n_chars))
        else:
            examples.append(needle_example(rng, essay_haystack(rng, n_chars), kind="multikey"))
    return examples
