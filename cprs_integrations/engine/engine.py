"""CPRSEngine: load a critic once, score windows in parallel batches, select under a budget, return exact slices."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cprs_integrations.engine import coarse
from cprs_integrations.engine.budget import resolve_token_counter
from cprs_integrations.engine.coarse import Embed, choose_windows, windows_to_keep
from cprs_integrations.engine.inputs import check_query, check_texts
from cprs_integrations.engine.multi_hop import candidate_windows, evidence_of, lexical_query
from cprs_integrations.engine.options import DEFAULT_TARGET_RATIO, CompressionOptions
from cprs_integrations.engine.prepared import (
    DEFAULT_CACHE_SENTENCES,
    DEFAULT_CACHE_TOKENS,
    EmbeddingCache,
    PreparedCache,
    PreparedText,
    prepare,
)
from cprs_integrations.engine.prompts import hop_query, instruction_for
from cprs_integrations.engine.result import CompressionResult, TokenScores
from cprs_integrations.engine.scheduler import DEFAULT_MAX_WAIT_MS, BatchScheduler
from cprs_integrations.engine.select import select as select_results
from cprs_integrations.engine.windows import TokenizedText, cut_windows, tokenize_with_offsets
from cprs_integrations.models.base import PromptLayout, TokenCritic

logger = logging.getLogger(__name__)

#: Default limit of one call, in critic tokens (the official QwenLong-CPRS server truncates at 2,048,000; the
#: engine windows any length, so the default is set by memory instead: see README, "Speed and memory").
DEFAULT_MAX_INPUT_TOKENS = 10_000_000
#: At least this many characters per token are assumed possible for the early length check (WordPiece's
#: ``max_input_chars_per_word``: a longer word is one ``[UNK]``).
MAX_CHARS_PER_TOKEN = 100
_WHITESPACE = re.compile(r"\s+")
#: A progress bar shows by default when a call has at least this many windows (about 128K encoder tokens).
PROGRESS_MIN_WINDOWS = 256


__all__ = ["CPRSEngine", "TokenScores"]


class CPRSEngine:
    """Query-guided context compression with a token critic (QwenLong-CPRS).

    One engine holds one loaded critic (plus optional per-device replicas) and is safe to share between threads:
    use :meth:`shared` to get the same engine everywhere in a process.

    Args:
        critic: A loaded :class:`~cprs_integrations.models.base.TokenCritic`.
        window_tokens: Tokens per window, prefix included (default: the critic's).
        batch_size: At most this many windows per forward pass (default: the critic's). A CUDA out-of-memory
            error splits that batch in halves and retries them; nothing else changes.
        replicas: Extra copies of the critic on other devices; each gets batches as it frees up.
        max_input_tokens: Refuse calls with more critic tokens than this (default 10M). A call whose characters
            alone prove it longer (non-space characters / the longest vocabulary entry) is refused before
            tokenizing.
        max_batch_tokens: At most this many padded tokens (windows x longest, prefix included) per forward pass;
            ``None``: ``batch_size`` alone limits.
        max_wait_ms: How long a free device waits for a fuller batch when calls arrive together (default 2 ms).
        max_queue_windows: Refuse a call (:class:`~cprs_integrations.engine.scheduler.QueueFullError`) that would
            queue more windows than this; ``None``: unbounded.
        coarse_embedder: ``texts -> (n, d)`` normalised embeddings for the coarse filter (default: the shipped
            model2vec model, loaded on first use; see :mod:`cprs_integrations.engine.coarse`).
        cache_tokens: Texts compressed again (a retriever's corpus, a document asked several questions) reuse their
            tokens and sentences from a cache of this many critic tokens (default 2M, about 100 MB) and the coarse
            filter's sentence embeddings from one of 200K sentences (100 MB); ``0`` keeps neither. See
            :mod:`cprs_integrations.engine.prepared`.

    Windows of all concurrent calls (threads, event loops) are batched together by one
    :class:`~cprs_integrations.engine.scheduler.BatchScheduler` (fair across calls); :meth:`stats` counts what ran.

    Examples:
        >>> from cprs_integrations import CPRSEngine
        >>> engine = CPRSEngine.from_pretrained()  # doctest: +SKIP
        >>> [res] = engine.compress("Who founded it?", [long_text], target_ratio=0.1)  # doctest: +SKIP
        >>> res.text, res.ratio  # doctest: +SKIP
    """

    def __init__(
        self,
        critic: TokenCritic,
        *,
        window_tokens: int | None = None,
        batch_size: int | None = None,
        replicas: Sequence[TokenCritic] = (),
        max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS,
        max_batch_tokens: int | None = None,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_queue_windows: int | None = None,
        coarse_embedder: Embed | None = None,
        cache_tokens: int = DEFAULT_CACHE_TOKENS,
    ):
        self.critic = critic
        self.window_tokens = _integer(
            "window_tokens", critic.default_window_tokens if window_tokens is None else window_tokens
        )
        if self.window_tokens > critic.max_sequence_tokens:
            raise ValueError(
                f"window_tokens={self.window_tokens} exceeds what the critic accepts ({critic.max_sequence_tokens})"
            )
        if self.window_tokens < 16:
            raise ValueError(f"window_tokens must be >= 16 (prefix plus content), got {self.window_tokens}")
        self.batch_size = _integer("batch_size", critic.default_batch_size if batch_size is None else batch_size)
        self.max_input_tokens = _integer("max_input_tokens", max_input_tokens)
        self._workers = [critic, *replicas]
        self._max_token_chars: int | None = None
        self._coarse_embedder = coarse_embedder
        self._cached_embedder: EmbeddingCache | None = None
        self._cache = PreparedCache(_integer("cache_tokens", cache_tokens, minimum=0))
        self._warned_unknown = False
        self.scheduler = BatchScheduler(
            self._workers,
            batch_size=self.batch_size,
            max_batch_tokens=None if max_batch_tokens is None else _integer("max_batch_tokens", max_batch_tokens),
            max_wait_ms=max_wait_ms,
            max_queue_windows=(None if max_queue_windows is None else _integer("max_queue_windows", max_queue_windows)),
        )

    # ------------------------------------------------------------------------------------------- construction

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        dtype: Any = "auto",
        window_tokens: int | None = None,
        batch_size: int | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        bidirectional_from: int | None = None,
        trust_remote_code: bool = False,
        device_map: str | dict[str, Any] | None = None,
        devices: Sequence[str] | None = None,
        max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS,
        max_batch_tokens: int | None = None,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_queue_windows: int | None = None,
        cache_tokens: int = DEFAULT_CACHE_TOKENS,
    ) -> CPRSEngine:
        """Load a critic and build an engine on it.

        Args:
            model: A local folder or hub id of a CPRS critic; ``None`` loads the embedded default (MiniLM, CPU).
            device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; ``None`` picks cuda > mps > cpu. An explicit
                device that is not available is an error.
            dtype: ``"auto"`` (bf16 on GPU and on CPUs with AMX, else fp32), or a dtype name.
            window_tokens: Tokens per window including the prefix (default 8192 for Qwen2 critics, the position
                limit for encoders).
            batch_size: Windows per forward pass.
            revision: Hub revision (branch, tag or commit).
            local_files_only: Never touch the network.
            bidirectional_from: First bidirectional layer of a decoder critic (default: the folder's
                ``cprs_bidirectional_from``, else 21 for the released 28-layer checkpoint).
            trust_remote_code: Passed to transformers (default ``False``).
            device_map: accelerate device map (e.g. ``"auto"``) for a decoder critic larger than one GPU.
            devices: Several devices (e.g. ``["cuda:0", "cuda:1"]``): one replica per device, windows spread
                over them. Exclusive with ``device`` and ``device_map``.
            max_input_tokens: Refuse calls above this many critic tokens.
            **batching: ``max_batch_tokens``, ``max_wait_ms``, ``max_queue_windows``: batching across calls (see
                :class:`CPRSEngine`).
            cache_tokens: Bound of the prepared-text cache in critic tokens (see :class:`CPRSEngine`).

        Raises:
            ValueError: not a CPRS critic, unknown or unavailable device, bad option.
            FileNotFoundError: a local path that does not exist.
        """
        from cprs_integrations.models.loading import load_critic

        if devices is not None:
            if device is not None or device_map is not None:
                raise ValueError("pass devices= alone, without device= or device_map=")
            if len(devices) == 0:
                raise ValueError("devices must name at least one device")
            device = devices[0]
        critic = load_critic(
            model,
            device=device,
            dtype=dtype,
            revision=revision,
            local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
            bidirectional_from=bidirectional_from,
            batch_size=batch_size,
            device_map=device_map,
        )
        replicas = []
        if devices is not None:
            from cprs_integrations.models.devices import resolve_device

            replicas = [critic.replicate(resolve_device(d)) for d in devices[1:]]
        return cls(
            critic,
            window_tokens=window_tokens,
            batch_size=batch_size,
            replicas=replicas,
            max_input_tokens=max_input_tokens,
            max_batch_tokens=max_batch_tokens,
            max_wait_ms=max_wait_ms,
            max_queue_windows=max_queue_windows,
            cache_tokens=cache_tokens,
        )

    @classmethod
    def shared(cls, model: str | os.PathLike[str] | None = None, **kwargs: Any) -> CPRSEngine:
        """The process-wide engine for these arguments: loaded on first use, then reused (thread-safe).

        Every adapter uses this, so a LangChain compressor and a LlamaIndex postprocessor in one process share one
        loaded critic.

        Examples:
            >>> CPRSEngine.shared() is CPRSEngine.shared()  # doctest: +SKIP
            True
        """
        from cprs_integrations.engine.registry import shared_engine

        return shared_engine(cls, model, kwargs)

    def register_shared(self, model: str | os.PathLike[str] | None = None, **kwargs: Any) -> CPRSEngine:
        """Make this engine what :meth:`shared` returns for these arguments (by default: the no-argument default).

        Adapters built without ``model`` / ``engine_kwargs`` then use it, e.g. a GPU 7B critic for a whole app.

        Examples:
            >>> CPRSEngine.from_pretrained("path/to/critic").register_shared()  # doctest: +SKIP
            >>> CPRSDocumentCompressor()  # now compresses with that critic  # doctest: +SKIP
        """
        from cprs_integrations.engine.registry import register_shared_engine

        register_shared_engine(self, model, kwargs)
        return self

    # ---------------------------------------------------------------------------------------------- compression

    def compress(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        timeout: float | None = None,
        **overrides: Any,
    ) -> list[CompressionResult]:
        """Compress ``texts`` for ``query``: one :class:`CompressionResult` per text, in input order.

        Args:
            query: What the user asks (non-empty).
            texts: The contexts (a list of strings; empty or whitespace-only ones give an empty result).
            options: A :class:`~cprs_integrations.engine.options.CompressionOptions` (default: the defaults,
                budget ``target_ratio=0.2`` at sentence granularity).
            show_progress: Show a tqdm bar; ``None`` shows it for calls of at least 256 windows.
            timeout: Seconds to wait for scoring (queue and every ``hops`` pass included); ``None`` waits. On
                expiry the call's queued windows are withdrawn and ``TimeoutError`` is raised.
            **overrides: Any option of :class:`CompressionOptions` by name (``granularity``, ``target_ratio``,
                ``target_tokens``, ``per_text_budget``, ``score_threshold``, ``lexical_weight``, ...), applied
                over ``options``; a new budget replaces the budget of ``options``.

        Returns:
            One result per input text, in input order (rules: :mod:`cprs_integrations.engine.select`).

        Raises:
            ValueError: empty query, an invalid option (the message names it), text too long.
            TypeError: ``texts`` is not a list of strings, or an unknown option name.
            TimeoutError: ``timeout`` passed.
            QueueFullError: the engine's queue is full (``max_queue_windows``).

        Examples:
            >>> [r] = engine.compress("Where is the key?", [essay], target_ratio=0.05)  # doctest: +SKIP
            >>> r.compressed_tokens <= 0.05 * r.original_tokens  # doctest: +SKIP
            True
        """
        started = time.perf_counter()
        query, texts, options = _checked(query, texts, options, overrides)
        plan = self._plan(query, texts, options)
        probs = _wait(self._submit(plan, show_progress), timeout)
        probs = self._more_hops(plan, probs, options, timeout)
        return self._finish(plan, probs, options, started)

    def select(
        self, scored: Sequence[TokenScores], options: CompressionOptions | None = None, **overrides: Any
    ) -> list[CompressionResult]:
        """Selection alone, on scores from :meth:`score`: try several budgets or modes without re-scoring.

        ``engine.compress(q, texts, opts)`` equals ``engine.select(engine.score(q, texts, opts), opts)``, up to
        timings. The same as :func:`cprs_integrations.engine.select.select`, which needs no engine. On long inputs
        the coarse filter reads only the windows the scoring budget needs: to try other budgets on the same scores,
        score with ``coarse_filter="off"``.

        Examples:
            >>> scored = engine.score("Who?", texts)  # doctest: +SKIP
            >>> at_5x = engine.select(scored, target_ratio=0.2)  # doctest: +SKIP
            >>> at_10x = engine.select(scored, target_ratio=0.1)  # doctest: +SKIP
        """
        return select_results(list(scored), CompressionOptions.build(options, **overrides))

    async def acompress(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        timeout: float | None = None,
        **overrides: Any,
    ) -> list[CompressionResult]:
        """:meth:`compress` without blocking the event loop: tokenizing and selection run in worker threads, the
        windows wait in the shared queue. Cancelling the task withdraws its queued windows."""
        started = time.perf_counter()
        query, texts, options = _checked(query, texts, options, overrides)
        plan = await asyncio.to_thread(self._plan, query, texts, options)
        probs = await _await_handle(self._submit(plan, show_progress), timeout)
        probs = await self._amore_hops(plan, probs, options, timeout)
        return await asyncio.to_thread(self._finish, plan, probs, options, started)

    async def ascore(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        timeout: float | None = None,
        **overrides: Any,
    ) -> list[TokenScores]:
        """:meth:`score` without blocking the event loop; cancelling the task withdraws its queued windows."""
        query, texts, options = _checked(query, texts, options, overrides)
        plan = await asyncio.to_thread(self._plan, query, texts, options)
        probs = await _await_handle(self._submit(plan, show_progress), timeout)
        return plan.gather(await self._amore_hops(plan, probs, options, timeout))

    def close(self) -> None:
        """Stop the engine's worker threads and fail its queued calls; a later call starts them again. An engine
        that nothing references any more is freed without it (its threads hold it only weakly)."""
        self.scheduler.close()

    def stats(self) -> dict[str, float]:
        """Cumulative counters of the engine's scheduler: ``requests``, ``windows``, ``batches``, ``tokens``,
        ``padding_tokens``, ``oom_splits``, ``queue_wait_s`` (summed over windows) and ``queued_windows`` now.

        Examples:
            >>> engine.stats()["batches"]  # doctest: +SKIP
            12
        """
        return self.scheduler.stats()

    def score(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        timeout: float | None = None,
        **overrides: Any,
    ) -> list[TokenScores]:
        """Per-token B/I/O/E probabilities of each text (no selection): for analysis and custom selection.

        ``granularity``, ``instruction`` and ``language`` pick the instruction the critic reads; on a long input the
        coarse filter (``coarse_filter="auto"``, budget mode) reads the budget too and skips windows, whose tokens
        get NaN probabilities, so that ``select(score(...))`` equals ``compress(...)``. Pass
        ``coarse_filter="off"`` for a probability on every token.

        Returns:
            One :class:`TokenScores` per text, in input order: ``offsets`` ``(n, 2)``, ``probs`` ``(n, 4)``.
        """
        query, texts, options = _checked(query, texts, options, overrides)
        plan = self._plan(query, texts, options)
        probs = _wait(self._submit(plan, show_progress), timeout)
        return plan.gather(self._more_hops(plan, probs, options, timeout))

    # ------------------------------------------------------------------------------------------------- scoring

    def _plan(self, query: str, texts: list[str], options: CompressionOptions) -> _Plan:
        """Tokenize the texts and cut the windows of one call (no scoring)."""
        instruction = _instruction(options, self.critic.kind)
        started = time.perf_counter()
        self._refuse_from_characters(texts)
        prepared = self._prepare(texts)
        tokenized = [p.tokenized for p in prepared]
        total_tokens = sum(len(t) for t in tokenized)
        if total_tokens > self.max_input_tokens:
            raise ValueError(
                f"the texts hold {total_tokens} critic tokens, above max_input_tokens={self.max_input_tokens}; "
                "split the call or build the engine with a larger max_input_tokens"
            )
        self._warn_unknown_tokens(tokenized)
        layout = self.critic.prompt_layout(instruction, query, max_prefix_tokens=self.window_tokens // 2)
        content_tokens = self.window_tokens - layout.overhead
        windows: list[tuple[int, int, int]] = []  # (text index, token start, token end)
        for i, p in enumerate(prepared):
            if len(p.tokenized):
                cuts = cut_windows(len(p.tokenized), content_tokens, p.paragraph_starts, p.sentence_starts)
                windows.extend((i, start, end) for start, end in cuts.tolist())
        timings = {
            "tokenize_s": time.perf_counter() - started,
            "windows": float(len(windows)),
            "critic_tokens": float(total_tokens),
        }
        plan = _Plan(query, texts, tokenized, layout, windows, timings, prepared)
        self._coarse_filter(plan, prepared, options)
        return plan

    def _prepare(self, texts: list[str]) -> list[PreparedText]:
        """Each text tokenized and segmented, from the engine's cache where it was prepared before."""
        found = [self._cache.get(t) for t in texts]
        missing = [i for i, p in enumerate(found) if p is None]
        if missing:
            tokenized = tokenize_with_offsets(self.critic.tokenizer, [texts[i] for i in missing])
            for i, tok in zip(missing, tokenized):
                found[i] = prepare(texts[i], tok)
                self._cache.put(texts[i], found[i])
        return [p for p in found if p is not None]

    def _coarse_filter(self, plan: _Plan, prepared: list[PreparedText], options: CompressionOptions) -> None:
        """Mark the windows the critic skips (``options.coarse_filter``; rules in :mod:`engine.coarse`)."""
        plan.timings["windows_scored"] = float(len(plan.windows))
        total = plan.timings["critic_tokens"]
        if options.coarse_filter == "off" or options.mode != "budget" or total < coarse.COARSE_AUTO_MIN_TOKENS:
            return
        started = time.perf_counter()
        groups = [i if options.per_text_budget else 0 for i, _, _ in plan.windows]
        windows_per_group = Counter(groups)
        tokens_per_group: Counter[int] = Counter()
        for g, (_, start, end) in zip(groups, plan.windows):
            tokens_per_group[g] += end - start
        if not any(n >= coarse.COARSE_AUTO_MIN_TOKENS for n in tokens_per_group.values()):
            return
        if options.target_tokens is not None:  # the share of a fixed budget needs the texts' tokens
            plan.original_tokens = _original_tokens(plan.texts, prepared, options.token_counter)
        keep = {
            g: windows_to_keep(_share(options, plan, g), n, tokens_per_group[g]) for g, n in windows_per_group.items()
        }
        window_texts, window_sentences = plan.window_texts()
        embed = self._embedder(sum(len(p.sentences) for p in prepared))
        choice = choose_windows(plan.query, window_texts, window_sentences, groups, keep, embed)
        plan.scored = choice.scored
        plan.timings.update(
            coarse_s=time.perf_counter() - started,
            windows_scored=float(np.count_nonzero(choice.scored)),
            windows_forced=float(choice.forced),
            windows_chased=float(choice.chased),
        )

    def _embedder(self, n_sentences: int) -> Embed:
        """The coarse filter's embedding function for a call of ``n_sentences`` sentences: through the sentence
        cache when the call fits in it (a larger call would only churn it)."""
        if self._coarse_embedder is None:
            from cprs_integrations.models.static_embedding import default_embedder

            self._coarse_embedder = default_embedder()
        if not self._cache.max_tokens or n_sentences > DEFAULT_CACHE_SENTENCES:
            return self._coarse_embedder
        if self._cached_embedder is None:
            self._cached_embedder = EmbeddingCache(self._coarse_embedder, DEFAULT_CACHE_SENTENCES)
        return self._cached_embedder

    def _warn_unknown_tokens(self, tokenized: list[TokenizedText]) -> None:
        """Log once per engine when most critic tokens of a text are unknown to its vocabulary (e.g. Chinese for
        the embedded English critic): its scores then carry little meaning."""
        unknown = getattr(self.critic.tokenizer, "unk_token_id", None)
        if unknown is None or self._warned_unknown:
            return
        for i, tok in enumerate(tokenized):
            unknowns = int(np.count_nonzero(tok.ids == unknown))
            if len(tok) >= 16 and unknowns > len(tok) // 2:
                self._warned_unknown = True
                logger.warning(
                    "cprs: %d of the %d critic tokens of texts[%d] are unknown to the critic %s; its scores are not "
                    "meaningful for this text (the embedded default critic knows English only). Logged once.",
                    unknowns,
                    len(tok),
                    i,
                    self.critic.name_or_path,
                )
                return

    def _refuse_from_characters(self, texts: list[str]) -> None:
        """Refuse a call that certainly holds more than ``max_input_tokens`` critic tokens, without tokenizing it.

        A token covers at most :data:`MAX_CHARS_PER_TOKEN` characters or the longest vocabulary entry, whichever is
        larger (WordPiece turns a word of up to 100 characters into one ``[UNK]``), and whitespace may belong to no
        token, so ``non-space characters / that`` is a lower bound of the critic tokens.
        """
        if self._max_token_chars is None:
            vocab = self.critic.tokenizer.get_vocab()
            longest = max((len(token.removeprefix("##")) for token in vocab), default=1)
            self._max_token_chars = max(longest, MAX_CHARS_PER_TOKEN)
        total = sum(len(t) for t in texts)
        if total // self._max_token_chars <= self.max_input_tokens:
            return  # cheap exit: even counting spaces the bound holds
        visible = sum(len(_WHITESPACE.sub("", t)) for t in texts)
        at_least = visible // self._max_token_chars
        if at_least > self.max_input_tokens:
            raise ValueError(
                f"the texts hold {visible:,} non-space characters, so at least {at_least:,} critic tokens (no token "
                f"of this critic covers more than {self._max_token_chars} characters), above "
                f"max_input_tokens={self.max_input_tokens:,}; split the call or build the engine with a larger "
                "max_input_tokens"
            )

    def _submit(self, plan: _Plan, show_progress: bool | None) -> Any:
        """Queue the plan's windows on the shared scheduler; returns its handle."""
        progress = _progress(len(plan.scored_windows()), show_progress)
        rows = [(plan.layout, plan.tokenized[i].ids[s:e]) for i, s, e in plan.scored_windows()]
        plan.timings["submitted_at"] = time.perf_counter()
        try:
            handle = self.scheduler.submit(rows, progress.update if progress is not None else None)
        except BaseException:
            if progress is not None:
                progress.close()
            raise
        if progress is not None:
            handle.add_done_callback(progress.close)
        return handle

    # ---------------------------------------------------------------------------------------------- multi-hop

    def _more_hops(
        self, plan: _Plan, probs: list[np.ndarray], options: CompressionOptions, timeout: float | None
    ) -> list[np.ndarray]:
        """The probabilities after the call's further passes (``options.hops``; rules in :mod:`engine.multi_hop`).
        ``timeout`` bounds the call as a whole: the passes share what the first one left."""
        state = _Hops(plan, probs)
        while (rows := self._next_hop(state, options)) is not None:
            left = _left(timeout, plan)
            state.apply(_wait(self.scheduler.submit(rows), left))
        return state.finish()

    async def _amore_hops(
        self, plan: _Plan, probs: list[np.ndarray], options: CompressionOptions, timeout: float | None
    ) -> list[np.ndarray]:
        """:meth:`_more_hops` without blocking the event loop (each pass's windows wait in the shared queue)."""
        state = _Hops(plan, probs)
        while (rows := await asyncio.to_thread(self._next_hop, state, options)) is not None:
            left = _left(timeout, plan)
            state.apply(await _await_handle(self.scheduler.submit(rows), left))
        return state.finish()

    def _next_hop(self, state: _Hops, options: CompressionOptions) -> list[tuple[PromptLayout, np.ndarray]] | None:
        """The rows of the next pass (evidence in the prefix, candidate windows), or ``None`` when done."""
        plan = state.plan
        if options.mode != "budget" or state.passes >= options.hops:
            return None
        started = time.perf_counter()
        if plan.original_tokens is None:
            plan.original_tokens = _original_tokens(plan.texts, plan.prepared, options.token_counter)
        results = select_results(state.scores(), options, original_tokens=plan.original_tokens)
        # a text kept whole (its budget holds it) has nothing to gain and no evidence to give
        results = [replace(r, text="", spans=()) if r.text == r.source else r for r in results]
        evidence, linked = evidence_of(results, plan.query)
        if not evidence or evidence == state.evidence:
            return None
        offsets = [t.offsets for t in plan.tokenized]
        candidates = candidate_windows(plan.windows, offsets, results, plan.query, evidence)
        if not candidates:
            return None
        query = hop_query(plan.query, evidence)
        plan.lexical_query = lexical_query(plan.query, evidence) if linked else ""  # rule 3
        layout = self.critic.prompt_layout(
            _instruction(options, self.critic.kind), query, max_prefix_tokens=self.window_tokens // 2
        )
        pieces = []  # the candidates, cut again where the longer prefix leaves less room
        for w in candidates:
            i, start, end = plan.windows[w]
            prepared = plan.prepared[i]
            cuts = cut_windows(
                end - start,
                self.window_tokens - layout.overhead,
                _within(prepared.paragraph_starts, start, end),
                _within(prepared.sentence_starts, start, end),
            )
            pieces.extend((w, start + a, start + b) for a, b in cuts.tolist())
        state.begin(evidence, pieces)
        plan.timings["hops"] = float(state.passes)
        plan.timings["windows_rescored"] = plan.timings.get("windows_rescored", 0.0) + len(candidates)
        plan.timings["rows_rescored"] = plan.timings.get("rows_rescored", 0.0) + len(pieces)
        plan.timings["hop_s"] = plan.timings.get("hop_s", 0.0) + time.perf_counter() - started
        return [(layout, plan.tokenized[plan.windows[w][0]].ids[s:e]) for w, s, e in pieces]

    def _finish(
        self, plan: _Plan, probs: list[np.ndarray], options: CompressionOptions, started: float
    ) -> list[CompressionResult]:
        timings = dict(plan.timings)
        timings["score_s"] = time.perf_counter() - timings.pop("submitted_at")
        if plan.original_tokens is None:
            plan.original_tokens = _original_tokens(plan.texts, plan.prepared, options.token_counter)
        results = select_results(plan.gather(probs), options, original_tokens=plan.original_tokens)
        total = time.perf_counter() - started
        return [replace(r, timings={**timings, **r.timings, "total_s": total}) for r in results]

    def __repr__(self) -> str:
        return (
            f"CPRSEngine(critic={self.critic.kind}:{self.critic.name_or_path!r}, device={self.critic.device!r}, "
            f"window_tokens={self.window_tokens}, batch_size={self.batch_size}, replicas={len(self._workers) - 1})"
        )


async def _await_handle(handle: Any, timeout: float | None) -> list[np.ndarray]:
    """The handle's probabilities, awaited on the running loop; a timeout or a cancelled task withdraws the windows."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be closed by then
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    handle.add_done_callback(wake)
    try:
        await asyncio.wait_for(done, timeout)
    except (asyncio.TimeoutError, TimeoutError):  # distinct classes before Python 3.11
        handle.cancel()
        raise TimeoutError(
            f"compression did not finish within timeout={timeout} s; its queued windows were withdrawn"
        ) from None
    except asyncio.CancelledError:
        handle.cancel()
        raise
    return handle.result(0)


def _wait(handle: Any, timeout: float | None) -> list[np.ndarray]:
    """The handle's probabilities; an interrupt (Ctrl-C) or error while waiting withdraws the call's windows."""
    try:
        return handle.result(timeout)
    except BaseException:
        handle.cancel()
        raise


def _checked(
    query: Any, texts: Any, options: CompressionOptions | None, overrides: dict[str, Any]
) -> tuple[str, list[str], CompressionOptions]:
    """The inputs of a call, checked (query, texts, options with overrides), before any work."""
    return check_query(query), check_texts(texts), CompressionOptions.build(options, **overrides)


def _instruction(options: CompressionOptions, critic_kind: str) -> str:
    """The options' instruction, else the template of the granularity for this kind of critic (see prompts.py)."""
    if options.instruction is not None:
        return options.instruction
    return instruction_for(options.granularity, options.language, critic_kind)


def _original_tokens(texts: list[str], prepared: list[PreparedText], counter: Any) -> list[int]:
    """Tokens of each text under the options' counter; a named counter's counts are kept with the prepared text."""
    count = resolve_token_counter(counter)
    if not isinstance(counter, str):
        return [count(t) if t else 0 for t in texts]
    for text, p in zip(texts, prepared):
        if counter not in p.counts:
            p.counts[counter] = count(text) if text else 0
    return [p.counts[counter] for p in prepared]


def _share(options: CompressionOptions, plan: _Plan, group: int) -> float:
    """The share of a budget group's tokens its budget keeps: the ratio, or the group's budget over its tokens."""
    if options.target_tokens is None:
        return float(options.target_ratio if options.target_ratio is not None else DEFAULT_TARGET_RATIO)
    counts = plan.original_tokens or []
    total = counts[group] if options.per_text_budget else sum(counts)
    return 1.0 if total <= 0 else min(1.0, options.budgets(counts)[group] / total)


def _left(timeout: float | None, plan: _Plan) -> float | None:
    """What is left of a call's ``timeout`` since its windows were first submitted.

    Raises:
        TimeoutError: nothing is left (the next pass is not queued).
    """
    if timeout is None:
        return None
    left = timeout - (time.perf_counter() - plan.timings["submitted_at"])
    if left <= 0:
        raise TimeoutError(
            f"compression did not finish within timeout={timeout} s (before pass {plan.timings['hops']:g})"
        )
    return left


def _within(starts: np.ndarray, start: int, end: int) -> np.ndarray:
    """The points of a sorted array inside ``[start, end)``, shifted to start at 0."""
    lo, hi = np.searchsorted(starts, [start, end], side="left")
    return starts[lo:hi] - start


def _integer(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer (numpy's included) of at least ``minimum`` (1 or 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} integer, got {value!r}")
    return int(value)


@dataclass
class _Plan:
    """One call, tokenized and windowed: what the scheduler scores and selection reads back."""

    query: str
    texts: list[str]
    tokenized: list[TokenizedText]
    layout: PromptLayout
    windows: list[tuple[int, int, int]]
    timings: dict[str, float]
    prepared: list[PreparedText]
    #: ``(w,)`` bool: the windows the critic scores (``None``: all; see :mod:`engine.coarse`).
    scored: np.ndarray | None = None
    #: Tokens of each text under the options' counter, when the coarse filter needed them (selection reuses them).
    original_tokens: list[int] | None = None
    #: The query BM25 fusion reads after further passes whose evidence is linked to the query (multi_hop rule 3).
    lexical_query: str = ""

    def scored_windows(self) -> list[tuple[int, int, int]]:
        """The windows the critic scores, in order."""
        return self.windows if self.scored is None else [self.windows[w] for w in self.scored_indices()]

    def window_texts(self) -> tuple[list[str], list[list[str]]]:
        """Each window's text (its tokens' characters) and the texts of the sentences whose first token is in it
        (what the coarse filter reads)."""
        texts, per_window = [], []
        first_tokens: dict[int, np.ndarray] = {}  # per text: the first token of each sentence
        for i, start, end in self.windows:
            offsets, text, spans = self.tokenized[i].offsets, self.texts[i], self.prepared[i].sentences
            texts.append(text[int(offsets[start, 0]) : int(offsets[end - 1, 1])])
            if i not in first_tokens:
                first_tokens[i] = np.searchsorted(offsets[:, 0], spans[:, 0], side="left")
            lo, hi = np.searchsorted(first_tokens[i], [start, end], side="left")
            per_window.append([text[int(a) : int(b)] for a, b in spans[lo:hi]])
        return texts, per_window

    def scored_indices(self) -> list[int]:
        """Indices of the windows the critic scores, in order."""
        return list(range(len(self.windows))) if self.scored is None else np.flatnonzero(self.scored).tolist()

    def gather(self, probs: list[np.ndarray]) -> list[TokenScores]:
        """Window probabilities (one array per scored window, in order) back into one array per text (windows
        are consecutive per text); the tokens of windows the coarse filter skipped get NaN rows."""
        return self.gather_windows(dict(zip(self.scored_indices(), probs)))

    def gather_windows(self, by_window: dict[int, np.ndarray]) -> list[TokenScores]:
        """:meth:`gather` from probabilities by window index; windows absent from it get NaN rows."""
        per_text: list[list[np.ndarray]] = [[] for _ in self.texts]
        for w, (text_index, start, end) in enumerate(self.windows):
            found = by_window.get(w)
            per_text[text_index].append(found if found is not None else np.full((end - start, 4), np.nan, np.float32))
        return [
            TokenScores(
                text=text,
                offsets=tok.offsets,
                probs=np.concatenate(parts) if parts else np.zeros((0, 4), np.float32),
                query=self.lexical_query or self.query,
            )
            for text, tok, parts in zip(self.texts, self.tokenized, per_text)
        ]


def _progress(total: int, show: bool | None) -> Any:
    if show is False or (show is None and total < PROGRESS_MIN_WINDOWS):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="cprs: scoring windows", unit="window")


class _Hops:
    """The state of a call's multi-hop passes: the probabilities of each window read so far (a later pass replaces
    an earlier one's), the last evidence and the pieces of the pass in flight."""

    def __init__(self, plan: _Plan, probs: list[np.ndarray]):
        self.plan = plan
        self.by_window = dict(zip(plan.scored_indices(), probs))
        self.passes = 1
        self.evidence: list[str] = []
        self._pieces: list[tuple[int, int, int]] = []

    def scores(self) -> list[TokenScores]:
        return self.plan.gather_windows(self.by_window)

    def begin(self, evidence: list[str], pieces: list[tuple[int, int, int]]) -> None:
        self.evidence, self._pieces = evidence, pieces
        self.passes += 1

    def apply(self, probs: list[np.ndarray]) -> None:
        """Put a pass's probabilities (one per piece, pieces of a window consecutive) in place of the old ones."""
        parts: dict[int, list[np.ndarray]] = {}
        for (w, _, _), p in zip(self._pieces, probs):
            parts.setdefault(w, []).append(p)
        self.by_window.update({w: np.concatenate(p) for w, p in parts.items()})

    def finish(self) -> list[np.ndarray]:
        """The probabilities of every window read, in order; the plan now marks those windows scored (all of them:
        ``None``) and ``timings["windows_scored"]`` counts the windows read in any pass."""
        read = sorted(self.by_window)
        if len(read) == len(self.plan.windows):
            self.plan.scored = None
        else:
            self.plan.scored = np.zeros(len(self.plan.windows), dtype=bool)
            self.plan.scored[read] = True
        if self.passes > 1:
            self.plan.timings["windows_scored"] = float(len(read))
        return [self.by_window[w] for w in read]
