"""Admission: answer 429 at once, before any tokenizing, when the work in the server would pass its bound.

The engine refuses a call (``QueueFullError``) only once the call is tokenized and windowed, when it knows its
windows. Under overload that is too late: every refused request has paid for tokenizing and segmenting, the
refusals take seconds, and the critic starves while the CPU plans requests it then drops. So the server keeps its
own count of the windows of the requests it is serving (queued, being scored, being selected), each estimated from
its characters before anything else runs, and refuses a request that would take the count past the engine's
``max_queue_windows`` plus one batch per device (what is being scored is no longer queued). Like the engine, it
admits a request larger than the bound when nothing else is in flight.

The estimate learns: windows per character start from 4 characters per critic token and half a window of text per
window, then follow what the engine reports (``timings["windows"]``) on requests of at least
:data:`LEARN_MIN_CHARS` characters. Everything here runs on the event loop: no locks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from cprs_integrations.engine.engine import CPRSEngine
from cprs_integrations.server.errors import ApiError

#: Requests shorter than this do not update the estimate (one window of rounding would dominate).
LEARN_MIN_CHARS = 2000
#: Weight of each new observation in the estimate.
LEARN_RATE = 0.1
#: Characters per critic token assumed before anything was observed.
CHARS_PER_TOKEN_GUESS = 4.0


class Admission:
    """The server's count of windows in flight, and the gate in front of the engine (module docstring).

    Args:
        engine: The engine (its queue bound, batch size and window size set the bound and the first estimate).
    """

    def __init__(self, engine: CPRSEngine):
        queue = engine.scheduler.max_queue_windows
        workers = len(engine.scheduler.workers)
        self.limit: int | None = None if queue is None else queue + engine.batch_size * workers
        self.windows_per_char = 1.0 / (CHARS_PER_TOKEN_GUESS * engine.window_tokens / 2)
        self.in_flight = 0

    def estimate(self, texts: list[str]) -> int:
        """Estimated windows of ``texts`` (at least one per non-empty text)."""
        return sum(math.ceil(len(t) * self.windows_per_char) for t in texts if t)

    @contextlib.contextmanager
    def admit(self, texts: list[str], retry_after_s: int) -> Iterator[None]:
        """Count the request in while it is served.

        Raises:
            ApiError: 429 ``queue_full`` (with ``Retry-After``) when it would pass the bound.
        """
        windows = self.estimate(texts)
        if self.limit is not None and self.in_flight and self.in_flight + windows > self.limit:
            raise ApiError(
                429,
                "queue_full",
                f"the server is at capacity (about {self.in_flight} windows in flight, this request about "
                f"{windows}, bound {self.limit}): retry later",
                headers={"Retry-After": str(retry_after_s)},
            )
        self.in_flight += windows
        try:
            yield
        finally:
            self.in_flight -= windows

    def learn(self, characters: int, windows: float) -> None:
        """Follow the engine's real windows per character."""
        if characters >= LEARN_MIN_CHARS and windows > 0:
            observed = windows / characters
            self.windows_per_char += LEARN_RATE * (observed - self.windows_per_char)
