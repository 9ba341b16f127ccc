"""CPRSEngine: load a critic once, score windows in parallel batches, select under a budget, return exact slices."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from cprs_integrations.engine import segment
from cprs_integrations.engine.inputs import check_query, check_texts
from cprs_integrations.engine.options import CompressionOptions
from cprs_integrations.engine.prompts import instruction_for
from cprs_integrations.engine.result import CompressionResult, TokenScores
from cprs_integrations.engine.select import select as select_results
from cprs_integrations.engine.windows import TokenizedText, boundary_token_starts, cut_windows, tokenize_with_offsets
from cprs_integrations.models.base import PromptLayout, TokenCritic

logger = logging.getLogger(__name__)

#: Official QwenLong-CPRS truncation limit, in critic tokens per call.
DEFAULT_MAX_INPUT_TOKENS = 2_048_000
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
        batch_size: Windows per forward pass (default: the critic's); halves itself on CUDA out-of-memory.
        replicas: Extra copies of the critic on other devices; windows are spread over all of them.
        max_input_tokens: Refuse calls with more critic tokens than this (the official limit by default).

    Example:
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
    ):
        self.critic = critic
        self.window_tokens = _positive_int(
            "window_tokens", critic.default_window_tokens if window_tokens is None else window_tokens
        )
        if self.window_tokens > critic.max_sequence_tokens:
            raise ValueError(
                f"window_tokens={self.window_tokens} exceeds what the critic accepts ({critic.max_sequence_tokens})"
            )
        if self.window_tokens < 16:
            raise ValueError(f"window_tokens must be >= 16 (prefix plus content), got {self.window_tokens}")
        self.batch_size = _positive_int("batch_size", critic.default_batch_size if batch_size is None else batch_size)
        self.max_input_tokens = _positive_int("max_input_tokens", max_input_tokens)
        self._workers = [critic, *replicas]
        self._worker_locks = [threading.Lock() for _ in self._workers]

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
    ) -> CPRSEngine:
        """Load a critic and build an engine on it.

        Args:
            model: A local folder or hub id of a CPRS critic; ``None`` loads the embedded default (MiniLM, CPU).
            device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; ``None`` picks cuda > mps > cpu. An explicit
                device that is not available is an error.
            dtype: ``"auto"`` (bf16 on GPU and on CPUs with AMX / AVX-512-BF16, else fp32), or a dtype name.
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
        )

    @classmethod
    def shared(cls, model: str | os.PathLike[str] | None = None, **kwargs: Any) -> CPRSEngine:
        """The process-wide engine for these arguments: loaded on first use, then reused (thread-safe).

        Every adapter uses this, so a LangChain compressor and a LlamaIndex postprocessor in one process share one
        loaded critic.

        Example:
            >>> CPRSEngine.shared() is CPRSEngine.shared()  # doctest: +SKIP
            True
        """
        from cprs_integrations.engine.registry import shared_engine

        return shared_engine(cls, model, kwargs)

    def register_shared(self, model: str | os.PathLike[str] | None = None, **kwargs: Any) -> CPRSEngine:
        """Make this engine what :meth:`shared` returns for these arguments (by default: the no-argument default).

        Adapters built without ``model`` / ``engine_kwargs`` then use it, e.g. a GPU 7B critic for a whole app.

        Example:
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
        **overrides: Any,
    ) -> list[CompressionResult]:
        """Compress ``texts`` for ``query``: one :class:`CompressionResult` per text, in input order.

        Args:
            query: What the user asks (non-empty).
            texts: The contexts (a list of strings; empty or whitespace-only ones give an empty result).
            options: A :class:`~cprs_integrations.engine.options.CompressionOptions` (default: the defaults,
                budget ``target_ratio=0.2`` at sentence granularity).
            show_progress: Show a tqdm bar; ``None`` shows it for calls of at least 256 windows.
            **overrides: Any option of :class:`CompressionOptions` by name (``granularity``, ``target_ratio``,
                ``target_tokens``, ``per_text_budget``, ``score_threshold``, ``lexical_weight``, ...), applied
                over ``options``; a new budget replaces the budget of ``options``.

        Returns:
            One result per input text, in input order (rules: :mod:`cprs_integrations.engine.select`).

        Raises:
            ValueError: empty query, an invalid option (the message names it), text too long.
            TypeError: ``texts`` is not a list of strings, or an unknown option name.

        Example:
            >>> [r] = engine.compress("Where is the key?", [essay], target_ratio=0.05)  # doctest: +SKIP
            >>> r.compressed_tokens <= 0.05 * r.original_tokens  # doctest: +SKIP
            True
        """
        started = time.perf_counter()
        texts = check_texts(texts)
        query = check_query(query)
        options = CompressionOptions.build(options, **overrides)
        scored, timings = self._score(query, texts, _instruction(options), show_progress)
        results = select_results(scored, options)
        total = time.perf_counter() - started
        return [replace(r, timings={**timings, **r.timings, "total_s": total}) for r in results]

    def select(
        self, scored: Sequence[TokenScores], options: CompressionOptions | None = None, **overrides: Any
    ) -> list[CompressionResult]:
        """Selection alone, on scores from :meth:`score`: try several budgets or modes without re-scoring.

        ``engine.compress(q, texts, opts)`` equals ``engine.select(engine.score(q, texts, opts), opts)``, up to
        timings. The same as :func:`cprs_integrations.engine.select.select`, which needs no engine.

        Example:
            >>> scored = engine.score("Who?", texts)  # doctest: +SKIP
            >>> at_5x = engine.select(scored, target_ratio=0.2)  # doctest: +SKIP
            >>> at_10x = engine.select(scored, target_ratio=0.1)  # doctest: +SKIP
        """
        return select_results(list(scored), CompressionOptions.build(options, **overrides))

    async def acompress(
        self, query: str, texts: Sequence[str], options: CompressionOptions | None = None, **overrides: Any
    ) -> list[CompressionResult]:
        """:meth:`compress` in a worker thread, so the event loop is never blocked."""
        return await asyncio.to_thread(self.compress, query, texts, options, **overrides)

    def score(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        **overrides: Any,
    ) -> list[TokenScores]:
        """Per-token B/I/O/E probabilities of each text (no selection): for analysis and custom selection.

        Only ``granularity``, ``instruction`` and ``language`` of the options matter here (they pick the
        instruction the critic reads).

        Returns:
            One :class:`TokenScores` per text, in input order: ``offsets`` ``(n, 2)``, ``probs`` ``(n, 4)``.
        """
        texts = check_texts(texts)
        query = check_query(query)
        options = CompressionOptions.build(options, **overrides)
        scored, _ = self._score(query, texts, _instruction(options), show_progress)
        return scored

    # ------------------------------------------------------------------------------------------------- scoring

    def _score(
        self, query: str, texts: list[str], instruction: str, show_progress: bool | None
    ) -> tuple[list[TokenScores], dict[str, float]]:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        tokenized = tokenize_with_offsets(self.critic.tokenizer, texts)
        total_tokens = sum(len(t) for t in tokenized)
        if total_tokens > self.max_input_tokens:
            raise ValueError(
                f"the texts hold {total_tokens} critic tokens, above max_input_tokens={self.max_input_tokens}; "
                "split the call or build the engine with a larger max_input_tokens"
            )
        layout = self.critic.prompt_layout(instruction, query, max_prefix_tokens=self.window_tokens // 2)
        content_tokens = self.window_tokens - layout.overhead
        windows: list[tuple[int, int, int]] = []  # (text index, token start, token end)
        for i, (text, tok) in enumerate(zip(texts, tokenized)):
            if len(tok) == 0:
                continue
            paragraph_starts = boundary_token_starts(tok.offsets, segment.paragraph_spans(text)[:, 0])
            sentence_starts = boundary_token_starts(tok.offsets, segment.sentence_spans(text)[:, 0])
            for start, end in cut_windows(len(tok), content_tokens, paragraph_starts, sentence_starts).tolist():
                windows.append((i, start, end))
        timings["tokenize_s"] = time.perf_counter() - started
        scoring_started = time.perf_counter()
        window_probs = self._score_windows(layout, tokenized, windows, show_progress)
        timings["score_s"] = time.perf_counter() - scoring_started
        timings["windows"] = float(len(windows))
        timings["critic_tokens"] = float(total_tokens)
        return _gather(query, texts, tokenized, windows, window_probs), timings

    def _score_windows(
        self,
        layout: PromptLayout,
        tokenized: list[TokenizedText],
        windows: list[tuple[int, int, int]],
        show_progress: bool | None,
    ) -> list[np.ndarray]:
        """Score all windows in length-sorted batches, spread over the critic and its replicas."""
        if not windows:
            return []
        order = sorted(range(len(windows)), key=lambda w: windows[w][2] - windows[w][1], reverse=True)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        results: list[np.ndarray | None] = [None] * len(windows)
        progress = _progress(len(windows), show_progress)

        def ids_of(w: int) -> np.ndarray:
            text_index, start, end = windows[w]
            return tokenized[text_index].ids[start:end]

        def run(worker: int, batch: list[int]) -> None:
            probs = self._score_with_oom_retry(worker, layout, [ids_of(w) for w in batch])
            for w, p in zip(batch, probs):
                results[w] = p
            if progress is not None:
                progress.update(len(batch))

        try:
            if len(self._workers) == 1:
                for batch in batches:
                    run(0, batch)
            else:
                _run_on_workers(len(self._workers), batches, run)
        finally:
            if progress is not None:
                progress.close()
        return [r if r is not None else np.zeros((0, 4), np.float32) for r in results]

    def _score_with_oom_retry(self, worker: int, layout: PromptLayout, batch: list[np.ndarray]) -> list[np.ndarray]:
        """Score a batch; on a CUDA out-of-memory error, halve it and retry (nothing is lost)."""
        critic = self._workers[worker]
        try:
            with self._worker_locks[worker]:
                return critic.score_windows(layout, batch)
        except Exception as e:
            if not _is_out_of_memory(e):
                raise
            if len(batch) == 1:
                raise RuntimeError(
                    "out of memory scoring a single window; use a smaller window_tokens or a lower-precision dtype"
                ) from e
            _free_cuda_cache()
            half = len(batch) // 2
            self.batch_size = max(1, min(self.batch_size, half))
            logger.warning("cprs: out of memory with %d windows per batch, retrying with %d", len(batch), half)
            return self._score_with_oom_retry(worker, layout, batch[:half]) + self._score_with_oom_retry(
                worker, layout, batch[half:]
            )

    def __repr__(self) -> str:
        return (
            f"CPRSEngine(critic={self.critic.kind}:{self.critic.name_or_path!r}, device={self.critic.device!r}, "
            f"window_tokens={self.window_tokens}, batch_size={self.batch_size}, replicas={len(self._workers) - 1})"
        )


def _instruction(options: CompressionOptions) -> str:
    return (
        options.instruction
        if options.instruction is not None
        else instruction_for(options.granularity, options.language)
    )


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _gather(
    query: str,
    texts: list[str],
    tokenized: list[TokenizedText],
    windows: list[tuple[int, int, int]],
    probs: list[np.ndarray],
) -> list[TokenScores]:
    """Concatenate window probabilities back into one array per text (windows are consecutive per text)."""
    per_text: list[list[np.ndarray]] = [[] for _ in texts]
    for (text_index, _, _), p in zip(windows, probs):
        per_text[text_index].append(p)
    return [
        TokenScores(
            text=text,
            offsets=tok.offsets,
            probs=np.concatenate(parts) if parts else np.zeros((0, 4), np.float32),
            query=query,
        )
        for text, tok, parts in zip(texts, tokenized, per_text)
    ]


def _progress(total: int, show: bool | None) -> Any:
    if show is False or (show is None and total < PROGRESS_MIN_WINDOWS):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="cprs: scoring windows", unit="window")


def _run_on_workers(n_workers: int, batches: list[list[int]], run: Callable[[int, list[int]], None]) -> None:
    """One thread per critic replica, each pulling batches from a shared queue."""
    pending: queue.Queue[list[int]] = queue.Queue()
    for batch in batches:
        pending.put(batch)
    errors: list[BaseException] = []

    def loop(worker: int) -> None:
        while not errors:
            try:
                batch = pending.get_nowait()
            except queue.Empty:
                return
            try:
                run(worker, batch)
            except BaseException as e:  # re-raised in the caller's thread
                errors.append(e)

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in range(n_workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _is_out_of_memory(error: BaseException) -> bool:
    try:
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _free_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
