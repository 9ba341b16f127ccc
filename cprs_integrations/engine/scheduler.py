"""BatchScheduler: one queue of windows for every in-flight call, batched across calls, one worker per device.

Every window row carries its own prompt layout (its call's instruction and query), so windows of different
queries share a forward pass. How batches are formed, after text-embeddings-inference's and vLLM's schedulers:

* **Token budget**: a batch holds at most ``batch_size`` windows and at most ``max_batch_tokens`` padded tokens
  (rows x longest row, prefix included), so short windows make wide batches and long ones narrow batches.
* **Short wait**: a free worker that finds less than a full batch waits up to ``max_wait_ms`` (counted from the
  oldest queued window) for more to arrive, then runs what it has.
* **Fair across calls, little padding**: each batch is anchored on the next call in round-robin order (arrival
  order first), so a call of 10M tokens cannot starve 64 small ones: every call anchors a batch within as many
  batches as there are calls, and small calls usually ride along sooner. The other places of the batch go to the
  queued windows closest in length to the anchor's (ties: round-robin order), from the first calls in line, so
  full windows batch with full windows and short tails with short tails (text-embeddings-inference and vLLM sort
  by length for the same reason).
* **Bounded**: ``max_queue_windows`` caps the queued windows; a call that would pass it is refused at once with
  :class:`QueueFullError` (a call larger than the cap alone is admitted when the queue is empty). A caller's
  ``timeout`` withdraws its queued windows and raises :class:`TimeoutError`.
* **Isolated**: a CUDA out-of-memory error splits that batch in halves and retries them (counted in
  ``oom_splits``; no shared batch size changes); a batch that fails otherwise is retried call by call, so one
  call's error never fails another call's windows. A cancelled call's queued windows are withdrawn.

Worker threads (one per critic: the critic and each replica) start on the first submission and again in a child
process after a fork (servers that fork after import). At interpreter exit every scheduler is closed before Python
finalizes: a daemon thread still inside a torch call then would abort the process ("terminate called without an
active exception", exit code 134; pytorch/pytorch#38228), so a running batch finishes (each worker is waited for up
to :data:`CLOSE_WAIT_S`) and queued calls fail with :class:`CallCancelledError`.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cprs_integrations.models.base import PromptLayout, TokenCritic

logger = logging.getLogger(__name__)

#: Rows of at most ``POOL_CALLS_PER_ROW x batch_size`` calls (the first in line) compete for a batch's places.
POOL_CALLS_PER_ROW = 4
#: How often an idle worker wakes to check that its scheduler still exists (seconds).
IDLE_POLL_S = 1.0
#: Seconds :meth:`BatchScheduler.close` waits for each worker's running batch.
CLOSE_WAIT_S = 10.0
#: Default wait for a fuller batch, in milliseconds (a few ms: far below one forward pass of a 512-token window).
DEFAULT_MAX_WAIT_MS = 2.0


class QueueFullError(RuntimeError):
    """The scheduler's queue holds ``max_queue_windows`` windows: the call was refused (a server answers 429)."""


class CallCancelledError(RuntimeError):
    """The call was cancelled or timed out before its windows were scored."""


@dataclass(eq=False)  # identity semantics: calls are dict keys and deque members
class _Call:
    """One caller's windows: results land by index; ``done`` is set when all are in (or on error / cancel)."""

    id: int
    rows: list[tuple[PromptLayout, np.ndarray]]
    on_progress: Callable[[int], None] | None
    queue: deque[int] = field(default_factory=deque)
    results: list[np.ndarray | None] = field(default_factory=list)
    remaining: int = 0
    error: BaseException | None = None
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    enqueued_at: float = 0.0
    callbacks: list[Callable[[_Call], None]] = field(default_factory=list)


class CallHandle:
    """What :meth:`BatchScheduler.submit` returns: wait for the probabilities, or cancel."""

    def __init__(self, scheduler: BatchScheduler, call: _Call):
        self._scheduler, self._call = scheduler, call

    def result(self, timeout: float | None = None) -> list[np.ndarray]:
        """Per window, its ``(len, 4)`` probabilities, in submission order.

        Raises:
            TimeoutError: not done within ``timeout`` seconds (the call's queued windows are withdrawn).
            CallCancelledError: the call was cancelled.
            Exception: what scoring this call raised.
        """
        if not self._call.done.wait(timeout):
            self.cancel()
            if self._call.cancelled:  # not finished in between: the timeout is what ended it
                raise TimeoutError(
                    f"compression did not finish within timeout={timeout} s ({self._call.remaining} of "
                    f"{len(self._call.rows)} windows not scored); its queued windows were withdrawn"
                )
        if self._call.error is not None:
            raise self._call.error
        if self._call.cancelled:
            raise CallCancelledError("the call was cancelled before its windows were scored")
        return [r if r is not None else np.zeros((0, 4), np.float32) for r in self._call.results]

    def cancel(self) -> None:
        """Withdraw the call's queued windows (a batch already running finishes; its rows are then dropped)."""
        self._scheduler._cancel(self._call)

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (from a worker thread) when the call is done; at once if it already is."""
        self._scheduler._add_callback(self._call, lambda _call: callback())

    @property
    def done(self) -> bool:
        return self._call.done.is_set()


class BatchScheduler:
    """The shared queue of windows and the worker threads that score them.

    Args:
        workers: The critic and its replicas (one worker thread each).
        batch_size: At most this many windows per forward pass.
        max_batch_tokens: At most this many padded tokens (rows x longest row, prefix included) per forward pass;
            ``None``: ``batch_size`` alone limits.
        max_wait_ms: How long a free worker waits for a fuller batch (from the oldest queued window).
        max_queue_windows: Refuse a call that would make the queue longer than this (``None``: unbounded).

    Raises:
        ValueError: a limit that is not positive.
    """

    def __init__(
        self,
        workers: Sequence[TokenCritic],
        *,
        batch_size: int,
        max_batch_tokens: int | None = None,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_queue_windows: int | None = None,
    ):
        if not workers:
            raise ValueError("a scheduler needs at least one critic")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1 or None, got {max_batch_tokens}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_queue_windows is not None and max_queue_windows < 1:
            raise ValueError(f"max_queue_windows must be >= 1 or None, got {max_queue_windows}")
        self.workers = list(workers)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_windows = max_queue_windows
        self._ids = itertools.count()
        self._reset_after_fork()
        _SCHEDULERS.add(self)

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._active: deque[_Call] = deque()  # calls with queued windows, in round-robin order
        self._queued = 0
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._generation = 0  # bumped by close(): a worker of an older generation stops after its batch
        self._stats = dict.fromkeys(
            ("requests", "windows", "batches", "tokens", "padding_tokens", "oom_splits", "queue_wait_s"), 0
        )
        self._stats["queue_wait_s"] = 0.0

    # ------------------------------------------------------------------------------------------------ public

    def submit(
        self, rows: list[tuple[PromptLayout, np.ndarray]], on_progress: Callable[[int], None] | None = None
    ) -> CallHandle:
        """Queue one call's windows (``(layout, ids)`` rows); returns at once.

        Args:
            rows: The windows of the call, each with its prompt layout.
            on_progress: Called (from a worker thread) with the number of windows just scored.

        Raises:
            QueueFullError: the queue would exceed ``max_queue_windows``.
        """
        call = _Call(next(self._ids), rows, on_progress)
        call.results = [None] * len(rows)
        call.remaining = len(rows)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][1]), reverse=True)
        call.queue.extend(order)
        with self._lock:
            if _EXITING:
                raise CallCancelledError("the interpreter is exiting: no new windows are scored")
            self._stats["requests"] += 1
            if not rows:
                call.done.set()
                return CallHandle(self, call)
            limit = self.max_queue_windows
            if limit is not None and self._queued and self._queued + len(rows) > limit:
                raise QueueFullError(
                    f"the scheduler queue holds {self._queued} windows; this call adds {len(rows)}, above "
                    f"max_queue_windows={limit}: retry later or raise the limit"
                )
            call.enqueued_at = time.perf_counter()
            self._active.append(call)
            self._queued += len(rows)
            self._start_workers()
            self._work.notify_all()
        return CallHandle(self, call)

    def stats(self) -> dict[str, float]:
        """Cumulative counters since the scheduler was built: ``requests``, ``windows``, ``batches``, ``tokens``
        (real tokens scored, prefixes included), ``padding_tokens``, ``oom_splits``, ``queue_wait_s`` (summed over
        windows), and ``queued_windows`` now."""
        with self._lock:
            return {**self._stats, "queued_windows": self._queued}

    # -------------------------------------------------------------------------------------------- internals

    def _start_workers(self) -> None:
        if self._threads:
            return
        for index in range(len(self.workers)):
            # The thread holds the scheduler only weakly (and only while it works), so an engine nobody uses any
            # more is freed, critic included, and its threads end.
            thread = threading.Thread(
                target=_worker_loop,
                args=(weakref.ref(self), index, self._generation),
                name=f"cprs-worker-{index}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _cancel(self, call: _Call) -> None:
        self._end(call, cancelled=True)

    def _fail(self, call: _Call, error: BaseException) -> None:
        self._end(call, error=error)

    def _end(self, call: _Call, *, cancelled: bool = False, error: BaseException | None = None) -> None:
        with self._lock:
            if call.done.is_set():
                return
            call.cancelled, call.error = cancelled, error
            self._queued -= len(call.queue)
            call.queue.clear()
            if call in self._active:
                self._active.remove(call)
            callbacks = self._finish(call)
        _run_callbacks(call, callbacks)

    def _add_callback(self, call: _Call, callback: Callable[[_Call], None]) -> None:
        with self._lock:
            if not call.done.is_set():
                call.callbacks.append(callback)
                return
        callback(call)

    @staticmethod
    def _finish(call: _Call) -> list[Callable[[_Call], None]]:
        """Mark ``call`` done (lock held); returns its callbacks, to run once the lock is released."""
        call.done.set()
        callbacks, call.callbacks = call.callbacks, []
        return callbacks

    def _next_batch(self) -> list[tuple[_Call, int]]:
        """Wait (at most :data:`IDLE_POLL_S`) until rows are queued, wait briefly for a fuller batch, then take one
        (round-robin, lock held); ``[]`` when idle or closed."""
        if not self._active:
            self._work.wait(IDLE_POLL_S)
            if not self._active:
                return []
        deadline = min(c.enqueued_at for c in self._active) + self.max_wait_s
        while self._queued < self.batch_size and (left := deadline - time.perf_counter()) > 0:
            self._work.wait(left)
            if not self._active:
                return []
        batch = self._pick_rows()
        now = time.perf_counter()
        self._stats["queue_wait_s"] += sum(now - call.enqueued_at for call, _ in batch)
        return batch

    def _pick_rows(self) -> list[tuple[_Call, int]]:
        """One batch (lock held): the next call in round-robin order gives the anchor row; the other rows are the
        queued rows closest to the anchor's length (ties: round-robin order), from the first calls in line."""
        anchor_call = self._active[0]
        anchor = anchor_call.queue[0]
        target = _row_tokens(anchor_call, anchor)
        candidates = []
        for order, call in enumerate(itertools.islice(self._active, POOL_CALLS_PER_ROW * self.batch_size)):
            for position, index in enumerate(itertools.islice(call.queue, self.batch_size)):
                if call is anchor_call and position == 0:
                    continue
                length = _row_tokens(call, index)
                candidates.append((abs(length - target), order, position, length, call, index))
        candidates.sort(key=lambda c: c[:3])
        batch = [(anchor_call, anchor)]
        longest = target
        for _, _, _, length, call, index in candidates:
            if len(batch) == self.batch_size:
                break
            if self.max_batch_tokens is not None and max(longest, length) * (len(batch) + 1) > self.max_batch_tokens:
                continue
            batch.append((call, index))
            longest = max(longest, length)
        for call, index in batch:
            call.queue.remove(index)
        self._queued -= len(batch)
        self._active.rotate(-1)  # the anchor's call goes to the back of the line
        for call in {id(call): call for call, _ in batch}.values():
            if not call.queue:
                self._active.remove(call)
        return batch

    def close(self) -> None:
        """Stop the worker threads and fail the queued calls (``CallCancelledError``); a batch running finishes
        (waited for up to :data:`CLOSE_WAIT_S`; a worker still busy then stops after its batch). Submitting again
        starts new workers."""
        threads = self._stop_workers()
        _join(threads, time.monotonic() + CLOSE_WAIT_S)
        with self._lock:
            if not _EXITING:
                self._closing = False

    def _stop_workers(self) -> list[threading.Thread]:
        """Tell the workers to stop and fail the queued calls; returns the threads to join."""
        with self._lock:
            calls = list(self._active)
            threads, self._threads = self._threads, []
            self._closing = True
            self._generation += 1
            self._work.notify_all()
        for call in calls:
            self._fail(call, CallCancelledError("the engine was closed before these windows were scored"))
        return [t for t in threads if t is not threading.current_thread()]

    def _serve_once(self, worker: int, generation: int) -> bool:
        """Take and run one batch; ``False`` when the worker should stop (closed, or an older generation)."""
        with self._lock:
            if self._closing or generation != self._generation:
                return False
            batch = self._next_batch()
        if batch:
            try:
                self._run(worker, batch)
            except BaseException as error:  # never lose a worker: fail the batch's calls instead
                for call in dict.fromkeys(call for call, _ in batch):
                    self._fail(call, error)
        return True

    def _run(self, worker: int, batch: list[tuple[_Call, int]]) -> None:
        batch = sorted(batch, key=lambda item: len(item[0].rows[item[1]][1]), reverse=True)
        try:
            probs = self._score(worker, [item[0].rows[item[1]] for item in batch])
        except Exception as error:
            calls = list(dict.fromkeys(call for call, _ in batch))
            if len(calls) == 1:
                self._fail(calls[0], error)
                return
            for call in calls:  # isolate: one call's failure must not fail the others' windows
                self._run(worker, [item for item in batch if item[0] is call])
            return
        self._deliver(batch, probs)

    def _score(self, worker: int, rows: list[tuple[PromptLayout, np.ndarray]]) -> list[np.ndarray]:
        """One forward pass; on out-of-memory, the two halves (recursively). Counts what ran."""
        try:
            probs = self.workers[worker].score_windows([r[0] for r in rows], [r[1] for r in rows])
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            if len(rows) == 1:
                raise RuntimeError(
                    "out of memory scoring a single window; use a smaller window_tokens or a lower-precision dtype"
                ) from error
            free_cuda_cache()
            half = len(rows) // 2
            logger.warning(
                "cprs: out of memory with %d windows in a batch, retrying as %d + %d", len(rows), half, len(rows) - half
            )
            with self._lock:
                self._stats["oom_splits"] += 1
            return self._score(worker, rows[:half]) + self._score(worker, rows[half:])
        if len(probs) != len(rows) or any(len(p) != len(r[1]) for p, r in zip(probs, rows)):
            raise RuntimeError(
                f"the critic returned {len(probs)} score arrays for {len(rows)} windows (or arrays of other lengths "
                "than their windows)"
            )
        lengths = [len(r[1]) + r[0].overhead for r in rows]
        with self._lock:
            self._stats["batches"] += 1
            self._stats["windows"] += len(rows)
            self._stats["tokens"] += sum(lengths)
            self._stats["padding_tokens"] += max(lengths) * len(rows) - sum(lengths)
        return probs

    def _deliver(self, batch: list[tuple[_Call, int]], probs: list[np.ndarray]) -> None:
        progress: dict[int, tuple[_Call, int]] = {}
        finished: list[tuple[_Call, list[Callable[[_Call], None]]]] = []
        with self._lock:
            for (call, index), p in zip(batch, probs):
                if call.done.is_set():
                    continue  # cancelled or failed meanwhile
                call.results[index] = p
                call.remaining -= 1
                progress[call.id] = (call, progress.get(call.id, (call, 0))[1] + 1)
                if call.remaining == 0:
                    finished.append((call, self._finish(call)))
        for call, count in progress.values():
            if call.on_progress is not None:
                try:
                    call.on_progress(count)
                except Exception:  # a progress bar must not break scoring
                    logger.exception("cprs: progress callback failed")
        for call, callbacks in finished:
            _run_callbacks(call, callbacks)


def _row_tokens(call: _Call, index: int) -> int:
    layout, ids = call.rows[index]
    return len(ids) + layout.overhead


def _worker_loop(scheduler_ref: weakref.ReferenceType[BatchScheduler], worker: int, generation: int) -> None:
    """A worker thread: serve batches while its scheduler exists and is open."""
    while True:
        scheduler = scheduler_ref()
        if scheduler is None or not scheduler._serve_once(worker, generation):
            return
        del scheduler  # hold it only while serving


def _run_callbacks(call: _Call, callbacks: list[Callable[[_Call], None]]) -> None:
    for callback in callbacks:
        try:
            callback(call)
        except Exception:
            logger.exception("cprs: a done-callback failed")


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA / device out-of-memory error (``torch.OutOfMemoryError`` or a RuntimeError saying so)."""
    try:
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def free_cuda_cache() -> None:
    """Return cached CUDA memory after an out-of-memory error (no-op without CUDA)."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


_SCHEDULERS: weakref.WeakSet[BatchScheduler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Threads do not survive a fork and locks may be held: every scheduler starts afresh (workers lazily).
    for scheduler in list(_SCHEDULERS):
        scheduler._reset_after_fork()


def _join(threads: list[threading.Thread], deadline: float) -> list[threading.Thread]:
    """Join ``threads`` until ``deadline`` (``time.monotonic()``); returns those still alive."""
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return [t for t in threads if t.is_alive()]


#: Set at interpreter exit: schedulers stay closed and refuse new calls.
_EXITING = False


def _close_at_exit() -> None:
    # atexit callbacks run before finalization kills daemon threads: no worker may be inside torch by then. Every
    # scheduler is told first, then all are waited for against one deadline.
    global _EXITING
    _EXITING = True
    threads = [t for scheduler in list(_SCHEDULERS) for t in scheduler._stop_workers()]
    busy = _join(threads, time.monotonic() + CLOSE_WAIT_S)
    if busy:
        logger.warning(
            "cprs: %d critic worker(s) still scoring %.0f s after exit began; the process may abort "
            "(pytorch/pytorch#38228)",
            len(busy),
            CLOSE_WAIT_S,
        )


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_at_exit)
