"""Keep transformers' progress bars ("Loading weights", "Writing model shards") off during our own loads and saves.

transformers draws its bars through one factory that consults a hook (:func:`transformers.utils.logging.set_tqdm_hook`,
the switch transformers' own server uses to reroute the loading bar). While a :func:`no_progress_bars` block runs,
our hook hands an empty bar to the threads inside such a block and passes every other thread on to the previous hook
(or to transformers' default), so another thread's load, the user's own hook and the process-wide
``enable_progress_bar()`` / ``disable_progress_bar()`` setting are left as they were. The hook is installed by the
first block to enter and the previous one is put back when the last block leaves. Download bars belong to
huggingface_hub and keep following its own setting (``HF_HUB_DISABLE_PROGRESS_BARS``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

TqdmHook = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]


class _QuietThreads:
    """Which threads are inside a :func:`no_progress_bars` block, and the hook ours replaced."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth: dict[int, int] = {}
        self.previous: TqdmHook | None = None


_quiet = _QuietThreads()


def _hook(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """An empty bar for threads inside a block; everyone else gets what they would have got without us."""
    if threading.get_ident() in _quiet.depth:
        from transformers.utils.logging import EmptyTqdm

        return EmptyTqdm(*args, **kwargs)
    if _quiet.previous is not None:
        return _quiet.previous(factory, args, kwargs)
    return factory(*args, **kwargs)


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """Silence transformers' progress bars for the calling thread while the block runs (nestable, thread-safe).

    Examples:
        >>> from transformers import BertConfig, BertModel
        >>> with no_progress_bars():  # doctest: +SKIP
        ...     BertModel(BertConfig()).save_pretrained("/tmp/bert")  # no "Writing model shards" bar
    """
    from transformers.utils import logging as hf_logging

    ident = threading.get_ident()
    with _quiet.lock:
        if not _quiet.depth:
            _quiet.previous = hf_logging.set_tqdm_hook(_hook)
        _quiet.depth[ident] = _quiet.depth.get(ident, 0) + 1
    try:
        yield
    finally:
        with _quiet.lock:
            _quiet.depth[ident] -= 1
            if not _quiet.depth[ident]:
                del _quiet.depth[ident]
            if not _quiet.depth:
                replaced = hf_logging.set_tqdm_hook(_quiet.previous)
                if replaced is not _hook:  # someone set their own hook meanwhile: leave theirs in place
                    hf_logging.set_tqdm_hook(replaced)
                _quiet.previous = None
