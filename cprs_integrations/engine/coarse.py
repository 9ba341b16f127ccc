"""The coarse filter: rank the windows of a long call cheaply and send only the most promising ones to the critic.

The critic reads every token it is given, so its cost grows with the whole context; most windows of a long input
hold nothing a small budget would keep. Like LongLLMLingua's coarse, document-level ranking before its fine,
token-level pass (Jiang et al. 2024, "LongLLMLingua", section 4.1), this stage ranks windows with cheap signals and
the critic scores only the best of them. No torch here: the embedding model is passed in as a function.

Rules (one budget group at a time: all texts of a call, or each text with ``per_text_budget``):

1. **How many windows.** ``keep = max(ceil(COARSE_MIN_TOKENS / t), ceil(COARSE_MARGIN x share x windows))`` where
   ``share`` is the group's budget over its tokens (``target_ratio``, or ``target_tokens`` / the group's tokens) and
   ``t`` the group's critic tokens per window. When ``keep`` reaches the group's windows, or the group has fewer than
   :data:`COARSE_AUTO_MIN_TOKENS` critic tokens, every window is scored. Counting in tokens makes the rule the same
   for the default critic's 512-token windows and a decoder critic's 8K-token windows.
2. **Exact matches.** Windows that contain a key term of the query (a number, an identifier with a digit, hyphen,
   underscore or inner capital, a phrase in double quotes; case-insensitive) are always scored, unless the term is
   in more windows than ``keep`` (then it does not discriminate and the ranking decides).
3. **Ranking.** Windows are ranked by ``z(BM25 of the window) + EMBEDDING_WEIGHT x z(best sentence cosine)``, where
   the cosine is between static embeddings (model2vec) of the query and of each sentence of the window: BM25 finds
   shared words, the embeddings find paraphrases that share none. A question sharing no word with its answer gives
   BM25 nothing and drowns the cosine in the sum, so the best ``EMBEDDING_SHARE`` of ``keep`` by the cosine alone
   are taken first.
4. **Chasing references.** A chain (``X = 5`` ... ``Y = X``) or a bridge entity links a window that matches the query
   to one that shares no word with it. From the sentences of the seed windows that match the query best, words that
   are rare across the call's windows (in at most :data:`CHASE_MAX_WINDOWS` windows) pull in the windows holding
   them, for up to :data:`CHASE_HOPS` hops, at most ``max(CHASE_HOPS, keep // 4)`` windows; the best ranked windows
   fill the rest of ``keep`` (exact matches beyond ``keep`` are still scored).

The figures behind each constant (speed and what is kept, off against auto, in one run) are in
``benchmarks/coarse_filter.py`` and the README's "Long inputs" section.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cprs_integrations.engine.lexical import bm25_of_words, words, zscore

#: ``coarse_filter="auto"`` filters a budget group only from this many critic tokens on; below it every window is
#: scored (a 32K-token input costs about 1.5 s on the default critic, 2 cores).
COARSE_AUTO_MIN_TOKENS = 32_768
#: Windows scored per window's worth of budget: 2.0 scores twice the windows that the budget could fill.
COARSE_MARGIN = 2.0
#: Never fewer windows than hold this many critic tokens when filtering.
COARSE_MIN_TOKENS = 8_192
#: Weight of the static-embedding signal next to BM25 (z-score fusion).
EMBEDDING_WEIGHT = 1.0
#: Share of the kept windows taken by the embeddings alone, before the fused ranking fills the rest.
EMBEDDING_SHARE = 0.5
#: References are chased for at most this many hops from the seed windows ...
CHASE_HOPS = 4
#: ... through words that occur in at most this many windows of the group.
CHASE_MAX_WINDOWS = 3
#: Seed windows of the chase: the exact matches plus this many of the best ranked.
CHASE_SEEDS = 4
#: Sentences embedded at a time.
EMBED_CHUNK = 8192

Embed = Callable[[list[str]], np.ndarray]
"""``texts -> (len(texts), d)`` float array of L2-normalised embeddings."""

_KEY_TERM = re.compile(r"[\"“]([^\"”]{3,80})[\"”]|(\w[\w\-.:/]*\w)")
_STOPWORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "he", "her", "his", "i"}
    | {"in", "is", "it", "its", "of", "on", "or", "she", "that", "the", "their", "them", "they", "this", "to", "was"}
    | {"were", "what", "when", "where", "which", "who", "whom", "why", "will", "with", "you", "your"}
)


@dataclass(frozen=True)
class CoarseChoice:
    """Which windows of a call the critic scores.

    Attributes:
        scored: ``(w,)`` bool, one per window of the call: the critic scores it.
        forced: Windows scored because they hold a key term of the query (count).
        chased: Windows added by chasing references (count).
    """

    scored: np.ndarray
    forced: int = 0
    chased: int = 0


def windows_to_keep(share: float, n_windows: int, n_tokens: int) -> int:
    """How many of a group's ``n_windows`` (``n_tokens`` critic tokens) the critic scores for a budget of ``share`` of
    its tokens (rule 1)."""
    if n_windows == 0 or n_tokens < COARSE_AUTO_MIN_TOKENS:
        return n_windows
    floor = math.ceil(COARSE_MIN_TOKENS * n_windows / n_tokens)
    return min(n_windows, max(floor, math.ceil(COARSE_MARGIN * share * n_windows)))


def key_terms(query: str) -> list[str]:
    """The query's terms that must be found verbatim: quoted phrases, numbers, identifiers (lower-cased).

    Examples:
        >>> key_terms('What is the special magic number for wild-frog? Find "blue moon" and x_2 or value 58271.')
        ['wild-frog', 'blue moon', 'x_2', '58271']
    """
    terms: list[str] = []
    for match in _KEY_TERM.finditer(query):
        quoted, word = match.group(1), match.group(2)
        if quoted is not None:
            term = quoted.strip()
        elif word is not None and (
            any(c.isdigit() for c in word) or any(c in "-_" for c in word) or any(c.isupper() for c in word[1:])
        ):
            term = word
        else:
            continue
        term = term.lower()
        if term and term not in terms:
            terms.append(term)
    return terms


def choose_windows(
    query: str,
    window_texts: Sequence[str],
    window_sentences: Sequence[Sequence[str]],
    groups: Sequence[int],
    keep: dict[int, int],
    embed: Embed,
) -> CoarseChoice:
    """Choose the windows the critic scores (rules 2-4 above).

    Args:
        query: The query.
        window_texts: ``w`` texts, one per window of the call (its content, without the prompt).
        window_sentences: Per window, the text of its sentences (for the embedding signal and the chase).
        groups: ``w`` budget-group ids, one per window.
        keep: Windows to score per group (from :func:`windows_to_keep`); a group absent or whose ``keep`` reaches
            its windows is scored whole.
        embed: The static embedding model.

    Returns:
        A :class:`CoarseChoice` with one flag per window.
    """
    scored = np.ones(len(window_texts), dtype=bool)
    members_of: dict[int, list[int]] = {}
    for w, g in enumerate(groups):
        members_of.setdefault(g, []).append(w)
    filtered = [g for g, k in keep.items() if k < len(members_of.get(g, ()))]
    if not filtered:
        return CoarseChoice(scored)
    lowered = [t.lower() for t in window_texts]
    terms = key_terms(query)
    query_vector = embed([query])[0]
    forced_total = chased_total = 0
    for g in filtered:
        members = np.asarray(members_of[g], dtype=np.int64)
        k = keep[g]
        texts = [lowered[i] for i in members]
        sentences = [window_sentences[i] for i in members]
        forced = _exact_matches(texts, terms, k)
        frequencies: Counter[str] = Counter()  # windows holding each word, filled by the BM25 pass
        lexical = bm25_of_words(words(query), (words(t) for t in texts), len(texts), frequencies)
        cosine = _best_cosine(sentences, query_vector, embed)
        order = np.argsort(-(zscore(lexical) + EMBEDDING_WEIGHT * zscore(cosine)), kind="stable")
        chosen = set(forced.tolist())
        # The best windows by meaning alone: a question that shares no word with its answer has no BM25 to add.
        chosen.update(np.argsort(-cosine, kind="stable")[: math.ceil(EMBEDDING_SHARE * k)].tolist())
        # Chase from the exact matches first (a chain starts at its value), then from the best ranked windows.
        rare = _rare_words(texts, frequencies)
        limit = max(CHASE_HOPS, k // 4)
        chased = _chase(query, terms, rare, sentences, forced.tolist(), chosen, limit)
        seeds = [int(i) for i in order[:CHASE_SEEDS] if int(i) not in chosen]
        chosen.update(seeds)
        chased |= _chase(query, terms, rare, sentences, seeds, chosen | chased, limit - len(chased))
        chosen |= chased
        for local in order.tolist():
            if len(chosen) >= k:
                break
            chosen.add(int(local))
        scored[members] = False
        scored[members[sorted(chosen)]] = True
        forced_total += len(forced)
        chased_total += len(chased)
    return CoarseChoice(scored, forced=forced_total, chased=chased_total)


def _exact_matches(texts: list[str], terms: list[str], keep: int) -> np.ndarray:
    """Windows (local indices) holding a key term found in at most ``keep`` windows."""
    found: set[int] = set()
    for term in terms:
        holding = [i for i, text in enumerate(texts) if term in text]
        if len(holding) <= keep:
            found.update(holding)
    return np.asarray(sorted(found), dtype=np.int64)


def _best_cosine(sentences: list[Sequence[str]], query_vector: np.ndarray, embed: Embed) -> np.ndarray:
    """Per window, the best cosine between the query and one of its sentences (-1 without sentences); embedded
    :data:`EMBED_CHUNK` sentences at a time, so memory does not grow with the input."""
    best = np.full(len(sentences), -1.0)
    owner = np.repeat(np.arange(len(sentences)), [len(s) for s in sentences])
    flat = [s for per_window in sentences for s in per_window]
    for start in range(0, len(flat), EMBED_CHUNK):
        cosine = embed(flat[start : start + EMBED_CHUNK]) @ query_vector
        np.maximum.at(best, owner[start : start + EMBED_CHUNK], cosine)
    return best


def _rare_words(texts: list[str], frequencies: Counter[str]) -> dict[str, list[int]]:
    """The windows holding each word found in at most :data:`CHASE_MAX_WINDOWS` windows (a second pass that keeps
    only those words)."""
    rare = {w for w, count in frequencies.items() if count <= CHASE_MAX_WINDOWS}
    holders: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        for w in rare.intersection(words(text)):
            holders.setdefault(w, []).append(i)
    return holders


def _chase(
    query: str,
    terms: list[str],
    rare: dict[str, list[int]],
    sentences: list[Sequence[str]],
    seeds: list[int],
    chosen: set[int],
    limit: int,
) -> set[int]:
    """Windows pulled in from ``seeds`` by rare words, hop by hop (rule 4); at most ``limit`` new ones, none of
    ``chosen``."""
    added: set[int] = set()
    if limit <= 0 or not seeds:
        return added
    query_words = set(words(query))
    seen_words = set(query_words)
    # The sentences of a seed that lead on: those with a key term, else those sharing most query words.
    frontier = [(i, _leading_sentences(sentences[i], terms, query_words)) for i in seeds]
    for _ in range(CHASE_HOPS):
        pulls: list[tuple[int, str]] = []
        for _, leading in frontier:
            for sentence in leading:
                for w in words(sentence):
                    if w in rare and w not in seen_words and w not in _STOPWORDS and len(w) >= 3:
                        seen_words.add(w)
                        pulls.extend((h, w) for h in rare[w])
        frontier = []
        for window, word in pulls:
            if window in chosen or window in added:
                continue
            if len(added) >= limit:
                return added
            added.add(window)
            frontier.append((window, [s for s in sentences[window] if word in words(s)]))
        if not frontier:
            break
    return added


def _leading_sentences(sentences: Sequence[str], terms: list[str], query_words: set[str]) -> list[str]:
    """The sentences of a seed window the chase starts from: those holding a key term, else the (at most two)
    sharing most query words."""
    with_terms = [s for s in sentences if any(term in s.lower() for term in terms)]
    if with_terms:
        return with_terms
    overlap = [len(set(words(s)) & query_words - _STOPWORDS) for s in sentences]
    best = max(overlap, default=0)
    return [s for s, o in zip(sentences, overlap) if o == best and best > 0][:2]
